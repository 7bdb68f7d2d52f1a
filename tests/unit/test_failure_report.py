"""The trainer's failure report reaches the operator under MPIJob: each rank writes it to the
attempt's folder, the launcher's shell (as the operator renders it) copies the first one written
into its own termination log, and the operator reads it from there as bad input, not retried."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import pytest

from kuberlhf_operator.builders.children import LAUNCHER_SCRIPT
from kuberlhf_operator.observe import FailureDetail, read_report
from kuberlhf_trainer.config import ConfigError
from kuberlhf_trainer.pipeline import report_input_error


@pytest.fixture
def pod_files(tmp_path, monkeypatch):
    """A worker's termination log and the attempt's report folder on the 'shared storage'."""
    log, reports = tmp_path / "termination-log", tmp_path / "storage" / ".reports" / "sft-2"
    log.write_text("")
    monkeypatch.setenv("KUBERLHF_TERMINATION_LOG", str(log))
    monkeypatch.setenv("KUBERLHF_REPORT_DIR", str(reports))
    return log, reports


def launch(ranks: str, log: Path, reports: Path) -> tuple[int, str]:
    """The launcher's command with `ranks` (a shell line) in place of DeepSpeed's launcher."""
    env = {**os.environ, "KUBERLHF_TERMINATION_LOG": str(log), "KUBERLHF_REPORT_DIR": str(reports)}
    done = subprocess.run(["/bin/sh", "-c", LAUNCHER_SCRIPT, "kuberlhf-launcher", "/bin/sh", "-c", ranks],
                          env=env, capture_output=True, text=True, timeout=30)
    return done.returncode, log.read_text()


def test_each_rank_writes_its_report_whole_to_the_attempts_folder(pod_files, monkeypatch):
    log, reports = pod_files
    monkeypatch.setenv("OMPI_COMM_WORLD_RANK", "3")
    assert report_input_error(ConfigError("sft.learning_rate: Input should be greater than 0")) == 2
    record = json.loads((reports / "rank-3.json").read_text())
    assert record == {"reason": "InvalidConfig", "message": "sft.learning_rate: Input should be greater than 0",
                      "retryable": False}
    assert json.loads(log.read_text()) == record  # the pod's own termination log, as before
    assert [p.name for p in reports.iterdir()] == ["rank-3.json"]  # no half-written file left


def test_without_a_report_folder_only_the_termination_log_is_written(pod_files, monkeypatch):
    log, reports = pod_files
    monkeypatch.delenv("KUBERLHF_REPORT_DIR")
    report_input_error(ConfigError("x: bad"))
    assert json.loads(log.read_text())["message"] == "x: bad" and not reports.exists()


def test_the_launcher_passes_on_the_first_report_and_keeps_mpiruns_exit_code(tmp_path):
    log, reports = tmp_path / "launcher-log", tmp_path / "reports"
    log.write_text("")
    reports.mkdir()
    first = json.dumps({"reason": "InvalidData", "message": "data/x.jsonl line 3: no prompt", "retryable": False})
    ranks = (f"echo '{first}' > {reports}/rank-3.json; touch -d '2026-01-01 00:00:01' {reports}/rank-3.json; "
             f"echo '{{\"reason\": \"InvalidData\", \"message\": \"later\"}}' > {reports}/rank-0.json; "
             f"touch -d '2026-01-01 00:00:02' {reports}/rank-0.json; exit 1")
    code, text = launch(ranks, log, reports)
    assert code == 1
    assert read_report(code, "Error", text.strip()) == FailureDetail(1, "InvalidData", "data/x.jsonl line 3: no prompt",
                                                                 False)


def test_a_launcher_without_reports_leaves_its_log_to_the_kubelet(tmp_path):
    log, reports = tmp_path / "launcher-log", tmp_path / "reports"
    log.write_text("")
    assert launch("echo NCCL error; exit 137", log, reports) == (137, "")  # FallbackToLogsOnError shows the tail
    assert launch("exit 0", log, reports) == (0, "")


def test_a_report_written_by_the_trainer_reaches_the_operator_through_the_launcher(pod_files, monkeypatch):
    log, reports = pod_files
    monkeypatch.setenv("OMPI_COMM_WORLD_RANK", "1")
    report_input_error(ConfigError("ppo.kl_coef: must be >= 0"))
    launcher_log = log.parent / "launcher-log"
    launcher_log.write_text("")
    code, text = launch("exit 2", launcher_log, reports)
    detail = read_report(code, "Error", text.strip())
    assert (detail.reason, detail.message, detail.retryable) == ("InvalidConfig", "ppo.kl_coef: must be >= 0", False)

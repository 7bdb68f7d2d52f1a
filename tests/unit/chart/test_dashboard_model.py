"""The Grafana dashboard (charts/kuberlhf/dashboards/kuberlhf.json) is a valid dashboard model built
on exactly the metric names the trainer and the operator export, and its PromQL parses.

There is no Grafana here: the model is checked against the structure Grafana's dashboard JSON
model documents (panels with ids, grid positions, datasource and targets; templating
variables), and each expression, with Grafana's variables substituted as Grafana would, by
Prometheus' own parser (`promtool check rules`). tests/integration/monitoring runs every
expression against a real Prometheus scraping a real training run.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import tempfile
from pathlib import Path

import pytest
import yaml
from chart_helm import CHART, pinned_tools

from kuberlhf_operator import metrics as operator_metrics
from kuberlhf_trainer.metrics import DEFINITIONS, PREFIX

DASHBOARD = CHART / "dashboards" / "kuberlhf.json"
PANEL_TYPES = {"row", "timeseries", "stat", "bargauge", "gauge", "table", "piechart", "text"}
# Where a counter or histogram's samples have a suffix, the family name is what is defined.
SUFFIXES = ("_bucket", "_sum", "_count", "_created")


@pytest.fixture(scope="module")
def dashboard() -> dict:
    return json.loads(DASHBOARD.read_text())


def panels(dashboard: dict) -> list[dict]:
    return [p for p in dashboard["panels"] if p["type"] != "row"]


def expressions(dashboard: dict) -> list[tuple[str, str]]:
    return [(p["title"], t["expr"]) for p in panels(dashboard) for t in p["targets"]]


def substitute(expr: str, rate_interval: str = "1m") -> str:
    """Grafana's variables as Grafana fills them in ("All" selected)."""
    return (expr.replace("$__rate_interval", rate_interval).replace("$namespace", ".*").replace("$job", ".*"))


def trainer_metric_names() -> set[str]:
    return {PREFIX + name for name in DEFINITIONS}


def operator_metric_names() -> set[str]:
    """Names as Prometheus stores them: a counter's samples end in `_total`, a histogram is named by
    its family (its `_bucket` samples are matched back to it)."""
    from prometheus_client import Counter, Gauge, Histogram

    names = set()
    for value in vars(operator_metrics).values():
        if isinstance(value, Counter):
            names.add(value._name + "_total")
        elif isinstance(value, (Gauge, Histogram)):
            names.add(value._name)
    return names


def used_metric_names(dashboard: dict) -> set[str]:
    found = set()
    for _, expr in expressions(dashboard):
        for name in re.findall(r"\b(kuberlhf_[a-z_]+)", expr):
            for suffix in SUFFIXES:
                if name.endswith(suffix) and name.removesuffix(suffix).endswith("_seconds"):
                    name = name.removesuffix(suffix)
            found.add(name)
    return found


def test_grafanas_own_schema_types_accept_it(dashboard):
    """The JSON as an object literal typed with `Dashboard` from Grafana's @grafana/schema, compiled
    by tsc: wrong types, unknown keys and values outside Grafana's enums fail, naming the place."""
    tools = pinned_tools()
    root = Path.home() / ".cache" / "kuberlhf" / \
        f"grafana-schema-{tools['GRAFANA_SCHEMA_VERSION']}-ts-{tools['TYPESCRIPT_VERSION']}"
    tsc = root / "node_modules" / ".bin" / "tsc"
    assert tsc.exists(), f"{tsc} is missing: run hack/install-test-tools.sh"
    with tempfile.TemporaryDirectory(dir=root) as work:  # node_modules resolves from the parent
        check = Path(work) / "dashboard.ts"
        check.write_text("import type { Dashboard } from '@grafana/schema';\n"
                         f"export const dashboard: Dashboard = {json.dumps(dashboard, indent=1)};\n")
        config = {"compilerOptions": {"strict": True, "noEmit": True, "module": "esnext",
                                      "moduleResolution": "bundler", "target": "es2020", "skipLibCheck": True},
                  "files": [check.name]}
        (Path(work) / "tsconfig.json").write_text(json.dumps(config))
        result = subprocess.run([str(tsc), "-p", work], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stdout + result.stderr


def test_it_is_a_grafana_dashboard_model(dashboard):
    assert dashboard["uid"] == "kuberlhf" and dashboard["title"]
    assert isinstance(dashboard["schemaVersion"], int) and dashboard["schemaVersion"] >= 36
    assert {"from", "to"} <= dashboard["time"].keys()
    ids = [p["id"] for p in dashboard["panels"]]
    assert len(ids) == len(set(ids)), "panel ids are unique"
    for panel in dashboard["panels"]:
        assert panel["type"] in PANEL_TYPES, panel["type"]
        grid = panel["gridPos"]
        assert grid["x"] >= 0 and grid["w"] > 0 and grid["x"] + grid["w"] <= 24 and grid["h"] > 0, panel["title"]


def test_panels_do_not_overlap(dashboard):
    cells: dict[tuple[int, int], str] = {}
    for panel in dashboard["panels"]:
        g = panel["gridPos"]
        for x in range(g["x"], g["x"] + g["w"]):
            for y in range(g["y"], g["y"] + g["h"]):
                assert (x, y) not in cells, f"{panel['title']} overlaps {cells[(x, y)]}"
                cells[(x, y)] = panel["title"]


def test_every_panel_queries_the_chosen_prometheus(dashboard):
    for panel in panels(dashboard):
        assert panel["datasource"] == {"type": "prometheus", "uid": "${datasource}"}, panel["title"]
        assert panel["targets"] and panel["description"], panel["title"]
        refs = [t["refId"] for t in panel["targets"]]
        assert len(refs) == len(set(refs)), panel["title"]
        for target in panel["targets"]:
            assert target["expr"].strip() and target["datasource"] == panel["datasource"]


def test_namespace_and_job_variables(dashboard):
    variables = {v["name"]: v for v in dashboard["templating"]["list"]}
    assert variables["datasource"]["type"] == "datasource" and variables["datasource"]["query"] == "prometheus"
    for name in ("namespace", "job"):
        variable = variables[name]
        assert variable["type"] == "query" and variable["includeAll"] and variable["multi"]
        assert re.fullmatch(r"label_values\((kuberlhf_\w+)(\{.*\})?, " + name + r"\)", variable["query"]["query"])
    trainer_exprs = [e for _, e in expressions(dashboard) if "kuberlhf_operator_" not in e]
    assert all('namespace=~"$namespace"' in e and 'job=~"$job"' in e for e in trainer_exprs)


def test_it_uses_exactly_the_exported_metric_names(dashboard):
    exported = trainer_metric_names() | operator_metric_names()
    used = used_metric_names(dashboard)
    assert used - exported == set(), "names no component exports"
    assert exported - used == set(), "exported metrics the dashboard does not show"


def test_every_expression_parses_as_promql(dashboard, tmp_path):
    rules = {"groups": [{"name": "dashboard", "rules": [
        {"record": f"dashboard:expr_{i}", "expr": substitute(expr)} for i, (_, expr) in enumerate(expressions(dashboard))
    ]}]}
    path = tmp_path / "rules.yaml"
    path.write_text(yaml.safe_dump(rules))
    promtool = shutil.which("promtool")
    assert promtool, "promtool is missing: run hack/install-test-tools.sh"
    result = subprocess.run([promtool, "check", "rules", str(path)], capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr
    assert f"SUCCESS: {len(rules['groups'][0]['rules'])} rules found" in result.stdout


def test_the_dashboard_shows_what_the_issue_asks_for(dashboard):
    titles = " | ".join(p["title"].lower() for p in panels(dashboard))
    for wanted in ("tokens per second by phase", "tflop/s per device by phase", "effective tflop/s",
                   "seconds per ppo iteration by phase", "reward", "kl", "entropy", "clip fraction",
                   "stage progress", "rlhfjobs by phase", "reconcile errors"):
        assert wanted in titles, wanted



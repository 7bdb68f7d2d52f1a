"""End to end: the operator's child jobs, run for real, train SFT -> reward -> PPO on the CPU.

The simulated training-operator hands each PyTorchJob to LocalPods, which runs the master
container's own command (torchrun ... kuberlhf_trainer step <stage> ...) as a local process
and reports its exit code. So the operator -> trainer handoff is proven with real training:
the ConfigMap the operator wrote is the config the trainer reads, and each stage finds the
previous stage's checkpoint on the shared claim.
"""

from __future__ import annotations

import json

import pytest

from tests.support.local_pods import LocalPods
from tests.support.rlhfjobs import manifest, wait_for
from tests.support.simulated_training_operator import Outcome, SimulatedTrainingOperator

pytestmark = [pytest.mark.k8s, pytest.mark.slow]

# About 40 s of training on 2 CPU cores: a few optimizer steps per stage, tiny models and data.
TINY_RUN = {
    "actor_model": {"name_or_path": "builtin:llama-tiny", "zero_stage": 0},
    "reward_model": {"name_or_path": "builtin:llama-tiny", "zero_stage": 0},
    "data": {"datasets": ["builtin:sort"], "synthetic": {"num_examples": 60, "min_digits": 3, "max_digits": 4}},
    "sft": {"per_device_train_batch_size": 8, "per_device_eval_batch_size": 8, "max_steps": 2,
            "max_seq_len": 32, "eval_iters": 1},
    "reward": {"per_device_train_batch_size": 8, "per_device_eval_batch_size": 8, "max_steps": 2,
               "max_seq_len": 32, "eval_iters": 1},
    "ppo": {"per_device_generation_batch_size": 4, "per_device_training_batch_size": 4, "max_prompt_seq_len": 48,
            "max_answer_seq_len": 6, "max_steps": 1, "num_warmup_steps": 0, "eval_prompts": 4},
    "device": "cpu",
}


def test_each_stage_runs_the_real_trainer_from_the_childs_own_command(operator, cluster, api, tmp_path):
    pods = LocalPods(api, tmp_path)
    script = lambda child: Outcome(work=lambda: pods.run(child))  # noqa: E731
    with SimulatedTrainingOperator(api, namespace=cluster.namespace, script=script):
        cluster.create(manifest("real", config=TINY_RUN, metricsPort=0,
                                env=[{"name": "TOKENIZERS_PARALLELISM", "value": "false"}]))
        wait_for("the job to finish", lambda: cluster.phase("real") in ("Succeeded", "Failed"), timeout=600,
                 interval=1)
    job = cluster.job("real")
    logs = {name: pods.log(name)[-3000:] for name in pods.exit_codes}
    assert job["status"]["phase"] == "Succeeded", f"{job['status']['message']}\n{logs}"
    assert pods.exit_codes == {"real-sft-1": 0, "real-reward-1": 0, "real-ppo-1": 0}

    output = pods.claim_dir("shared") / "real"  # <mountPath>/<job> on the claim
    for stage in ("sft", "reward", "ppo"):
        summary = json.loads((output / stage / "summary.json").read_text())
        assert summary["step"] == stage
        checkpoint = next(s for s in job["status"]["stages"] if s["name"] == stage)["checkpointPath"]
        assert checkpoint == f"/mnt/kuberlhf/real/{stage}"
    assert (output / "ppo" / "model.safetensors").exists()

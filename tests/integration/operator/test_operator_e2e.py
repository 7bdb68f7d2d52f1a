"""End to end: the operator's child jobs, run for real, train SFT -> reward -> PPO on the CPU.

In the test cluster the real training-operator makes each PyTorchJob's master pod, with the
environment it injects (PET_*, MASTER_*), and kube-scheduler places it on a KWOK node;
LocalProcessKubelet then runs that pod's own command (torchrun ... kuberlhf_trainer step <stage>
...) as a local process and ends the pod with its exit code and termination message, from which
the training-operator marks the child Succeeded. So the operator -> trainer handoff is proven with
real training: the ConfigMap the operator wrote is the config the trainer reads, and each stage
finds the previous stage's checkpoint on the shared claim.
"""

from __future__ import annotations

import json

import pytest

from tests.support.local_pods import LocalProcessKubelet
from tests.support.rlhfjobs import manifest, wait_for

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


def test_each_stage_runs_the_real_trainer_from_the_childs_own_pod(operator, cluster, api, tmp_path):
    kubelet = LocalProcessKubelet(api, tmp_path)
    cluster.create(manifest("real", config=TINY_RUN, metricsPort=0,
                            env=[{"name": "TOKENIZERS_PARALLELISM", "value": "false"}]))
    codes = {}
    for stage in ("sft", "reward", "ppo"):  # each master appears once the stage before succeeded
        codes[stage] = kubelet.run_master(cluster.namespace, f"real-{stage}-1", start_timeout=120)
        if codes[stage]:
            break
    wait_for("the job to finish", lambda: cluster.phase("real") in ("Succeeded", "Failed"), timeout=60)
    job = cluster.job("real")
    logs = {name: kubelet.log(name)[-3000:] for name in kubelet.pods.exit_codes}
    assert job["status"]["phase"] == "Succeeded", f"{job['status']['message']}\n{logs}"
    assert codes == {"sft": 0, "reward": 0, "ppo": 0}

    output = kubelet.pods.claim_dir("shared") / "real"  # <mountPath>/<job> on the claim
    for stage in ("sft", "reward", "ppo"):
        summary = json.loads((output / stage / "summary.json").read_text())
        assert summary["step"] == stage
        checkpoint = next(s for s in job["status"]["stages"] if s["name"] == stage)["checkpointPath"]
        assert checkpoint == f"/mnt/kuberlhf/real/{stage}"
    assert (output / "ppo" / "model.safetensors").exists()
    # What ran was the pods the training-operator made: torchrun got the rank it injected.
    master = cluster.pods("real-ppo-1")[0]
    assert {e.name: e.value for e in master.spec.containers[0].env}["PET_NODE_RANK"] == "0"
    assert master.status.container_statuses[0].state.terminated.exit_code == 0

"""Step 3 in two processes, with probes: run it under torchrun, one JSON file per rank.

    python -m torch.distributed.run --nproc_per_node 2 tests/support/ppo_two_processes.py run.yaml probes/

Records, per rank, what must agree between ranks or be global: the KL the adaptive controller
is fed and the coefficient after each update; the sums of each iteration's whitened advantages and of its raw reward-model
scores; the EMA's bytes on this rank against the whole (unpartitioned) EMA's; and, after the
step, whether the EMA's gathered state is what was saved as ppo/actor_ema and loads back.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import torch
import torch.distributed as dist
from safetensors.torch import load_file

from kuberlhf_trainer.config import load_config
from kuberlhf_trainer.engine import init_runtime
from kuberlhf_trainer.rlhf.ema import ActorEMA
from kuberlhf_trainer.rlhf.trainer import PPOTrainer
from kuberlhf_trainer.steps import run_step


def main(config_file: str, out_dir: str) -> None:
    config = load_config(config_file)
    runtime = init_runtime(config.device)
    probes: dict = {"kl_observed": [], "kl_coef": [], "advantages": [], "scores": []}
    emas: list[ActorEMA] = []
    _probe(probes, emas)
    summary = run_step("ppo", config, runtime)

    ema = emas[0]
    probes["ema_bytes"] = sum(t.numel() * t.element_size() for t in ema.shadow)
    probes["ema_bytes_whole"] = sum(p.ds_numel * 4 for p in ema.params)
    whole = ema.state()
    if runtime.is_main:
        saved = load_file(Path(config.output_dir) / "ppo" / "actor_ema" / "model.safetensors")
        names = [name for name, p in ema.engine.module.named_parameters() if p.requires_grad]
        probes["ema_saved_as_gathered"] = all(torch.equal(saved[n], t) for n, t in zip(names, whole))
    shared = [whole]
    dist.broadcast_object_list(shared, src=0)
    before = [t.clone() for t in ema.shadow]
    for t in ema.shadow:
        t.zero_()
    ema.load(shared[0])
    probes["ema_loads_back"] = all(torch.equal(a, b) for a, b in zip(before, ema.shadow))
    probes["history"] = [{k: r[k] for k in ("reward_mean", "kl_coef", "sequences")} for r in summary["history"]]
    Path(out_dir, f"rank{runtime.rank}.json").write_text(json.dumps(probes))


def _probe(probes: dict, emas: list) -> None:
    end_iteration, whiten, ema_init = PPOTrainer.end_iteration, PPOTrainer.whiten_advantages, ActorEMA.__init__

    def end_iteration_probe(self, observed_kl, num_sequences):
        end_iteration(self, observed_kl, num_sequences)
        probes["kl_observed"].append(observed_kl)
        probes["kl_coef"].append(self.kl.coef)

    def whiten_probe(self, exp):
        exp = whiten(self, exp)
        mask = exp.answer_mask
        probes["advantages"].append([(exp.advantages * mask).sum().item(), (exp.advantages**2 * mask).sum().item(),
                                     mask.sum().item()])
        probes["scores"].append([exp.raw_scores.sum().item(), len(exp)])
        return exp

    def ema_init_probe(self, *args, **kwargs):
        ema_init(self, *args, **kwargs)
        emas.append(self)

    PPOTrainer.end_iteration, PPOTrainer.whiten_advantages = end_iteration_probe, whiten_probe
    ActorEMA.__init__ = ema_init_probe


if __name__ == "__main__":
    main(*sys.argv[1:])

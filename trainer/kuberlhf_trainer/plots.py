"""Pictures of a finished step, written next to its summary (people would rather look than read).

  sft/loss.png, reward/loss.png     the training loss per optimizer step
  ppo/training.png                  reward, KL, entropy and clip fraction per iteration
  ppo/time_breakdown.png            where step 3's time went, by phase (the blog's Figure 5)
  ppo/throughput.png                generation vs training tokens/s

Drawn from the summary alone, so they can be redrawn from any summary.json.
"""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # files only, never a window
import matplotlib.pyplot as plt  # noqa: E402


def draw(step: str, summary: dict, directory: Path) -> list[Path]:
    """The pictures of `step` into `directory`; returns their paths."""
    if step in ("sft", "reward"):
        return [_loss(step, summary.get("loss_curve") or [], directory / "loss.png")]
    return [
        _ppo_history(summary.get("history") or [], directory / "training.png"),
        _time_breakdown(summary.get("time_breakdown_seconds") or {}, directory / "time_breakdown.png"),
        _throughput(summary.get("throughput") or {}, directory / "throughput.png"),
    ]


def _save(figure, path: Path) -> Path:
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    plt.close(figure)
    return path


def _loss(step: str, losses: list[float], path: Path) -> Path:
    figure, axis = plt.subplots(figsize=(6, 3.5))
    axis.plot(range(1, len(losses) + 1), losses, color="tab:blue")
    axis.set(title=f"{step}: training loss", xlabel="optimizer step", ylabel="loss")
    axis.grid(alpha=0.3)
    return _save(figure, path)


def _ppo_history(history: list[dict], path: Path) -> Path:
    panels = [("reward_mean", "reward (mean score)"), ("kl", "KL to reference (nats)"),
              ("entropy", "policy entropy"), ("clip_fraction", "clip fraction")]
    figure, axes = plt.subplots(2, 2, figsize=(9, 5.5))
    steps = range(1, len(history) + 1)
    for axis, (key, title) in zip(axes.flat, panels):
        values = [record[key] if record[key] is not None else float("nan") for record in history]  # gaps: warm-up
        axis.plot(steps, values)
        axis.set(title=title, xlabel="PPO iteration")
        axis.grid(alpha=0.3)
    figure.suptitle("ppo: training")
    return _save(figure, path)


def _time_breakdown(seconds: dict, path: Path) -> Path:
    figure, axis = plt.subplots(figsize=(6, 3.5))
    phases = list(seconds)
    axis.barh(phases, [seconds[p] for p in phases], color="tab:orange")
    total = sum(seconds.values()) or 1.0
    for index, phase in enumerate(phases):
        axis.text(seconds[phase], index, f" {100 * seconds[phase] / total:.0f}%", va="center")
    axis.invert_yaxis()
    axis.set(title="ppo: time per phase", xlabel="seconds")
    return _save(figure, path)


def _throughput(throughput: dict, path: Path) -> Path:
    figure, axis = plt.subplots(figsize=(5, 3.5))
    labels = ["generation", "training"]
    values = [throughput.get("generation_tokens_per_second", 0.0), throughput.get("training_tokens_per_second", 0.0)]
    axis.bar(labels, values, color=["tab:green", "tab:purple"])
    axis.set(title="ppo: tokens per second", ylabel="tokens/s (all processes)")
    return _save(figure, path)

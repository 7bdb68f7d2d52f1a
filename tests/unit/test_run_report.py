"""The few lines `kuberlhf train` ends with."""

from __future__ import annotations

from kuberlhf_trainer.pipeline import report


def test_the_report_says_how_each_step_moved_and_how_fast_step_3_ran():
    steps = {
        "sft": {"eval_perplexity_before": 12.5, "eval_perplexity_after": 3.25, "seconds": 30},
        "reward": {"eval_accuracy": 0.98, "seconds": 90},
        "ppo": {"reward_before": -1.5, "reward_after": 2.0, "task_score_sft": 0.5, "task_score_ppo": 0.75,
                "kl": 1.4, "seconds": 120,
                "throughput": {"generation_tokens_per_second": 100.0, "training_tokens_per_second": 50.0,
                               "seconds_per_iteration": 9.0},
                "throughput_after_first_iteration": {"generation_tokens_per_second": 250.4,
                                                     "training_tokens_per_second": 80.0, "seconds_per_iteration": 4.5}},
    }
    lines = report(steps).splitlines()
    assert "eval perplexity 12.5 -> 3.25 (30 s)" in lines[2]
    assert "eval accuracy 0.98 (90 s)" in lines[3]
    assert "reward -1.5 -> 2; task score 0.5 -> 0.75; KL 1.4 (120 s)" in lines[4]
    # the steady state, without the first iteration's compiling and warm-up
    assert lines[5].strip() == "generation 250 tokens/s, training 80 tokens/s, 4.50 s per iteration"


def test_a_run_of_some_steps_reports_those():
    assert report({"reward": {"eval_accuracy": 0.9, "seconds": 1}}).splitlines()[1:] == [
        "Summary:", "  reward: eval accuracy 0.9 (1 s)"]

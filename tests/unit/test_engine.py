"""DeepSpeed set-up that needs no process group: the optimizer-step arithmetic."""

from __future__ import annotations

import pytest

from kuberlhf_trainer.engine import optimizer_steps


@pytest.mark.parametrize("batches,accumulation,epochs,max_steps,expected", [
    (9, 3, 1, None, 3), (10, 3, 1, None, 3), (10, 3, 2, None, 6), (10, 3, 3, None, 10), (10, 3, 3, 4, 4), (2, 3, 1, None, 0),
])
def test_optimizer_steps_count_accumulations_across_epochs(batches, accumulation, epochs, max_steps, expected):
    """DeepSpeed's micro-batch count runs on over epoch ends: only whole accumulations step."""
    assert optimizer_steps(batches, accumulation, epochs, max_steps) == expected

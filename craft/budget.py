"""Query budgets by shots, as in the official CraFT scripts."""

from __future__ import annotations

_BY_SHOTS = {1: 2000, 2: 4000, 4: 4000, 8: 8000, 16: 8000}
_IMAGENET_BY_SHOTS = {1: 2000, 2: 4000, 4: 4000, 8: 4000, 16: 4000}


def default_budget(shots: int, dataset: str = "") -> int:
    """Budget in queries: 8,000 for 8/16 shots, 4,000 for 2/4, 2,000 for 1 (ImageNet: 4,000 max)."""
    table = _IMAGENET_BY_SHOTS if dataset == "imagenet" else _BY_SHOTS
    if shots in table:
        return table[shots]
    if shots <= 0:
        raise ValueError(f"shots must be positive, got {shots}")
    # Between the paper's values: the budget of the largest listed shots below.
    return table[max(k for k in table if k <= shots)]

"""Query budgets: the defaults by shots, as in the official CraFT scripts, and what a budget buys
(a run's own budget is :func:`craft.methods.base.run_budget`)."""

from __future__ import annotations

from typing import Any

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


def whole_steps(budget: int, config: Any) -> int:
    """The queries ``budget`` buys in whole CMA-ES generations (``popsize`` each: BBT and CraFT stop
    before a generation that does not fit); a config without ``popsize`` spends the budget as is."""
    popsize = getattr(config, "popsize", None)
    return budget - budget % popsize if popsize else budget


def one_step(config: Any) -> int | None:
    """Queries one step of a method's search costs, the least budget that buys anything: a CMA-ES
    generation (``popsize``), a CBBT gradient estimate (``1 + q``, ``1 + 2q`` two-sided) or a
    BlackVIP SPSA step (``2 sp_avg``); None for a config without budgeted steps (zero-shot CLIP,
    white-box CoOp, LFA)."""
    if hasattr(config, "popsize"):
        return int(config.popsize)
    if hasattr(config, "sp_avg"):
        return 2 * int(config.sp_avg)
    if hasattr(config, "q") and hasattr(config, "two_sided"):
        from craft.zeroth_order import queries_per_step

        return queries_per_step(config.q, config.two_sided)
    return None

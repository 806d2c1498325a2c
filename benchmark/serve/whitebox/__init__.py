"""White-box references, trained beside the model (they need its gradients): CoOp."""

from __future__ import annotations

from dataclasses import asdict
from typing import Any

from benchmark.model.engine import ClipEngine, TaskData
from benchmark.serve.whitebox.coop import train_coop
from craft.methods import get_method, make_config
from craft.methods.base import SERVER

TRAINERS = {"coop": train_coop}


def run_whitebox(
    engine: ClipEngine, prepared: TaskData, method: str, hparams: dict[str, Any], seed: int,
    *, shots: int, dataset: str, eval_splits: tuple[str, ...],
) -> dict[str, Any]:
    """Train white-box ``method`` on a prepared task: ``{"result": RunResult fields, "peak_mem_mb": ...}``."""
    if get_method(method).runs_on != SERVER or method not in TRAINERS:
        raise ValueError(f"{method!r} is not a white-box method; white-box methods: {', '.join(sorted(TRAINERS))}")
    config = make_config(method, hparams)
    result, peak_mb = TRAINERS[method](
        engine, prepared, prepared.labels, config, seed, shots=shots, dataset=dataset,
        eval_splits=eval_splits, class_subsets=prepared.class_subsets,
    )
    return {"result": asdict(result), "peak_mem_mb": peak_mb}

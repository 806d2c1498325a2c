"""Colocated runs: a black-box run executed in the model server's process (sweep key ``colocate``).

A run's own work (fitness of every candidate, refinement module, evaluation) scales with its
logits: 2.6 GB a generation at ImageNet's 16-shot shapes. Sent to a run's process, they cross
the object store and are worked on by one CPU core (about 27 s a generation there; see
docs/throughput.md). Colocated, the run executes beside the engine and its logits never leave
the server's device: on one H100 a Caltech101-shaped generation took 0.068 s this way against
0.156 s with the logits copied to the host (``craft perf --user-device both``).

The method still sees the model only through a :class:`craft.blackbox.MeteredBlackBox`:
logits in, queries counted and capped, as in a run of its own.
"""

from __future__ import annotations

from dataclasses import asdict
from typing import Any

from threadpoolctl import threadpool_limits

from benchmark.engine import ClipEngine, EngineBackend
from benchmark.task import PreparedTask
from benchmark.whitebox.memory import peak_memory
from craft.blackbox import MeteredBlackBox
from craft.methods import Task, get_method, make_config


def run_colocated(
    engine: ClipEngine, prepared: PreparedTask, method: str, hparams: dict[str, Any], seed: int,
    *, budget: int, shots: int, dataset: str, eval_splits: tuple[str, ...],
) -> dict[str, Any]:
    """Run black-box ``method`` on the engine's device: ``{"result": RunResult fields, "peak_mem_mb": ...}``."""
    runner = get_method(method)
    if not getattr(runner, "colocatable", False):
        raise ValueError(f"{method!r} does not run colocated: only methods whose work is on every candidate's "
                         "logits do (colocatable = True: bbt, craft)")
    config = make_config(method, hparams)
    data = prepared.data
    box = MeteredBlackBox(EngineBackend(engine, data, output_device=engine.device), budget)
    task = Task(dataset, data.classnames, data.template, prepared.labels, shots, eval_splits, prepared.class_subsets)
    # As a run task: CMA-ES's eigendecompositions on one BLAS thread.
    with threadpool_limits(1), peak_memory(engine.device) as mem:
        result = runner.run(box, task, config, seed)
    # The GPU's peak; on a CPU none (the cell reports its run's process, as for runs in their own task).
    peak = mem.mb if engine.device.type == "cuda" else None
    return {"result": asdict(result), "peak_mem_mb": peak}

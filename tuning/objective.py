"""One trial: the study's cells run by the benchmark's cell runner, scored on validation only.

Each cell is an ordinary :class:`~benchmark.sweep.cell.Cell` run by
:func:`~benchmark.sweep.run_cell.run_cell` with ``eval_test=False`` (no test image is loaded or
encoded) against a shared model server actor, the least-loaded of its group while the cell runs
(:mod:`benchmark.serve.leases`). A trial's cells (a pooled study's targets, or
several search seeds) run one after another in the trial's own process and thread: the methods
seed process-wide random generators (torch, and numpy inside pycma), so cells sharing a process
at once would not reproduce their benchmark cells.

At each query milestone a trial reports ``{"top1_val", "queries", "fraction"}``: the mean
validation accuracy of its cells so far (finished cells at their end, the running one now), the
queries of all its cells so far, and their fraction of the trial's total. The report of a trial
that ASHA stops raises inside the method's evaluation callback, which ends the run there.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from tuning.studies import Study

if TYPE_CHECKING:
    from benchmark.serve.pool import ServerPool

Report = Callable[[dict[str, float]], None]


def run_trial(study: Study, params: dict[str, Any], servers: ServerPool, report: Report, leases: Any = None) -> None:
    """Run the cells of ``params`` in turn and ``report`` at each of their milestones; ``leases``: the
    search's :class:`~benchmark.serve.leases.ServerLeases` (None: the first server of each group)."""
    from benchmark.serve.leases import leased_server
    from benchmark.sweep.run_cell import run_cell

    cells = study.search_cells(params)
    budget, marks = study.milestones.budget, study.milestones.queries
    total = budget * len(cells)
    finals: list[float] = []

    def send(values: list[float], queries: int) -> None:
        fraction = queries / total if total else len(values) / len(cells)  # no budget: cells done
        report({"top1_val": sum(values) / len(values), "queries": queries, "fraction": fraction})

    for j, cell in enumerate(cells):
        pending = list(marks) if budget else []

        def on_eval(row: dict[str, float], j: int = j, pending: list[int] = pending) -> None:
            reached = [m for m in pending if row.get("top1_val") is not None and row["queries"] >= m]
            if reached:
                for m in reached:
                    pending.remove(m)
                send([*finals, float(row["top1_val"])], j * budget + max(reached))

        with leased_server(leases, servers, cell.backbone, cell.weights, cell.method) as server:
            rows = run_cell(cell, server, eval_test=False, on_eval=on_eval if budget else None)
        finals.append(float(rows[0]["top1_val"]))
        if pending or not budget:  # the method ended before its last milestones, or has none
            send(finals, j * budget + marks[-1])


def trainable(config: dict[str, Any], study: Study, servers: ServerPool, leases: Any = None) -> None:
    """Ray Tune function trainable: ``config`` is the trial's sampled hyperparameters."""
    from ray import tune

    run_trial(study, dict(config), servers, tune.report, leases)

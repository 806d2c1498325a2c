"""From a sweep config to cells: the product of its lists, each cell's estimated queries and status.

The product runs backbone, dataset, shots, seed, method (a server's concurrent runs then tend to
share a dataset, whose queries it can batch). Zero-shot CLIP learns nothing, so it is planned
once per (backbone, dataset, seed), at the sweep's largest shots (its few-shot validation set).
"""

from __future__ import annotations

import os
from collections import Counter
from dataclasses import dataclass

from benchmark.errors import UserError
from benchmark.results.cli import text_columns
from benchmark.results.store import parse_cell_file, scan_cells
from benchmark.sweep.cell import Cell
from benchmark.sweep.config import SweepConfig, official_precision
from craft.budget import whole_steps
from craft.methods import METHODS



def expand(cfg: SweepConfig) -> list[Cell]:
    """Every cell of ``cfg``, in run order, each once. A ``precision`` other than the protocol's default
    enters each cell's id (:class:`~benchmark.sweep.cell.Cell`); other server options do not."""
    grid = cfg.grid
    precision = None if cfg.server.precision == official_precision(cfg.protocol) else cfg.server.precision
    cells: list[Cell] = []
    for backbone, weights in grid.backbones:
        for ds in grid.datasets:
            extra = cfg.eval_datasets.get(ds, ())
            for shots in grid.shots:
                for seed in grid.seeds:
                    for method in grid.methods:
                        if not METHODS[method].learns and shots != max(grid.shots):
                            continue
                        hparams = grid.cell_hparams(method, ds)
                        cells.append(Cell(method, ds, shots, seed, backbone, weights, hparams, extra, cfg.root, cfg.protocol,
                                          precision))
    return list({c.cell_id: c for c in cells}.values())


def estimated_queries(cell: Cell) -> int:
    """Budgeted queries the cell will use: its budget, in whole CMA-ES generations where it has them."""
    return whole_steps(cell.budget(), cell.config)


@dataclass
class Plan:
    """The cells of a sweep and what is already done under its ``out``."""

    cells: list[Cell]
    status: dict[str, str]  # cell_id -> done | failed | damaged | todo (damaged: its file does not verify)
    queries: dict[str, int]  # cell_id -> estimated queries

    def todo(self, rerun_failed: bool = False) -> list[Cell]:
        wanted = {"todo", "damaged", "failed"} if rerun_failed else {"todo", "damaged"}
        return [c for c in self.cells if self.status[c.cell_id] in wanted]

    def count(self, status: str) -> int:
        return sum(1 for s in self.status.values() if s == status)


def make_plan(cells: list[Cell], out: str) -> Plan:
    """Status of each cell under ``out`` (nothing there yet: all to do; a damaged file: to run again)."""
    found, damaged = scan_cells(out)
    bad = {kind[0] for kind in (parse_cell_file(p.rsplit("/", 1)[-1]) for p in damaged) if kind}
    status = {c.cell_id: {"ok": "done", "failed": "failed"}.get(found.get(c.cell_id, ""),
                                                                  "damaged" if c.cell_id in bad else "todo") for c in cells}
    return Plan(cells, status, {c.cell_id: estimated_queries(c) for c in cells})


def check_inputs(cfg: SweepConfig) -> list[str]:
    """What can be read before Ray starts: the data root, every dataset's files, the backbones'
    checkpoint files (their names were checked with the config, :mod:`benchmark.sweep.grid`).

    Returns notes to show once: a dataset with a class that has fewer training images than a
    sweep's shots (its cells at those shots train on every image of such classes).
    """
    from benchmark.datasets.loaders import load_dataset
    from benchmark.sweep.grid import check_backbone_files

    if cfg.root is not None and not os.path.isdir(cfg.root):
        raise UserError(f"{cfg.path}: root {cfg.root} does not exist or is not a folder (it must hold the dataset folders)")
    notes = []
    for ds in cfg.datasets:
        for key in (ds, *cfg.eval_datasets.get(ds, ())):
            try:
                splits = load_dataset(key, cfg.root)
            except UserError as exc:
                raise UserError(f"{cfg.path}: {exc}") from None
            if key == ds and splits.train:
                per_class = Counter(item.label for item in splits.train)
                fewest = min(per_class.values())
                over = [k for k in cfg.shots if k > fewest]
                if over:
                    short = sum(1 for n in per_class.values() if n < max(over))
                    notes.append(f"{ds}: {short} of {len(per_class)} classes have fewer training images than "
                                 f"{max(over)} (the fewest: {fewest}); its {', '.join(map(str, over))}-shot cells use "
                                 "every image of such classes")
    check_backbone_files(cfg.backbones, cfg.path)
    return notes


def left_to_run(plan: Plan, limit: int = 20) -> list[str]:
    """The cells of ``plan`` not done (to run, damaged or failed), each named, at most ``limit`` of them."""
    left = [c for c in plan.cells if plan.status[c.cell_id] != "done"]
    lines = [f"{plan.status[c.cell_id]}: {c.label()} ({c.cell_id})" for c in left[:limit]]
    return lines + ([f"... and {len(left) - limit} more"] if len(left) > limit else [])


def format_plan(plan: Plan, cfg: SweepConfig, rerun_failed: bool = False, gpu: str | None = None) -> str:
    """The dry-run report: totals, the text sequences to run with an estimate of their GPU-hours on
    ``gpu`` (default h100; :mod:`benchmark.sweep.estimate`), then one line per (backbone, method, dataset)."""
    from benchmark.sweep.estimate import cell_images, cell_sequences, check_gpu, gpu_hours

    gpu = gpu or "h100"
    rate = check_gpu(gpu)
    todo_ids = {c.cell_id for c in plan.todo(rerun_failed)}
    q_total = sum(plan.queries.values())
    q_todo = sum(plan.queries[i] for i in todo_ids)
    seqs = {c.cell_id: cell_sequences(plan.queries[c.cell_id], c.dataset) for c in plan.cells}
    s_todo = sum(seqs[i] for i in todo_ids)
    imgs = {c.cell_id: cell_images(c, plan.queries[c.cell_id]) for c in plan.cells}
    i_todo = sum(imgs[i] for i in todo_ids)
    lines = [
        f"sweep {cfg.path} -> {cfg.out}" + (f" (includes: {', '.join(cfg.includes)})" if cfg.includes else ""),
        f"{len(plan.cells)} cells: {plan.count('done')} done, {plan.count('failed')} failed, {len(todo_ids)} to run"
        + (f" ({plan.count('damaged')} with a damaged result file, moved aside when run)" if plan.count("damaged") else "")
        + (" (failed ones included: --rerun-failed)" if rerun_failed and plan.count("failed") else "")
        + f"; estimated queries to run: {q_todo:,} of {q_total:,}",
        f"text sequences to run: {s_todo:,}; estimated {_gpu_time(gpu_hours(s_todo, gpu))} on one {gpu.upper()} "
        f"(an estimate: {rate.sequences_per_s:,.0f} sequences/s measured by craft perf, {rate.source}; "
        "budgeted queries only, evaluations, image encoding and compiling not counted)",
        f"images to encode: {i_todo:,} (fresh augmented views of the training images, image-side queries; "
        "not in the GPU-time estimate, no image-tower rate measured on a GPU yet)",
    ]
    groups: dict[tuple[str, str, str], Counter] = {}
    for c in plan.cells:
        g = groups.setdefault((f"{c.backbone}:{c.weights}", c.method, c.dataset), Counter())
        g["cells"] += 1
        g[plan.status[c.cell_id]] += 1
        if c.cell_id in todo_ids:
            g["run"] += 1
            g["queries"] += plan.queries[c.cell_id]
            g["sequences"] += seqs[c.cell_id]
            g["images"] += imgs[c.cell_id]
    header = ("backbone", "method", "dataset", "cells", "done", "failed", "to run", "queries to run", "sequences to run",
              "images to encode")
    rows = [(b, m, d, str(g["cells"]), str(g["done"]), str(g["failed"]), str(g["run"]), f"{g['queries']:,}",
             f"{g['sequences']:,}", f"{g['images']:,}") for (b, m, d), g in groups.items()]
    return "\n".join(lines + text_columns(header, rows, left=3))


def _gpu_time(hours: float) -> str:
    """``0.49 GPU-hours``, or GPU-seconds for a sweep too small to show in hours."""
    return f"{hours:.2f} GPU-hours" if hours >= 0.01 else f"{hours * 3600:.1f} GPU-seconds"

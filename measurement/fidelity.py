"""The measured effect of each fidelity switch on the built-in suite (docs/fidelity.md's table).

Run from the repository root:

    python -m measurement.fidelity [--out results/fidelity] [--seeds 1 2 3] [--datasets ...] [--jobs 2]

Each row flips one switch from the harness's defaults (``protocol: harness``) and runs the
method in-process on the four built-in datasets (craft-tiny, 16 shots, the default budget) for
each seed; it prints top-1 on test averaged over the datasets, the mean over seeds, and the
change against the defaults with the spread of the per-seed paired differences. The switches
that act on augmented views are measured under the official augmentation (crop and flip), where
views differ; under the built-in suite's own (none) every view is the same.

Runs are cells written to ``--out`` as a sweep writes them, and cells already there are not run
again: ``craft demo``'s folder already holds the harness defaults' cells (``--out results/demo``).
"""

from __future__ import annotations

import argparse
import statistics
import time
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field
from typing import Any

DATASETS = ("digits_noise", "digits_invert", "digits_rotate", "digits_shift")


@dataclass(frozen=True)
class Variant:
    """One row: a method with some hyperparameters (and a protocol, for the augmentation)."""

    name: str
    method: str
    hparams: dict[str, Any] = field(default_factory=dict)
    protocol: str = "harness"
    baseline: str = ""  # the variant it is compared with ("" for a baseline)


# protocol official sets the official augmentation and cma_eigen_gap 1; "aug" rows keep the gap at 10.
_AUG = {"cma_eigen_gap": 10.0}
VARIANTS = (
    Variant("CraFT, harness defaults", "craft"),
    Variant("cma_step_rule: tpa + prompt_from: candidates (the former single-ask loop)", "craft",
            {"cma_step_rule": "tpa", "prompt_from": "candidates"}, baseline="CraFT, harness defaults"),
    Variant("prompt_from: candidates (one ask per tell, CSA)", "craft", {"prompt_from": "candidates"},
            baseline="CraFT, harness defaults"),
    Variant("cma_eigen_gap: 1 (pycma's interval, the official code's)", "craft", {"cma_eigen_gap": 1.0},
            baseline="CraFT, harness defaults"),
    Variant("refine_features: normalized", "craft", {"refine_features": "normalized"}, baseline="CraFT, harness defaults"),
    Variant("prompt_from: xbest + projection_init: uniform (the ImageNet scripts')", "craft",
            {"prompt_from": "xbest", "projection_init": "uniform"}, baseline="CraFT, harness defaults"),
    Variant("CraFT, official augmentation (crop + flip)", "craft", _AUG, "official", baseline="CraFT, harness defaults"),
    Variant("refine_views: cached, under the official augmentation", "craft", {**_AUG, "refine_views": "cached"}, "official",
            baseline="CraFT, official augmentation (crop + flip)"),
    Variant("CraFT, protocol: official", "craft", {}, "official", baseline="CraFT, harness defaults"),
    Variant("BBT, harness defaults", "bbt"),
    Variant("BBT, cma_step_rule: tpa + prompt_from: candidates", "bbt", {"cma_step_rule": "tpa", "prompt_from": "candidates"},
            baseline="BBT, harness defaults"),
    Variant("BBT, protocol: official", "bbt", {}, "official", baseline="BBT, harness defaults"),
)


def _cell(variant: Variant, dataset: str, seed: int) -> Any:
    from benchmark.sweep.cell import Cell
    from benchmark.sweep.protocol import protocol_hparams

    hparams = {**protocol_hparams(variant.protocol, variant.method), **variant.hparams}
    return Cell(variant.method, dataset, 16, seed, "craft-tiny", "builtin", hparams, protocol=variant.protocol)


def _run(cell: Any, out: str) -> float:
    """Run one cell in this process (a worker of the pool), write its rows to ``out``; its wall seconds."""
    import torch

    from benchmark.results.store import write_cell
    from benchmark.serve.server import ModelServer
    from benchmark.sweep.run_cell import run_cell

    torch.set_num_threads(1)
    global _SERVER
    if "_SERVER" not in globals():
        _SERVER = ModelServer("craft-tiny", "builtin")
    start = time.perf_counter()
    write_cell(out, run_cell(cell, _SERVER))
    return time.perf_counter() - start


def table(top1: dict[str, float], variants: tuple[Variant, ...], datasets: list[str], seeds: list[int]) -> str:
    """The Markdown table: per variant, mean over datasets per seed, then over seeds, and the paired change."""
    avg = {v.name: {s: statistics.mean(top1[_cell(v, ds, s).cell_id] for ds in datasets) for s in seeds} for v in variants}
    lines = ["| switch | method | top-1 (mean of the datasets, ± std over seeds) | change against | change (± std of paired seeds) |",
             "|---|---|---:|---|---:|"]
    for v in variants:
        mine = [avg[v.name][s] for s in seeds]
        cell = f"{statistics.mean(mine):.2f} ± {statistics.stdev(mine) if len(mine) > 1 else 0:.2f}"
        if v.baseline:
            diffs = [avg[v.name][s] - avg[v.baseline][s] for s in seeds]
            change = f"{statistics.mean(diffs):+.2f} ± {statistics.stdev(diffs) if len(diffs) > 1 else 0:.2f}"
        else:
            change = "-"
        lines.append(f"| {v.name} | {v.method} | {cell} | {v.baseline or '-'} | {change} |")
    return "\n".join(lines)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out", default="results/fidelity", help="results folder: cells already there are not run again")
    p.add_argument("--seeds", type=int, nargs="+", default=[1, 2, 3])
    p.add_argument("--datasets", nargs="+", default=list(DATASETS))
    p.add_argument("--jobs", type=int, default=2, help="runs in parallel, one process each")
    p.add_argument("--only", nargs="*", default=None, help="variant names (substrings) to run, with their baselines")
    args = p.parse_args()
    from benchmark.datasets.builtin import ensure_builtin_suite
    from benchmark.report.load import load_results
    from benchmark.results.store import cell_status

    ensure_builtin_suite()
    variants = VARIANTS
    if args.only:
        keep = {v.name for v in VARIANTS if any(o in v.name for o in args.only)}
        keep |= {v.baseline for v in VARIANTS if v.name in keep and v.baseline}
        variants = tuple(v for v in VARIANTS if v.name in keep)
    cells = list({c.cell_id: c for c in (_cell(v, ds, s) for v in variants for ds in args.datasets for s in args.seeds)}.values())
    done = {k for k, status in cell_status(args.out).items() if status == "ok"}
    todo = [c for c in cells if c.cell_id not in done]
    start = time.perf_counter()
    with ProcessPoolExecutor(args.jobs) as pool:
        walls = list(pool.map(_run, todo, [args.out] * len(todo)))
    rows = load_results(args.out)
    top1 = dict(zip(rows["cell_id"], rows["top1_test"]))
    print(table(top1, variants, args.datasets, args.seeds))
    print(f"\n{len(todo)} runs in {time.perf_counter() - start:.0f} s ({args.jobs} processes, "
          f"{sum(walls):.0f} s of runs), {len(cells) - len(todo)} already in {args.out}")


if __name__ == "__main__":
    main()

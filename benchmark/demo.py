"""``craft demo``: zero-shot CLIP, BBT and CraFT on the built-in suite, through Ray, into Parquet."""

from __future__ import annotations

import argparse
import time

from benchmark.datasets.registry import list_datasets
from benchmark.sweep.cell import Cell

METHODS = ("zero_shot_clip", "bbt", "craft")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--out", default="results/demo", help="results folder or URI (default: results/demo)")
    parser.add_argument("--shots", type=int, default=16)
    parser.add_argument("--seeds", type=int, nargs="+", default=[1, 2, 3])
    parser.add_argument("--datasets", nargs="+", default=None, help="built-in datasets (default: all)")
    parser.add_argument("--methods", nargs="+", default=list(METHODS), choices=METHODS)
    parser.add_argument("--num-cpus", type=int, default=None, help="CPUs for the local Ray runtime")
    parser.add_argument("--no-progress", action="store_true")


def demo_cells(datasets: list[str] | None, methods: list[str], shots: int, seeds: list[int]) -> list[Cell]:
    from benchmark.builtin_suite import BUILTIN_BACKBONE

    keys = datasets or [s.key for s in list_datasets("builtin")]
    return [
        Cell(method, key, shots, seed, BUILTIN_BACKBONE, "builtin")
        for key in keys for method in methods for seed in seeds
    ]


def run(args: argparse.Namespace) -> int:
    from benchmark.report.load import load_results
    from benchmark.report.render import render_table
    from benchmark.sweep.runner import run_sweep

    cells = demo_cells(args.datasets, args.methods, args.shots, args.seeds)
    start = time.perf_counter()
    summary = run_sweep(cells, args.out, num_cpus=args.num_cpus, progress=not args.no_progress)
    wall = time.perf_counter() - start
    print(
        f"\n{summary.done} runs done, {summary.skipped} already done (skipped), {summary.failed} failed "
        f"in {wall:.1f} s; results in {args.out}\n"
    )
    for line in summary.failures:
        print(f"failed: {line}")
    df = load_results(args.out)
    df = df[df["cell_id"].isin({c.cell_id for c in cells})]
    print(render_table(df, "few-shot", "md", datasets=[c.dataset for c in cells]))
    return 1 if summary.failed else 0

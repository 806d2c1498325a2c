"""pycma's time per CMA-ES generation against ``cma_eigen_gap`` (how often it eigendecomposes C).

Run from the repository root:

    python -m measurement.cma_cost [--dims 64 512] [--gaps 1 10] [--generations 200]
    python -m measurement.cma_cost --accuracy [--datasets digits_invert digits_rotate] [--seeds 1 2 3]

The first form times ask + tell alone (popsize 40, bounds +-5, as BBT and CraFT run them, on a
sphere function, one BLAS thread) and counts eigendecompositions. ``--accuracy`` runs BBT and
CraFT in-process on the built-in suite (16 shots, the default budget) for each gap and prints
top-1 on test per dataset, mean over seeds, and each run's wall time.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time

import numpy as np
from threadpoolctl import threadpool_limits


def time_generations(dim: int, gap: float, generations: int, popsize: int = 40) -> tuple[float, int]:
    """Milliseconds per generation and the number of eigendecompositions, as BBT drives pycma."""
    from craft.cma_es import cma_strategy

    es = cma_strategy(dim, 1.0, popsize, 5.0, 2, gap, generations)
    decompositions = 0
    decompose = es.sm._decompose_C

    def counted() -> None:
        nonlocal decompositions
        decompositions += 1
        decompose()

    es.sm._decompose_C = counted
    start = time.perf_counter()
    solutions = es.ask()
    for _ in range(generations):
        es.tell(solutions, [float(np.sum(np.square(x))) for x in solutions])
        solutions = es.ask()
    return (time.perf_counter() - start) / generations * 1000, decompositions


def accuracy(datasets: list[str], seeds: list[int], gaps: list[float]) -> None:
    import torch

    from benchmark.serve.server import ModelServer
    from benchmark.sweep.cell import Cell
    from benchmark.sweep.run_cell import run_cell

    torch.set_num_threads(1)
    server = ModelServer("craft-tiny", "builtin")
    for method in ("bbt", "craft"):
        for ds in datasets:
            for gap in gaps:
                tops, walls = [], []
                for seed in seeds:
                    start = time.perf_counter()
                    row = run_cell(Cell(method, ds, 16, seed, "craft-tiny", "builtin", {"cma_eigen_gap": gap}), server)[0]
                    tops.append(row["top1_test"])
                    walls.append(round(time.perf_counter() - start, 1))
                print(json.dumps({"method": method, "dataset": ds, "cma_eigen_gap": gap,
                                  "top1_test_mean": round(statistics.mean(tops), 2),
                                  "top1_test": [round(t, 2) for t in tops], "wall_s": walls}), flush=True)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--dims", type=int, nargs="+", default=[64, 512])
    p.add_argument("--gaps", type=float, nargs="+", default=[1.0, 10.0])
    p.add_argument("--generations", type=int, default=200)
    p.add_argument("--accuracy", action="store_true", help="BBT and CraFT on the built-in suite per gap")
    p.add_argument("--datasets", nargs="+", default=["digits_invert", "digits_rotate"])
    p.add_argument("--seeds", type=int, nargs="+", default=[1, 2, 3])
    args = p.parse_args()
    with threadpool_limits(1):
        if args.accuracy:
            accuracy(args.datasets, args.seeds, args.gaps)
            return
        for dim in args.dims:
            for gap in args.gaps:
                ms, n = time_generations(dim, gap, args.generations)
                print(f"dim {dim} cma_eigen_gap {gap:g}: {ms:.1f} ms per generation, "
                      f"{n} eigendecompositions in {args.generations} generations")


if __name__ == "__main__":
    main()

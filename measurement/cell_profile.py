"""One cell of ``craft paper --suite builtin``, run in this process: its wall time, and where it goes.

Run from the repository root:

    python -m measurement.cell_profile [--method craft] [--shots 16] [--dataset digits_noise] [--seed 1]
                                       [--repeats 3] [--fresh] [--profile N]

The cell is the paper grid's own (its hyperparameters and protocol), run by ``run_cell`` against a
local model server, as a sweep's run task does but without Ray. By default one warm-up run fills a
feature cache (a temporary folder) and the repeats read their views from it, so the figure is the
run's own loop; ``--fresh`` gives every repeat a new cache, so its views are encoded again, as in a
sweep's first pass. Printed: each repeat's wall time, the median, and the cell's top-1 on test (the
same on every repeat: a run is deterministic on one machine). ``--profile N`` runs one more repeat
under cProfile and prints its N most expensive functions by own time (cProfile's overhead inflates
functions called many times: use it to find candidates, and the wall times to judge them).
"""

from __future__ import annotations

import argparse
import cProfile
import pstats
import statistics
import tempfile
import time


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--method", default="craft")
    p.add_argument("--shots", type=int, default=16)
    p.add_argument("--dataset", default="digits_noise")
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--fresh", action="store_true", help="a new feature cache for every repeat (views encoded again)")
    p.add_argument("--profile", type=int, default=0, metavar="N", help="then one repeat under cProfile: its N top functions")
    args = p.parse_args(argv)

    from benchmark.errors import UserError
    from benchmark.serve.server import ModelServer
    from benchmark.sweep.paper import paper_plan
    from benchmark.sweep.run_cell import run_cell

    plan = paper_plan("builtin", tempfile.mkdtemp())
    cells = [c for c in plan.cells() if (c.method, c.shots, c.dataset, c.seed) == (args.method, args.shots, args.dataset, args.seed)]
    if not cells:
        raise UserError(f"craft paper --suite builtin has no cell {args.method} at {args.shots} shots on {args.dataset}, seed {args.seed}")
    cell = cells[0]

    def server() -> ModelServer:
        return ModelServer("craft-tiny", "builtin", cache_dir=tempfile.mkdtemp())

    shared = None if args.fresh else server()
    if shared is not None:
        run_cell(cell, shared)  # fills the cache: the repeats time the run's own loop
    walls, top1 = [], set()
    for _ in range(args.repeats):
        target = shared if shared is not None else server()
        start = time.perf_counter()
        rows = run_cell(cell, target)
        walls.append(time.perf_counter() - start)
        top1.add(rows[0]["top1_test"])
    print(f"{cell.method} {cell.shots} shots {cell.dataset} seed {cell.seed} ({'fresh views' if args.fresh else 'cached views'}): "
          f"median {statistics.median(walls):.2f} s over {args.repeats} ({', '.join(f'{w:.2f}' for w in walls)}); "
          f"top-1 on test {', '.join(f'{t:.2f}' for t in sorted(top1))}")
    if args.profile:
        target = shared if shared is not None else server()
        prof = cProfile.Profile()
        prof.enable()
        run_cell(cell, target)
        prof.disable()
        pstats.Stats(prof).sort_stats("tottime").print_stats(args.profile)


if __name__ == "__main__":
    main()

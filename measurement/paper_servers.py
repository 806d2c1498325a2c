"""``craft paper --suite builtin``'s sweep under several ``runs_per_server`` settings, alternated.

Run from the repository root:

    python -m measurement.paper_servers [--runs-per-server 1 4] [--repeats 2] [--num-cpus N]

Each repeat runs the whole built-in grid once per setting (1, 4, 1, 4, ...), each with a fresh
feature cache (its views encoded again, as a fresh clone's first run) into a fresh results folder,
on a local Ray runtime started anew. Without GPUs a setting of ``r`` gives each key one server for
every ``r`` CPUs (:func:`benchmark.serve.pool.server_count`). Printed: each sweep's wall time
(Ray's start and the servers' included, the report not), the median per setting, and whether every
setting gave every cell the same top-1 on test as the first (a server's count must not change a
number). About 10 minutes a sweep on 2 cores.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import statistics
import tempfile
import time


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--runs-per-server", type=int, nargs="+", default=[1, 4])
    p.add_argument("--repeats", type=int, default=2)
    p.add_argument("--num-cpus", type=int, default=None, help="CPUs of the local Ray runtime (default: all)")
    args = p.parse_args(argv)

    import ray

    from benchmark.errors import UserError
    from benchmark.report.load import load_results
    from benchmark.sweep.paper import paper_plan
    from benchmark.sweep.runner import resolve_weights, run_sweep

    if any(r < 1 for r in args.runs_per_server):
        raise UserError(f"--runs-per-server must be >= 1, got {args.runs_per_server}")
    walls: dict[int, list[float]] = {r: [] for r in args.runs_per_server}
    first: dict[str, float] | None = None
    same = True
    for repeat in range(args.repeats):
        for rps in args.runs_per_server:
            tmp = tempfile.mkdtemp(prefix="paper-servers-")
            os.environ["CRAFT_BENCH_CACHE"] = os.path.join(tmp, "cache")  # read by the workers Ray starts
            plan = paper_plan("builtin", os.path.join(tmp, "out"))
            cells = plan.cells()
            options = dataclasses.replace(next(iter(plan.parts.values())).server, runs_per_server=rps)
            start = time.perf_counter()
            summary = run_sweep(cells, plan.out, options, num_cpus=args.num_cpus, progress=False, config=plan,
                                weights=resolve_weights(cells))
            wall = time.perf_counter() - start
            ray.shutdown()
            if summary.failed:
                raise SystemExit(f"runs_per_server {rps}: {summary.failed} cells failed: {summary.failures[:3]}")
            df = load_results(plan.out)
            top1 = dict(zip(df["cell_id"] + "/" + df["eval_dataset"].astype(str), df["top1_test"]))
            first = first or top1
            same = same and top1 == first
            walls[rps].append(wall)
            print(f"repeat {repeat + 1}, runs_per_server {rps}: sweep {wall:.1f} s, {summary.done} cells", flush=True)
    for rps, ws in walls.items():
        print(f"runs_per_server {rps}: median {statistics.median(ws):.1f} s over {len(ws)} ({', '.join(f'{w:.1f}' for w in ws)})")
    print("every cell's top-1 on test the same under every setting" if same else "TOP-1 DIFFERS between settings")


if __name__ == "__main__":
    main()

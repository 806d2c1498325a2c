"""Sweep throughput with 1 and with 4 concurrent runs per model server, measured side by side.

Run from the repository root:

    python -m measurement.sweep_throughput [--cells 24] [--budget 2000] [--num-cpus 4]
        [--backbone craft-tiny --weights builtin --dataset digits_rotate] [--address HOST:PORT]
        [--batching auto|on|off [...]] [--repeats 1]

The same sweep (BBT and CraFT cells of one dataset, differing in seed) runs once per setting,
each into a fresh results folder, after one warm-up sweep that fills the feature cache and
Ray's worker pool; with ``--repeats 2`` the settings alternate (1, 4, 4, 1, ...). It prints the
runs per minute of each setting (wall time of the whole ``run_sweep``, server start included)
and their ratio; with several ``--batching`` settings (``--batching on off``), every pair of
runs-per-server and batching setting is measured in the same way. A run reserves one CPU, so the local runtime is given ``--num-cpus`` logical
CPUs (default 4: four runs can be in flight at once even on a 2-core machine).
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time

from benchmark.sweep.config import config_from_dict
from benchmark.sweep.plan import expand
from benchmark.serve.options import ServerOptions
from benchmark.serve.ray_runtime import init_ray
from benchmark.sweep.runner import run_sweep

SETTINGS = (1, 4)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--cells", type=int, default=24, help="cells per sweep (half BBT, half CraFT)")
    p.add_argument("--budget", type=int, default=2000, help="queries per cell")
    p.add_argument("--shots", type=int, default=16)
    p.add_argument("--backbone", default="craft-tiny")
    p.add_argument("--weights", default="builtin")
    p.add_argument("--dataset", default="digits_rotate", help="e.g. paper-shapes/caltech101 with --weights random")
    p.add_argument("--num-cpus", type=int, default=4)
    p.add_argument("--address", default=None, help="run on this Ray cluster instead of a local runtime")
    p.add_argument("--batching", choices=("auto", "on", "off"), nargs="+", default=["auto"],
                   help="merge concurrent queries (auto: on a GPU only); several: measure each")
    p.add_argument("--repeats", type=int, default=1)
    args = p.parse_args()

    seeds = list(range(1, args.cells // 2 + 1))
    raw = {"out": "unused", "methods": ["bbt", "craft"], "datasets": [args.dataset], "shots": [args.shots],
           "seeds": seeds, "backbones": [f"{args.backbone}:{args.weights}"],
           "hparams": {m: {"*": {"budget": args.budget}} for m in ("bbt", "craft")}}
    cells = expand(config_from_dict(raw, "sweep_throughput"))
    init_ray(args.address, None if args.address else args.num_cpus)

    def sweep(runs_per_server: int, batching: str, n: int | None = None) -> float:
        with tempfile.TemporaryDirectory(prefix="sweep-throughput-") as out:
            options = ServerOptions(runs_per_server=runs_per_server, batching={"auto": None, "on": True, "off": False}[batching])
            s = run_sweep(cells[:n] if n else cells, out, options, progress=False)
            if s.failed:
                raise SystemExit(f"{s.failed} cells failed: {s.failures[:3]}")
            return s.wall_s

    start = time.perf_counter()
    sweep(4, args.batching[0], n=4)  # warm-up: features into the cache, workers started
    print(f"warm-up: {time.perf_counter() - start:.1f} s")
    order = [(k, b) for b in args.batching for k in SETTINGS]
    rates: dict[tuple[int, str], list[float]] = {s: [] for s in order}
    for r in range(args.repeats):
        for k, b in order if r % 2 == 0 else order[::-1]:
            wall = sweep(k, b)
            rates[(k, b)].append(len(cells) * 60.0 / wall)
            print(f"runs_per_server={k} batching={b}: {len(cells)} runs in {wall:.1f} s = {rates[(k, b)][-1]:.1f} runs/min")
    mean = {s: statistics.mean(v) for s, v in rates.items()}
    for b in args.batching:
        print(f"{args.backbone}:{args.weights} on {args.dataset}, {len(cells)} runs of {args.budget} queries, "
              f"batching {b}: {mean[(1, b)]:.1f} vs {mean[(4, b)]:.1f} runs/min; ratio 4/1 = {mean[(4, b)] / mean[(1, b)]:.2f}")


if __name__ == "__main__":
    main()

"""``craft demo``: zero-shot CLIP, BBT and CraFT on the built-in suite, through Ray, into Parquet.

A thin wrapper of ``craft bench``: its flags make the sweep config of ``configs/demo.yaml``
(changed where a flag says so), run through the same planning and runner.
"""

from __future__ import annotations

import argparse
import logging
import time
from collections.abc import Sequence

from benchmark.sweep.config import SweepConfig

METHODS = ("zero_shot_clip", "bbt", "craft")
log = logging.getLogger(__name__)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--out", default="results/demo", help="results folder or URI (default: results/demo)")
    parser.add_argument("--shots", type=int, default=16, help="shots per class (default: 16)")
    parser.add_argument("--seeds", type=int, nargs="+", default=[1, 2, 3], help="few-shot seeds (default: 1 2 3)")
    parser.add_argument("--protocol", default="harness", choices=("harness", "official"),
                        help="harness (default) or official: every fidelity switch on the official code's side (docs/fidelity.md)")
    parser.add_argument("--datasets", nargs="+", default=None, help="built-in datasets (default: all)")
    parser.add_argument("--methods", nargs="+", default=list(METHODS), choices=METHODS,
                        help=f"methods to run (default: {' '.join(METHODS)})")
    parser.add_argument("--num-cpus", type=int, default=None, help="CPUs for the local Ray runtime (default: all)")
    parser.add_argument("--no-progress", action="store_true", help="no progress display")


def demo_config(
    out: str = "results/demo", datasets: Sequence[str] | None = None, methods: Sequence[str] = METHODS,
    shots: int = 16, seeds: Sequence[int] = (1, 2, 3), protocol: str = "harness",
) -> SweepConfig:
    """The sweep of ``configs/demo.yaml``, with the flags' changes."""
    from benchmark.model.builtin import BUILTIN_BACKBONE
    from benchmark.sweep.config import config_from_dict

    raw = {"out": out, "methods": list(methods), "shots": [shots], "seeds": list(seeds),
           "backbones": [f"{BUILTIN_BACKBONE}:builtin"], "protocol": protocol,
           "runs_per_server": 1}  # a server per run: a CPU server's runs share one interpreter lock
    raw.update({"datasets": list(datasets)} if datasets else {"suite": "builtin"})
    return config_from_dict(raw, "craft demo")


def run(args: argparse.Namespace) -> int:
    from benchmark.report.load import load_results
    from benchmark.report.render import render_table
    from benchmark.sweep.plan import check_inputs, expand
    from benchmark.sweep.runner import run_sweep

    if args.num_cpus is not None and args.num_cpus < 1:  # 0 would mean "all of them" to the runtime
        from benchmark.errors import UserError

        raise UserError(f"--num-cpus must be >= 1, got {args.num_cpus}")
    cfg = demo_config(args.out, args.datasets, args.methods, args.shots, args.seeds, args.protocol)
    cells = expand(cfg)
    for note in check_inputs(cfg):  # said once, before anything runs
        log.info("note: %s", note)
    start = time.perf_counter()
    summary = run_sweep(cells, cfg.out, cfg.server, num_cpus=args.num_cpus, progress=not args.no_progress, config=cfg)
    wall = time.perf_counter() - start
    print(
        f"\n{summary.done} runs done, {summary.skipped} already done (skipped), {summary.failed} failed "
        f"in {wall:.1f} s; results in {args.out}\n"
    )
    for line in summary.failures:
        log.error("failed: %s", line)
    df = load_results(args.out)
    df = df[df["cell_id"].isin({c.cell_id for c in cells})]
    print(render_table(df, "few-shot", "md", datasets=[c.dataset for c in cells]))
    return 1 if summary.failed else 0

"""``craft results RESULTS [--config CONFIG]``: :mod:`benchmark.results.cli`, plus what is left of a sweep.

The results room reads folders without knowing sweeps; with ``--config`` this module plans the
sweep (no Ray: :func:`benchmark.sweep.plan.make_plan`) against RESULTS, then lists its cells done,
failed and still to run. Without ``--config`` nothing here imports the sweep (or torch).
"""

from __future__ import annotations

import argparse

from benchmark.results import cli as results_cli


def add_arguments(parser: argparse.ArgumentParser) -> None:
    results_cli.add_arguments(parser)
    parser.add_argument("--config", metavar="CONFIG",
                        help="a sweep config (YAML): also say which of its cells are done, failed or left to run in RESULTS")


def run(args: argparse.Namespace) -> int:
    cfg = None
    if args.config is not None:  # a bad config is said before the folder is read
        from benchmark.sweep.config import load_config

        cfg = load_config(args.config)
    status = results_cli.run(args)
    if cfg is not None:
        import dataclasses

        from benchmark.sweep.plan import expand, format_plan, left_to_run, make_plan

        plan = make_plan(expand(cfg), args.results)
        print()
        print(format_plan(plan, dataclasses.replace(cfg, out=args.results)))
        print("\n".join(left_to_run(plan)))
    return status

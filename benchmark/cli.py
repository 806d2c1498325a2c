"""The ``craft`` command: one subcommand per module, each imported only when used.

Each subcommand module exposes ``add_arguments(parser)`` and ``run(args) -> int``; the
import is lazy so that ``craft datasets list`` does not pay for importing torch and Ray.
"""

from __future__ import annotations

import argparse
import importlib
import sys

from benchmark.errors import UserError

SUBCOMMANDS: dict[str, tuple[str, str]] = {
    "demo": ("benchmark.demo", "run zero-shot, BBT and CraFT on the built-in suite through Ray"),
    "bench": ("benchmark.sweep.cli", "run a sweep config (methods x datasets x shots x seeds x backbones)"),
    "tune": ("tuning.cli", "search hyperparameters with Optuna through Ray Tune"),
    "table": ("benchmark.report.tables_cli", "render result tables (Markdown, LaTeX, CSV)"),
    "plot": ("benchmark.report.plots_cli", "render result figures (PNG)"),
    "results": ("benchmark.results_cli", "verify a results folder: cells done and failed, damaged files named"),
    "perf": ("benchmark.perf", "measure query throughput: official-style path versus fast path"),
    "datasets": ("benchmark.datasets.cli", "list the dataset registry or check a data root"),
}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="craft",
        description="craft-bench: black-box fine-tuning of vision-language models (CraFT, CBBT, BBT, "
        "zero-shot CLIP, white-box CoOp): runs, sweeps, search, tables and figures.",
        epilog="Each command has --help, e.g. 'craft bench --help'.",
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for name, (module, help_text) in SUBCOMMANDS.items():
        p = sub.add_parser(name, help=help_text, description=help_text)
        p.set_defaults(_module=module)
        # Each module adds its own arguments only when its subcommand is chosen.
    return parser


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = build_parser()
    # Find the subcommand first, then let its module add arguments and parse for real.
    known, _ = parser.parse_known_args(argv[:1] or argv)
    module = importlib.import_module(known._module)
    sub_parser = argparse.ArgumentParser(
        prog=f"craft {known.command}", description=SUBCOMMANDS[known.command][1]
    )
    module.add_arguments(sub_parser)
    args = sub_parser.parse_args(argv[1:])
    try:
        return int(module.run(args) or 0)
    except UserError as exc:
        print(f"craft {known.command}: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())

"""The ``craft`` command: one subcommand per module, each imported only when used.

Each subcommand module exposes ``add_arguments(parser)`` and ``run(args) -> int``; the
import is lazy so that ``craft datasets list`` does not pay for importing torch and Ray.
Packages outside the product add commands through the ``craft_bench.commands`` entry-point
group (``craft perf`` comes from :mod:`measurement` that way), so the product never imports them.
"""

from __future__ import annotations

import argparse
import importlib
import os
import sys
from importlib.metadata import entry_points

from benchmark.errors import UserError, was_terminated

MAX_MESSAGE_CHARS = 2000

SUBCOMMANDS: dict[str, tuple[str, str]] = {
    "demo": ("benchmark.sweep.demo", "run zero-shot, BBT and CraFT on the built-in suite through Ray"),
    "bench": ("benchmark.sweep.cli", "run a sweep config (methods x datasets x shots x seeds x backbones)"),
    "tune": ("tuning.cli", "search hyperparameters with Optuna through Ray Tune"),
    "table": ("benchmark.report.tables_cli", "render result tables (Markdown, LaTeX, CSV)"),
    "plot": ("benchmark.report.plots_cli", "render result figures (PNG)"),
    "results": ("benchmark.results.cli", "verify a results folder: cells done and failed, damaged files named"),
    "datasets": ("benchmark.datasets.cli", "list the dataset registry or check a data root"),
    "cache": ("benchmark.model.cache_cli", "list, verify or clear the image-feature cache"),
    "weights": ("benchmark.model.weights_cli", "list the backbones' weights present here, or fetch them (sha256 recorded)"),
}


PLUGIN_GROUP = "craft_bench.commands"


class Parser(argparse.ArgumentParser):
    """argparse's parser with its errors in one line (``craft bench: error: ... (see craft bench --help)``),
    exit status 2, instead of the usage block and the error; nested parsers (``craft cache clear``) too."""

    def error(self, message: str) -> None:  # type: ignore[override]
        self.exit(2, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


def subcommands() -> dict[str, tuple[str, str]]:
    """The product's subcommands, then those installed packages declare (name -> (module, help))."""
    found = dict(SUBCOMMANDS)
    for point in entry_points(group=PLUGIN_GROUP):
        if point.name not in found:
            found[point.name] = tuple(point.load())
    return found


def build_parser() -> argparse.ArgumentParser:
    parser = Parser(
        prog="craft",
        description="craft-bench: black-box fine-tuning of vision-language models (CraFT, CBBT, BBT, "
        "zero-shot CLIP, white-box CoOp): runs, sweeps, search, tables and figures.",
        epilog="Each command has --help, e.g. 'craft bench --help'.",
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for name, (module, help_text) in subcommands().items():
        p = sub.add_parser(name, help=help_text, description=help_text)
        p.set_defaults(_module=module)
        # Each module adds its own arguments only when its subcommand is chosen.
    return parser


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = build_parser()
    # Find the subcommand first, then let its module add arguments and parse for real.
    known, _ = parser.parse_known_args(argv[:1] or argv)
    return run_command(known.command, known._module, subcommands()[known.command][1], argv[1:])


def run_command(command: str, module_name: str, description: str, argv: list[str]) -> int:
    """Run subcommand ``command`` of module ``module_name`` on ``argv``: a user error is one sentence
    on stderr and exit 2, Ctrl-C exit 130, a closed pipe exit 141. A plugin's module may call it from
    its own ``__main__`` (``python -m measurement.perf`` where no entry point is installed)."""
    module = importlib.import_module(module_name)
    sub_parser = Parser(prog=f"craft {command}", description=description)
    module.add_arguments(sub_parser)
    args = sub_parser.parse_args(argv)
    try:
        status = int(module.run(args) or 0)
        sys.stdout.flush()  # a closed pipe shows here, not in Python's exit flush
        return status
    except UserError as exc:
        message = str(exc)
        if len(message) > MAX_MESSAGE_CHARS:  # whatever echoes a value, one sentence stays short
            message = message[: MAX_MESSAGE_CHARS - 3] + "..."
        print(f"craft {command}: error: {message}", file=sys.stderr)
        return 2
    except KeyboardInterrupt as exc:
        terminated = was_terminated(exc)
        print("terminated" if terminated else "interrupted", file=sys.stderr)
        return 143 if terminated else 130
    except BrokenPipeError:
        # The reader went away (``craft bench --dry-run | head -2``): not an error, nothing more to say.
        # Point stdout at /dev/null so that Python's exit flush does not raise again.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 141  # 128 + SIGPIPE, what a shell reports for a program a closed pipe stopped


if __name__ == "__main__":
    sys.exit(main())

"""The ``craft`` command: one subcommand per module, each imported only when used.

Each subcommand module exposes ``add_arguments(parser)`` and ``run(args) -> int``; the
import is lazy so that ``craft datasets list`` does not pay for importing torch and Ray.
Packages outside the product add commands through the ``craft_bench.commands`` entry-point
group (``craft perf`` comes from :mod:`measurement` that way), so the product never imports them.

Results go to stdout; errors, progress and notes to stderr, the latter through stdlib ``logging``
(loggers ``benchmark``, ``craft``, ``tuning``, ``measurement``) at INFO, which ``-v`` lowers to
DEBUG and ``-q`` raises to WARNING (``-qq``: errors only), before or after the subcommand.
"""

from __future__ import annotations

import argparse
import contextlib
import faulthandler
import importlib
import logging
import os
import signal
import sys
import threading
from importlib.metadata import entry_points

from benchmark.errors import UserError, was_terminated

MAX_MESSAGE_CHARS = 2000
LOGGERS = ("benchmark", "craft", "tuning", "measurement")
VERBOSITY = {"-v": -1, "--verbose": -1, "-vv": -2, "-q": 1, "--quiet": 1, "-qq": 2}

SUBCOMMANDS: dict[str, tuple[str, str]] = {
    "demo": ("benchmark.sweep.demo", "run zero-shot, BBT and CraFT on the built-in suite through Ray"),
    "bench": ("benchmark.sweep.cli", "run a sweep config (methods x datasets x shots x seeds x backbones)"),
    "paper": ("benchmark.sweep.paper", "the CraFT paper's whole grid (few-shot, references, shift), then every table, "
              "the figures and the claims table"),
    "tune": ("tuning.cli", "search hyperparameters with Optuna through Ray Tune"),
    "table": ("benchmark.report.tables_cli", "render result tables (Markdown, LaTeX, CSV, HTML)"),
    "plot": ("benchmark.report.plots_cli", "render result figures (PNG, PDF, SVG)"),
    "report": ("benchmark.report.report_cli", "one self-contained HTML report of a results folder: tables, figures, "
                                              "failures, cost, provenance"),
    "export": ("benchmark.track.cli", "log a results folder already run to MLflow or W&B (offline by default)"),
    "results": ("benchmark.sweep.status_cli", "a results folder: cells done, failed and left (--config), cost, damaged files"),
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
    parser.add_argument("--version", action="version", version=version_text())
    add_verbosity(parser)
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for name, (module, help_text) in subcommands().items():
        p = sub.add_parser(name, help=help_text, description=help_text)
        p.set_defaults(_module=module)
        # Each module adds its own arguments only when its subcommand is chosen.
    return parser


def version_text() -> str:
    """``craft-bench VERSION (code GIT-DESCRIBE), Python X.Y.Z``."""
    import platform
    from importlib.metadata import PackageNotFoundError, version

    from benchmark.results.provenance import code_version

    try:
        installed = version("craft-bench")
    except PackageNotFoundError:
        installed = "not installed"
    return f"craft-bench {installed} (code {code_version()}), Python {platform.python_version()}"


def add_verbosity(parser: argparse.ArgumentParser, default: object = 0) -> None:
    """``-v``/``-q`` (repeatable): more or less of what the command logs to stderr (see the module); on
    nested actions too (``craft cache clear -q``), where they are absent unless given."""
    parser.add_argument("-v", "--verbose", action="count", default=default, help="more messages on stderr (-v: debug)")
    parser.add_argument("-q", "--quiet", action="count", default=default,
                        help="fewer messages on stderr (-q: warnings and errors only, -qq: errors only)")
    for action in parser._actions:  # noqa: SLF001 - argparse has no public way to reach nested parsers
        if isinstance(action, argparse._SubParsersAction):  # noqa: SLF001
            for nested in action.choices.values():
                add_verbosity(nested, argparse.SUPPRESS)


class _Stderr(logging.StreamHandler):
    """A handler that writes to whatever ``sys.stderr`` is when a record is emitted (pytest swaps it)."""

    @property  # type: ignore[override]
    def stream(self):  # noqa: ANN201
        return sys.stderr

    @stream.setter
    def stream(self, _value) -> None:  # noqa: ANN001
        pass


def configure_logging(verbosity: int) -> None:
    """Our loggers at INFO + 10 x ``verbosity`` (negative: more), each message as it is, on stderr."""
    level = min(max(logging.INFO + 10 * verbosity, logging.DEBUG), logging.ERROR)
    for name in LOGGERS:
        logger = logging.getLogger(name)
        logger.handlers = [h for h in logger.handlers if not isinstance(h, _Stderr)]
        handler = _Stderr()
        handler.setFormatter(logging.Formatter("%(message)s"))
        logger.addHandler(handler)
        logger.setLevel(level)
        logger.propagate = False


def main(argv: list[str] | None = None) -> int:
    """The ``craft`` console script. Called with no ``argv`` (a real process), Ctrl-C and SIGTERM are
    also watched from a thread (:mod:`benchmark.stop_watch`), so that a stuck stop is forced."""
    process = argv is None
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = build_parser()
    leading = 0  # -v/-q given before the subcommand
    while argv and argv[0] in VERBOSITY:
        leading += VERBOSITY[argv.pop(0)]
    # Find the subcommand first, then let its module add arguments and parse for real.
    known, _ = parser.parse_known_args(argv[:1] or argv)
    if process:
        from benchmark import stop_watch

        stop_watch.install(known.command)
    return run_command(known.command, known._module, subcommands()[known.command][1], argv[1:], leading)


def run_command(command: str, module_name: str, description: str, argv: list[str], verbosity: int = 0) -> int:
    """Run subcommand ``command`` of module ``module_name`` on ``argv``: a user error is one sentence
    on stderr and exit 2, Ctrl-C exit 130, a closed pipe exit 141. A plugin's module may call it from
    its own ``__main__`` (``python -m measurement.perf`` where no entry point is installed)."""
    module = importlib.import_module(module_name)
    sub_parser = Parser(prog=f"craft {command}", description=description)
    module.add_arguments(sub_parser)
    add_verbosity(sub_parser)
    args = sub_parser.parse_args(argv)
    if threading.current_thread() is threading.main_thread() and signal.getsignal(signal.SIGINT) is signal.SIG_IGN:
        # A shell that starts a program in the background (``cmd &`` in a script) ignores SIGINT for it, and
        # Python then never raises KeyboardInterrupt: Ctrl-C (or kill -INT) would be silently ignored.
        signal.signal(signal.SIGINT, signal.default_int_handler)
    if hasattr(signal, "SIGUSR2") and sys.__stderr__ is not None:
        # ``kill -USR2 PID`` prints where every thread is, to the process's own stderr (Ray Tune owns SIGUSR1).
        with contextlib.suppress(OSError, ValueError):
            faulthandler.register(signal.SIGUSR2, file=sys.__stderr__, all_threads=True)
    configure_logging(verbosity + getattr(args, "quiet", 0) - getattr(args, "verbose", 0))
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

"""``craft plot``: render result figures (accuracy versus shots or queries, Optuna studies) as PNG, PDF or SVG files."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from benchmark.errors import UserError
from benchmark.report.plots import KINDS


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("results", nargs="?", help="results folder or Parquet file (for shots and queries)")
    parser.add_argument("--kind", choices=KINDS, required=True, help="which figure")
    parser.add_argument("--out", type=Path, required=True, metavar="DIR", help="folder to write the figure files in")
    parser.add_argument("--format", default="png", dest="formats", metavar="png,pdf,svg",
                        help="file formats, comma-separated (default: png, at 300 dpi; pdf and svg are vector)")
    parser.add_argument("--backbone", help="only this backbone")
    parser.add_argument("--shots", type=int, nargs="+", metavar="K", help="only these shots (queries)")
    parser.add_argument("--datasets", nargs="+", metavar="NAME", help="dataset keys or suite names")
    parser.add_argument("--storage", help="Optuna storage (optuna): a JournalFileStorage path or an RDB URL")


def run(args: argparse.Namespace) -> int:
    import matplotlib

    matplotlib.use("Agg")
    from benchmark.report import plots

    formats = plots.check_formats([f.strip() for f in args.formats.split(",") if f.strip()] or [""])
    _check_out(args.out)
    if args.kind == "optuna":
        if not args.storage:
            raise UserError("--kind optuna needs --storage (a JournalFileStorage path or an RDB URL)")
        written = plots.plot_optuna(args.storage, args.out, on_skip=lambda m: print(f"skipped: {m}", file=sys.stderr),
                                     formats=formats)
    else:
        if not args.results:
            raise UserError(f"--kind {args.kind} needs a results folder (RESULTS)")
        from benchmark.report.load import load_results

        df = load_results(args.results)
        if args.kind == "shots":
            if args.shots:
                raise UserError("--shots applies to --kind queries; the shots figure shows every shots value")
            written = plots.plot_shots(df, args.out, datasets=args.datasets, backbone=args.backbone, formats=formats)
        else:
            written = plots.plot_queries(df, args.out, datasets=args.datasets, backbone=args.backbone, shots=args.shots,
                                         formats=formats)
    for path in written:
        print(path)
    return 0


def _check_out(out: Path) -> None:
    """``--out`` is a folder or can become one: neither it nor a folder above it is a file."""
    above = out
    while not above.exists() and above != above.parent:
        above = above.parent
    if above.exists() and not above.is_dir():
        where = "is a file" if above == out else f"lies under {above}, a file"
        raise UserError(f"--out {out} {where}; give a folder for the figure files")

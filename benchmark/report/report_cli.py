"""``craft report RESULTS --out report.html``: one self-contained HTML file of a results folder
(:mod:`benchmark.report.html_report`), written atomically: a failed run leaves the old file as it was."""

from __future__ import annotations

import argparse
from pathlib import Path

from benchmark.errors import UserError


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("results", help="results folder (local path or pyarrow URI)")
    parser.add_argument("--out", type=Path, required=True, metavar="FILE.html", help="the HTML file to write")
    parser.add_argument("--group-by", nargs="+", metavar="KEY",
                        help="one table row per value of these columns (budget, hparams.KEY, ...), as craft table")
    parser.add_argument("--title", help="the report's title (default: the results folder's name)")


def run(args: argparse.Namespace) -> int:
    import pyarrow.fs as pafs

    from benchmark.files import write_atomic
    from benchmark.report.html_report import build_report
    from benchmark.results.store import resolve

    if args.out.is_dir():
        raise UserError(f"--out {args.out} is a folder; give a file path, e.g. {args.out / 'report.html'}")
    above = args.out.parent
    while not above.exists() and above != above.parent:
        above = above.parent
    if not above.is_dir():
        raise UserError(f"--out {args.out} lies under {above}, a file; give a file path in a folder")
    fs, base = resolve(args.results)
    if fs.get_file_info(base).type != pafs.FileType.Directory:
        raise UserError(f"results folder {args.results} does not exist or is not a folder")
    text = build_report(args.results, group_by=args.group_by, title=args.title)
    try:
        write_atomic(args.out, lambda stream: stream.write(text.encode("utf-8")))
    except OSError as exc:
        raise UserError(f"cannot write --out {args.out}: {exc.strerror or exc}") from None
    print(args.out)
    return 0

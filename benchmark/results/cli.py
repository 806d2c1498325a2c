"""``craft results RESULTS``: what a results folder holds, every result file verified.

Counts the cells done and failed, and names each damaged result file (unreadable, truncated,
empty, failing its page checksums, or with rows of another cell) with why. ``craft bench``
runs a damaged file's cell again by itself (moving the file aside first); ``--move-aside``
does that step now. Exit status 1 when a damaged file is left in place.
"""

from __future__ import annotations

import argparse


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("results", help="results folder or URI (s3://bucket/prefix)")
    parser.add_argument("--move-aside", action="store_true",
                        help="rename damaged files to .<name>.damaged-<time> now (kept, never read), so their cells count as to run")


def run(args: argparse.Namespace) -> int:
    from benchmark.errors import UserError
    from benchmark.results.store import move_aside, resolve, scan_cells, stray_temporaries

    fs, base = resolve(args.results)
    import pyarrow.fs as pafs

    if fs.get_file_info(base).type != pafs.FileType.Directory:
        raise UserError(f"results folder {args.results} does not exist or is not a folder")
    status, damaged = scan_cells(args.results)
    done = sum(1 for s in status.values() if s == "ok")
    print(f"{args.results}: {done} cells done, {len(status) - done} failed, {len(damaged)} damaged result file(s)"
          f", {len(stray_temporaries(args.results))} temporary file(s)")
    for path, why in sorted(damaged.items()):
        print(f"damaged: {path}: {why}")
    if damaged and args.move_aside:
        for path, new in move_aside(args.results, sorted(damaged)).items():
            print(f"moved aside: {path} -> {new}")
        return 0
    if damaged:
        print("craft bench runs these cells again (moving each file aside first); --move-aside does that step now")
        return 1
    return 0

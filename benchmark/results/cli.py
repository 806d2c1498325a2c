"""``craft results RESULTS``: what a results folder holds, every result file verified.

Counts the cells done and failed and what they cost (queries, wall hours, GPU hours: sums of what
the rows record), lists them per backbone, method, dataset and shots, names each failed cell with
the last line of its error, and each damaged result file (unreadable, truncated, empty, failing
its page checksums, or with rows of another cell) with why. ``craft bench`` runs a damaged file's
cell again by itself (moving the file aside first); ``--move-aside`` does that step now. ``--tidy``
moves logs of the older layout (beside the results) under ``_logs/``. ``--config`` (added by
:mod:`benchmark.sweep.status_cli`, which plans) says what is left to run of a sweep.
Exit status 1 when a damaged file is left in place.
"""

from __future__ import annotations

import argparse
from collections import Counter

from benchmark.results.summary import FolderSummary


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("results", help="results folder or URI (s3://bucket/prefix)")
    parser.add_argument("--move-aside", action="store_true",
                        help="rename damaged files to .<name>.damaged-<time> now (kept, never read), so their cells count as to run")
    parser.add_argument("--tidy", action="store_true",
                        help="move logs of the older layout (<cell_id>.log beside the results) under _logs/, "
                             "so that pandas and pyarrow open the folder as it is")


def run(args: argparse.Namespace) -> int:
    from benchmark.errors import UserError
    from benchmark.results.store import move_aside, resolve, tidy_logs
    from benchmark.results.summary import summarize

    fs, base = resolve(args.results)
    import pyarrow.fs as pafs

    if fs.get_file_info(base).type != pafs.FileType.Directory:
        raise UserError(f"results folder {args.results} does not exist or is not a folder")
    if args.tidy:
        print(f"moved {len(tidy_logs(args.results))} log(s) under _logs/")
    found = summarize(args.results)
    print(format_summary(args.results, found))
    damaged = found.damaged
    if damaged and args.move_aside:
        for path, new in move_aside(args.results, sorted(damaged)).items():
            print(f"moved aside: {path} -> {new}")
        return 0
    if damaged:
        print("craft bench runs these cells again (moving each file aside first); --move-aside does that step now")
        return 1
    return 0


def format_summary(where: str, found: FolderSummary) -> str:
    """The report: counts and totals, a line per (backbone, method, dataset, shots), failures, damaged files."""
    done, failed = found.with_status("ok"), found.with_status("failed")
    lines = [f"{where}: {len(done)} cells done, {len(failed)} failed, {len(found.damaged)} damaged result file(s)"
             f", {len(found.temporaries)} temporary file(s)"]
    if done:
        queries, _ = found.total("queries")
        wall, n_wall = found.total("wall_s")
        gpu, n_gpu = found.total("gpu_s")
        lines.append(f"done cells used {queries:,.0f} queries, {wall / 3600:.3f} wall hours "
                     f"({n_wall} of {len(done)} record it), {gpu / 3600:.3f} GPU hours ({n_gpu} of {len(done)} record it)")
    sweeps = found.sweeps()
    if any(sweeps):
        lines.append("sweeps: " + "; ".join(f"{name or 'not recorded (older rows)'}: {n} cells"
                                             for name, n in sweeps.most_common()))
    groups: dict[tuple, Counter] = {}
    for c in sorted(found.cells.values(), key=lambda c: (c.backbone, c.method, c.dataset, c.shots)):
        groups.setdefault((c.backbone, c.method, c.dataset, str(c.shots)), Counter())[c.status] += 1
    if groups:
        header = ("backbone", "method", "dataset", "shots", "done", "failed")
        rows = [(*key, str(g["ok"]), str(g["failed"])) for key, g in groups.items()]
        lines += text_columns(header, rows, left=3)
    lines += [f"failed: {c.label()} ({c.cell_id}): {c.error}" for c in failed]
    lines += [f"damaged: {path}: {why}" for path, why in sorted(found.damaged.items())]
    return "\n".join(lines)


def text_columns(header: tuple[str, ...], rows: list[tuple[str, ...]], left: int) -> list[str]:
    """Aligned text columns: the first ``left`` left-aligned, the others right-aligned."""
    widths = [max(len(r[i]) for r in [header, *rows]) for i in range(len(header))]
    return ["  ".join(v.ljust(w) if i < left else v.rjust(w) for i, (v, w) in enumerate(zip(r, widths)))
            for r in [header, *rows]]

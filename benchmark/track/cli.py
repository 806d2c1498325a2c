"""``craft export mlflow[:URI]|wandb[:PROJECT] RESULTS``: log a results folder already run to MLflow or W&B.

The same runs ``--track`` logs during ``craft bench`` and ``craft tune`` (:mod:`benchmark.track.trackers`),
one per cell, offline by default (MLflow's file store ``RESULTS/_mlruns``, W&B offline runs under
``RESULTS/_wandb``). Cells already in the store (same cell id and status) are skipped, so an export
after a sweep that tracked, or a second export, adds only what is new.
"""

from __future__ import annotations

import argparse


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("to", metavar="mlflow[:URI]|wandb[:PROJECT]",
                        help="where to log: MLflow (URI or folder; default RESULTS/_mlruns, a file store) or W&B "
                             "(project; default craft-bench, offline under RESULTS/_wandb unless WANDB_MODE is set)")
    parser.add_argument("results", help="results folder (local path or pyarrow URI)")


def run(args: argparse.Namespace) -> int:
    import pyarrow.fs as pafs

    from benchmark.errors import UserError
    from benchmark.results.store import resolve
    from benchmark.track.trackers import export_folder, parse_track

    spec = parse_track(args.to, "craft export")
    fs, base = resolve(args.results)
    if fs.get_file_info(base).type != pafs.FileType.Directory:
        raise UserError(f"results folder {args.results} does not exist or is not a folder")
    logged, skipped, where = export_folder(spec, args.results)
    print(f"logged {logged} cell(s), {skipped} already there, to {where}")
    return 0

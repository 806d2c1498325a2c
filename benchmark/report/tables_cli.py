"""``craft table``: render a results table (few-shot, shift, vs-paper, cost, claims, compare) as Markdown, LaTeX, CSV or HTML.

``--where`` keeps the rows a pandas query selects and ``--group-by`` makes runs that differ in the
named columns (``budget``, ``hparams.KEY``, ``precision``, ...) rows of their own, so that an
ablation or a budget sweep renders instead of being refused; ``--kind compare`` takes two folders.
"""

from __future__ import annotations

import argparse
import contextlib
from pathlib import Path

from benchmark.errors import UserError
from benchmark.report.published import PUBLISHED_SOURCE, PUBLISHED_TABLES, published_results
from benchmark.report.render import FORMATS, render_table
from benchmark.report.tables import KINDS


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("results", nargs="*", metavar="RESULTS",
                        help="results folder or Parquet file (local path or pyarrow URI); two for --kind compare (A B)")
    parser.add_argument("--kind", choices=KINDS, default="few-shot", help="which table (default: few-shot)")
    parser.add_argument("--format", choices=FORMATS, default="md", dest="fmt", help="output format (default: md)")
    parser.add_argument("--backbone", help="only this backbone (e.g. RN50, ViT-B-16)")
    parser.add_argument("--shots", type=int, nargs="+", metavar="K", help="only these shots (zero-shot rows stay)")
    parser.add_argument(
        "--datasets", nargs="+", metavar="NAME", help="dataset keys or suite names (e.g. coop11, builtin)"
    )
    parser.add_argument(
        "--published", action="store_true", help="the few-shot or shift table from the published numbers alone"
    )
    parser.add_argument("--group-by", nargs="+", metavar="KEY",
                        help="one row per value of these columns: hparams.KEY (a hyperparameter), budget, backbone, "
                             "precision, protocol, config_hash, ... (runs differing only in them are otherwise refused)")
    parser.add_argument("--where", metavar="EXPR",
                        help="keep only the rows this pandas query selects, e.g. 'budget <= 2000' or "
                             "'`hparams.sigma` == 0.5' (backticks around hparams.KEY)")
    parser.add_argument("--cost", action="store_true",
                        help="end the table with its cost line: runs, queries, wall and GPU hours, as the runs record them")
    parser.add_argument("--out", type=Path, metavar="FILE", help="write the table to FILE instead of standard output")


def run(args: argparse.Namespace) -> int:
    if args.out is not None and args.out.is_dir():  # before reading anything
        raise UserError(f"--out {args.out} is a folder; give a file path, e.g. {args.out / ('table.' + args.fmt)}")
    if args.out is not None:
        above = args.out.parent
        while not above.exists() and above != above.parent:
            above = above.parent
        if not above.is_dir():
            raise UserError(f"--out {args.out} lies under {above}, a file; give a file path in a folder")
    wanted = 2 if args.kind == "compare" else 1
    if args.results and len(args.results) != wanted:
        raise UserError(f"--kind {args.kind} takes {'two results folders (A B)' if wanted == 2 else 'one results folder'}, "
                        f"got {len(args.results)}: {' '.join(args.results)}")
    pair: dict[str, object] = {}  # compare's second folder and the names of both
    if args.published:
        if args.results:
            raise UserError("pass RESULTS or --published, not both")
        if args.kind not in PUBLISHED_TABLES:
            raise UserError(f"--published renders only the {' and '.join(PUBLISHED_TABLES)} tables")
        df, source = published_results(args.kind), PUBLISHED_SOURCE
    elif args.results:
        from benchmark.report.aggregate import where
        from benchmark.report.load import load_results

        frames = [where(load_results(path), args.where) for path in args.results]
        df, source = frames[0], None
        if wanted == 2:
            pair = {"other": frames[1], "names": tuple(args.results)}
    else:
        raise UserError("pass a results folder (RESULTS), or --published for the paper's numbers")
    text = render_table(
        df, args.kind, args.fmt, backbone=args.backbone, shots=args.shots, datasets=args.datasets, source=source,
        group_by=args.group_by, cost_line=args.cost, **pair,
    )
    if args.out:
        if args.out.is_dir():
            raise UserError(f"--out {args.out} is a folder; give a file path, e.g. {args.out / ('table.' + args.fmt)}")
        try:
            args.out.parent.mkdir(parents=True, exist_ok=True)
            args.out.write_text(text, encoding="utf-8")
        except OSError as exc:
            with contextlib.suppress(OSError):  # no partial table left behind (none if no folder could hold it)
                args.out.unlink(missing_ok=True)
            raise UserError(f"cannot write --out {args.out}: {exc.strerror or exc}") from None
    else:
        print(text, end="")
    return 0

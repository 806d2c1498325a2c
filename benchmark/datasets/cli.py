"""``craft datasets list [--suite S]`` and ``craft datasets check --root DIR [NAMES...]``.

Data roots follow CoOp's folder layout (:data:`COOP_DATASETS_MD`): ``list`` shows each dataset's
folder under the root, as CoOp names it.
"""

from __future__ import annotations

import argparse

from benchmark.datasets.registry import SUITES, list_datasets

COOP_DATASETS_MD = "https://github.com/KaiyangZhou/CoOp/blob/main/DATASETS.md"


def _verify_count(text: str) -> int | None:
    if text == "all":
        return None
    if not text.isdigit():
        raise argparse.ArgumentTypeError(f"expected a number of images per split or 'all', got {text!r}")
    return int(text)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    sub = parser.add_subparsers(dest="action", metavar="ACTION", required=True, help="list or check")
    ls = sub.add_parser("list", help="list the registry's datasets")
    ls.add_argument("--suite", choices=SUITES, help="only the datasets of this suite")
    check = sub.add_parser("check", help="check a data root: classes, images per split, every problem")
    check.add_argument("--root", required=True,
                       help=f"the folder that holds the dataset folders, in CoOp's layout ({COOP_DATASETS_MD})")
    check.add_argument("names", nargs="*", metavar="NAME", help="dataset keys (default: all 15)")
    check.add_argument(
        "--verify-images", type=_verify_count, default=3, metavar="N|all",
        help="open the first N images of each split, or all of them (default: 3)",
    )


def _table(rows: list[list[str]]) -> str:
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    return "\n".join("  ".join(c.ljust(w) for c, w in zip(row, widths)).rstrip() for row in rows)


def _list(suite: str | None) -> int:
    rows = [["key", "name", "folder", "classes", "test images", "splits", "suites", "template"]]
    for s in list_datasets(suite):
        splits = "test" if s.test_only else "train/val/test"
        folder = f"{s.folder}/" if s.folder else "(built in)"
        rows.append([s.key, s.name, folder, str(s.classes), str(s.test_images), splits, " ".join(s.suites), s.template])
    print(_table(rows))
    print(f"\nfolder: under the data root (--root, a config's root), as CoOp lays the datasets out ({COOP_DATASETS_MD}); "
          "the built-in suite's are generated under $CRAFT_BENCH_CACHE/builtin")
    return 0


def _check(root: str, names: list[str], verify_images: int | None) -> int:
    from benchmark.datasets.check import check_root
    from benchmark.errors import UserError

    if not root.strip():  # an unset shell variable: '' would check the current folder
        raise UserError(f"--root is empty ({root!r}); give the folder that holds the dataset folders")
    keys = names or [s.key for s in list_datasets("all15")]
    reports = check_root(root, keys, verify_images)
    width = max(len(k) for k in keys)
    for r in reports:
        line = f"{r.key.ljust(width)}  {(r.status if r.ok else r.status.upper()).ljust(7)}"
        if r.counts:
            val = "val = test" if r.val_is_test else f"val {r.counts['val']}"
            splits = f"train {r.counts['train']}, {val}, " if r.counts["train"] else ""
            line += f"  {r.classes} classes; {splits}test {r.counts['test']}"
        print(line.rstrip())
        for problem in r.problems:
            print(f"{'':{width}}  problem: {problem}")
        for note in r.notes:
            print(f"{'':{width}}  note: {note}")
    bad = [r.key for r in reports if not r.ok]
    print(f"{len(reports) - len(bad)} of {len(reports)} datasets ok" + (f"; not ok: {', '.join(bad)}" if bad else ""))
    return 1 if bad else 0


def run(args: argparse.Namespace) -> int:
    if args.action == "list":
        return _list(args.suite)
    return _check(args.root, args.names, args.verify_images)

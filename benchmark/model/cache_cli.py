"""``craft cache list|verify|clear``: see and manage the image-feature cache (:mod:`benchmark.model.feature_cache`)."""

from __future__ import annotations

import argparse
import math
import time
from pathlib import Path

from benchmark.errors import UserError
from benchmark.model.feature_keys import KEY_VERSION
from benchmark.model.feature_cache import Entry, check_entry, default_cache_root, entries, remove_entry


def _days(text: str) -> float:
    try:
        days = float(text)
    except ValueError:
        days = math.nan
    if not days >= 0 or math.isinf(days):
        raise argparse.ArgumentTypeError(f"expected a number of days of 0 or more, got {text!r}")
    return days


def add_arguments(parser: argparse.ArgumentParser) -> None:
    where = argparse.ArgumentParser(add_help=False)
    where.add_argument(
        "--dir", type=Path, metavar="DIR",
        help="the cache folder (default: $CRAFT_BENCH_CACHE/features, else ~/.cache/craft-bench/features)",
    )
    sub = parser.add_subparsers(dest="action", metavar="ACTION", required=True)
    sub.add_parser("list", parents=[where], help="list the entries: dataset, split, model, images, size, age")
    verify = sub.add_parser(
        "verify", parents=[where], help="read every entry back and check it against its sidecar; exit 1 if any is broken"
    )
    verify.add_argument("--fix", action="store_true", help="remove the broken entries (they are recomputed when next needed)")
    clear = sub.add_parser("clear", parents=[where], help="remove entries: all of them, or those the filters select")
    clear.add_argument("--older-than", type=_days, metavar="DAYS", help="only entries last written more than DAYS days ago")
    clear.add_argument("--dataset", metavar="KEY", help="only entries of this dataset key (e.g. dtd, imagenet_a)")
    clear.add_argument(
        "--old-keys", action="store_true",
        help="only entries made under an earlier key format, which are never read again",
    )


def _folder(arg: Path | None) -> Path | None:
    """The cache folder to read; None when the default one does not exist yet (no entries)."""
    root = arg if arg is not None else default_cache_root()
    if root.is_dir():
        return root
    if arg is None and not root.exists():
        return None
    what = "is not a folder" if root.exists() else "does not exist"
    raise UserError(f"cache folder {root} {what}; pass --dir with a feature cache folder")


def _mb(n: int) -> str:
    return f"{n / 1e6:.1f} MB"


def _age(mtime: float, now: float) -> str:
    s = max(0.0, now - mtime)
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if s >= size:
            return f"{s / size:.0f}{unit}"
    return f"{s:.0f}s"


def _table(rows: list[list[str]]) -> str:
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    return "\n".join("  ".join(c.ljust(w) for c, w in zip(row, widths)).rstrip() for row in rows)


def _row(e: Entry, now: float) -> list[str]:
    f = e.fields or {}
    get = lambda k: "" if f.get(k) is None else str(f[k])  # noqa: E731
    shots = f"{get('shots')}/{get('seed')}" if "shots" in f else ""
    return [e.key[:12], get("dataset"), get("split"), get("aug"), shots, get("backbone"), get("precision"),
            get("n"), _mb(e.bytes), _age(e.mtime, now), get("root")]


def _list(root: Path | None) -> int:
    found = entries(root) if root is not None else []
    now = time.time()
    rows = [["key", "dataset", "split", "aug", "shots/seed", "backbone", "precision", "images", "size", "age", "root"]]
    rows += [_row(e, now) for e in sorted(found, key=lambda e: -e.mtime)]
    if len(rows) > 1:
        print(_table(rows))
    old = sum(map(_old_key, found))
    note = f"; {old} made under an earlier key format, never read again (clear --old-keys removes them)" if old else ""
    print(f"{len(found)} entries, {_mb(sum(e.bytes for e in found))} in {root or default_cache_root()}{note}")
    return 0


def _verify(root: Path | None, fix: bool) -> int:
    found = entries(root) if root is not None else []
    broken = [(e, problem) for e in found if (problem := check_entry(e)) is not None]
    for e, problem in broken:
        print(f"{'removed' if fix else 'broken'}: {', '.join(p.name for p in e.paths())}: {problem}")
        if fix:
            remove_entry(e)
    verb = "removed" if fix else "broken"
    print(f"{len(found)} entries checked, {len(broken)} {verb}" + ("" if fix or not broken else "; --fix removes them"))
    return 1 if broken and not fix else 0


def _old_key(e: Entry) -> bool:
    return e.fields is not None and e.fields.get("key_version") != KEY_VERSION


def _clear(root: Path | None, older_than: float | None, dataset: str | None, old_keys: bool) -> int:
    if dataset is not None:
        from benchmark.datasets.registry import get_spec

        get_spec(dataset)  # an unknown key is an error that lists the valid ones
    found = entries(root) if root is not None else []
    cutoff = time.time() - older_than * 86400 if older_than is not None else None
    chosen = [e for e in found if (cutoff is None or e.mtime < cutoff)
              and (dataset is None or (e.fields or {}).get("dataset") == dataset) and (not old_keys or _old_key(e))]
    for e in chosen:
        remove_entry(e)
    print(f"removed {len(chosen)} of {len(found)} entries ({_mb(sum(e.bytes for e in chosen))}) from "
          f"{root or default_cache_root()}")
    return 0


def run(args: argparse.Namespace) -> int:
    root = _folder(args.dir)
    try:
        if args.action == "list":
            return _list(root)
        if args.action == "verify":
            return _verify(root, args.fix)
        return _clear(root, args.older_than, args.dataset, args.old_keys)
    except PermissionError as exc:
        raise UserError(f"cache folder {root} cannot be read or changed: {exc.strerror} ({exc.filename})") from None

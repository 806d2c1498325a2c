"""What a feature-cache key costs: one ``stat`` per image (default) against a sha256 of each file.

Run from the repository root:

    python -m measurement.key_cost [--files 3000] [--kb 110] [--root DIR --dataset KEY --split test]

Without ``--root`` it writes ``--files`` random files of ``--kb`` KB each (110 KB: ImageNet's mean
JPEG) in CoOp's layout under a temporary folder; with ``--root`` it keys a real split. Times are
with the files in the page cache (the second of two passes), the state on a machine that just
listed them; a cold network file system is slower per ``stat``.
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time
from pathlib import Path

from benchmark.datasets.types import DatasetSplits, Item
from benchmark.model.feature_keys import image_set_key

IMAGENET_TEST = 50_000


def _synthetic_split(folder: Path, files: int, kb: int) -> DatasetSplits:
    items = []
    for i in range(files):
        rel = f"c{i % 100:03d}/{i:06d}.jpg"
        (folder / rel).parent.mkdir(parents=True, exist_ok=True)
        (folder / rel).write_bytes(os.urandom(kb * 1024))
        items.append(Item(rel, i % 100, f"class {i % 100}"))
    return DatasetSplits("synthetic", [f"class {c}" for c in range(100)], "{}", test=items, image_root=str(folder))


def _time(ds: DatasetSplits, items: list[Item], how: str, repeats: int) -> float:
    times = []
    for _ in range(repeats + 1):  # the first pass warms the page cache
        start = time.perf_counter()
        image_set_key(ds, items, "T", {}, how)
        times.append(time.perf_counter() - start)
    return statistics.median(times[1:])


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--files", type=int, default=3000, help="files to write when no --root is given")
    p.add_argument("--kb", type=int, default=110, help="size of each written file in KB")
    p.add_argument("--root", help="a data root to key instead of written files")
    p.add_argument("--dataset", default="imagenet", help="dataset key under --root")
    p.add_argument("--split", default="test", help="split to key under --root")
    p.add_argument("--repeats", type=int, default=3, help="timed passes per fingerprint (median)")
    args = p.parse_args()

    with tempfile.TemporaryDirectory() as tmp:
        if args.root:
            from benchmark.datasets.loaders import load_dataset

            ds = load_dataset(args.dataset, args.root)
            items = ds.split(args.split)
        else:
            ds = _synthetic_split(Path(tmp), args.files, args.kb)
            items = ds.test
        size = sum(os.stat(ds.abspath(it)).st_size for it in items)
        print(f"{len(items)} files, {size / 1e6:.0f} MB, under {ds.image_root}")
        for how in ("stat", "content"):
            t = _time(ds, items, how, args.repeats)
            per = t / len(items)
            print(f"{how:8s} {t * 1e3:9.1f} ms  {per * 1e6:8.1f} us/file  "
                  f"-> {per * IMAGENET_TEST:6.2f} s for ImageNet's {IMAGENET_TEST:,} test images")


if __name__ == "__main__":
    main()

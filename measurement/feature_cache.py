"""Feature-cache hit time versus compute time, through the engine's own image encoder.

Run from the repository root:

    python -m measurement.feature_cache [--backbone craft-tiny] [--weights random]
        [--dataset paper-shapes/dtd] [--split test] [--images 1000] [--repeats 5]

A miss decodes, preprocesses and encodes the images and writes the entry; a hit reads the
safetensors file back. Speed does not depend on the weights, so ``random`` is the default.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

import torch

from benchmark.datasets.loaders import load_dataset
from benchmark.model.engine import ClipEngine
from benchmark.model.feature_cache import FeatureCache
from benchmark.model.loading import load_model


def _recomputed() -> torch.Tensor:
    raise AssertionError("a hit recomputed the features")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--backbone", default="craft-tiny")
    p.add_argument("--weights", default="random")
    p.add_argument("--dataset", default="paper-shapes/dtd")
    p.add_argument("--root", default=None, help="data root (not needed for paper-shapes)")
    p.add_argument("--split", default="test")
    p.add_argument("--images", type=int, default=1000)
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    args = p.parse_args()

    engine = ClipEngine(load_model(args.backbone, args.weights, args.device), args.device)
    ds = load_dataset(args.dataset, args.root)
    paths = [ds.abspath(item) for item in ds.split(args.split)[: args.images]]
    fields = {"backbone": args.backbone, "weights": args.weights, "dataset": args.dataset,
              "split": args.split, "aug": "test", "n": len(paths)}

    with tempfile.TemporaryDirectory() as tmp:
        cache = FeatureCache(Path(tmp))
        start = time.perf_counter()
        feats = cache.get_or_compute(fields, lambda: engine.encode_images(paths, engine.loaded.preprocess))
        miss = time.perf_counter() - start
        hits = []
        for _ in range(args.repeats):
            start = time.perf_counter()
            again = cache.get_or_compute(fields, _recomputed)
            hits.append(time.perf_counter() - start)
        assert torch.equal(feats, again)
        size = cache.path(fields).stat().st_size

    hit = statistics.median(hits)
    print(f"{args.backbone} ({args.weights}) on {args.device}, {args.dataset} {args.split}: "
          f"{len(paths)} images -> {tuple(feats.shape)} features, {size / 1e6:.2f} MB on disk")
    print(f"compute + store (miss): {miss * 1e3:9.1f} ms  ({len(paths) / miss:8.0f} images/s)")
    print(f"read (hit, median of {args.repeats}): {hit * 1e3:6.2f} ms  ({len(paths) / hit:8.0f} images/s)")
    print(f"hit is {miss / hit:.0f}x faster than computing")


if __name__ == "__main__":
    main()

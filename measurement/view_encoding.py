"""Augmented views of a run's training images: the per-image path against the engine's, side by side.

Run from the repository root:

    python -m measurement.view_encoding [--dataset digits_noise] [--shots 16] [--views 20]
        [--backbone craft-tiny] [--weights builtin] [--aug rrc_flip]
    python -m measurement.view_encoding --crops-only [--source 500x375] [--image-size 224]

``--crops-only`` times the augmentation alone on decoded images of the ``--source`` size (random
pixels; ImageNet's photos average about 500 x 375) cropped to ``--image-size``: the CPU work a
model server's thread does for each image of a view before any GPU sees it, so the rate at which
one server can feed the paper backbones (224 px) fresh views.

CraFT's official loop augments and encodes every training image afresh each generation (200
generations at 16 shots: 32,000 images on the built-in suite). **per image** opens, decodes,
augments with torchvision's own transforms (a scalar torch draw per crop parameter), converts and
normalises each image, then encodes the batch (the harness before decoded images were kept and
crops drawn per batch); **engine** is :meth:`ClipEngine.encode_images` as a task's views call it:
decoded images from memory (:class:`DecodedImages`), the crops' boxes drawn for the batch at once
(:class:`CropAugment`) and ToTensor + Normalize on the whole batch (:func:`apply_batched`). The
two draw other crops of the same distribution (tests/test_image_batches.py checks the boxes
against torchvision's ``get_params``); the script checks that the features have the same shape and
prints images per second and the ratio.
"""

from __future__ import annotations

import argparse
import time

import torch
from torchvision import transforms as T

from benchmark.datasets.builtin import ensure_builtin_suite
from benchmark.datasets.fewshot import few_shot_splits
from benchmark.datasets.images import load_image
from benchmark.datasets.loaders import load_dataset
from benchmark.datasets.transforms import CropAugment, train_transform
from benchmark.model.engine import ClipEngine
from benchmark.model.loading import load_model
from benchmark.model.task import view_seed


def torchvision_steps(aug: CropAugment) -> T.Compose:
    """The same augmentation as torchvision's transforms, drawing from torch's global generator."""
    steps = [T.RandomResizedCrop(aug.size, scale=aug.scale, ratio=aug.ratio, interpolation=T.InterpolationMode.BICUBIC)]
    if aug.flip:
        steps.append(T.RandomHorizontalFlip(p=0.5))
    return T.Compose(steps + [T.ToTensor(), T.Normalize(mean=list(aug.mean), std=list(aug.std))])


def per_image(engine: ClipEngine, paths: list[str], transform) -> torch.Tensor:
    batch = torch.stack([transform(load_image(p)) for p in paths])
    with torch.no_grad():
        return engine.model.encode_image(batch.to(engine.device)).float()


def crops_only(args: argparse.Namespace) -> None:
    """Crops per second of ``--aug`` from ``--source``-sized images to ``--image-size``, one thread."""
    import numpy as np
    from PIL import Image

    width, height = (int(v) for v in args.source.lower().split("x"))
    rng = np.random.default_rng(0)
    images = [Image.fromarray(rng.integers(0, 256, (height, width, 3), np.uint8)) for _ in range(64)]
    aug = train_transform(args.aug, args.image_size, (0.5,) * 3, (0.5,) * 3)
    if not isinstance(aug, CropAugment):
        raise SystemExit(f"--aug {args.aug} draws no crops: nothing to time")
    t = time.perf_counter()
    for view in range(1, args.views + 1):
        aug.seeded(view).uint8(images)
    seconds = time.perf_counter() - t
    n = len(images) * args.views
    print(f"{args.aug}: {n:,} crops of {width}x{height} images to {args.image_size} px, one thread: "
          f"{seconds:.2f} s, {n / seconds:,.0f} images/s")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--dataset", default="digits_noise")
    p.add_argument("--root", default=None, help="data root (the built-in suite needs none)")
    p.add_argument("--shots", type=int, default=16)
    p.add_argument("--views", type=int, default=20)
    p.add_argument("--backbone", default="craft-tiny")
    p.add_argument("--weights", default="builtin")
    p.add_argument("--aug", default="rrc_flip")
    p.add_argument("--crops-only", action="store_true", help="time the augmentation alone (see the module's docstring)")
    p.add_argument("--source", default="500x375", help="with --crops-only: the decoded images' WIDTHxHEIGHT")
    p.add_argument("--image-size", type=int, default=224, help="with --crops-only: the crops' size")
    args = p.parse_args()
    torch.set_num_threads(1)  # as a server's thread beside other runs; the ratio is what counts
    if args.crops_only:
        crops_only(args)
        return

    if args.root is None and args.dataset.startswith("digits"):
        ensure_builtin_suite()
    fs = few_shot_splits(load_dataset(args.dataset, args.root), args.shots, seed=1)
    paths = [fs.abspath(it) for it in fs.train]
    engine = ClipEngine(load_model(args.backbone, args.weights))
    mean, std = engine.loaded.mean_std
    aug = train_transform(args.aug, engine.loaded.image_size, mean, std)
    if not isinstance(aug, CropAugment):
        raise SystemExit(f"--aug {args.aug} draws no crops: nothing to compare")
    reference = torchvision_steps(aug)
    times: dict[str, float] = {"per image": 0.0, "engine": 0.0}
    for view in range(1, args.views + 1):
        torch.manual_seed(view_seed(1, view))
        t = time.perf_counter()
        old = per_image(engine, paths, reference)
        times["per image"] += time.perf_counter() - t
        t = time.perf_counter()
        new = engine.encode_images(paths, aug.seeded(view_seed(1, view)), normalize=False, loader=engine.decoded)
        times["engine"] += time.perf_counter() - t
        if old.shape != new.shape:
            raise SystemExit(f"view {view}: the engine's features are {tuple(new.shape)}, the per-image path's {tuple(old.shape)}")
    images = len(paths) * args.views
    print(f"{args.dataset}, {args.shots} shots: {len(paths)} training images x {args.views} views = {images:,} images, "
          f"{args.backbone}:{args.weights}, {args.aug}, one thread")
    for name, s in times.items():
        print(f"  {name:9s} {s:7.2f} s  {images / s:8.0f} images/s")
    print(f"  ratio     {times['per image'] / times['engine']:.2f}x")


if __name__ == "__main__":
    main()

"""From (dataset, shots, seed) to what a run needs: image features per split, and labels.

The few-shot training set is encoded once with the official training augmentation (one
augmented pass, seeded by the run's seed), validation and test with open_clip's own
preprocessing. Further augmented views of the training set (the official refinement module's
data, a fresh one each generation) are encoded when a run first asks for them
(:class:`benchmark.model.engine.TrainViews`), seeded by the run's seed and the view's number. Features
go through the disk cache, keyed by everything that decides them
(:func:`benchmark.model.feature_keys.image_set_key`: the model, precision, transform, data root and
each image file's size and modification time; a view's number and whether it is raw).
Evaluation-only datasets (the ImageNet variants) are added as image sets named
``test:<key>``, scored in the training dataset's label space.
"""

from __future__ import annotations

import functools
import hashlib
import os
from typing import Any

import torch

from benchmark.datasets.check import require_images
from benchmark.datasets.fewshot import few_shot_splits
from benchmark.datasets.loaders import load_dataset
from benchmark.datasets.registry import get_spec, scored_in, train_aug_of
from benchmark.datasets.transforms import apply_held, aug_varies, pixel_range, seeded, train_transform
from benchmark.datasets.types import DatasetSplits, Item
from benchmark.model.engine import ClipEngine, TaskData, TrainViews
from benchmark.errors import UserError
from benchmark.files import file_sha256
from benchmark.model.feature_keys import describe_transform, image_set_key
from benchmark.model.feature_cache import FeatureCache
from benchmark.model.pixels import PixelSet
from benchmark.datasets.task_spec import TaskSpec


def weights_id(engine: ClipEngine) -> str | None:
    """Identifies the weights in feature-cache keys: a pretrained tag; a checkpoint path with its
    size and modification time; the shipped model's content hash (a release may retrain it);
    None for random weights (each process draws its own: never cached)."""
    from benchmark.model.builtin import builtin_model_paths
    from benchmark.model.loading import BUILTIN, RANDOM

    w = engine.loaded.weights
    if w == RANDOM:
        return None
    if w == BUILTIN:
        return f"{BUILTIN}:{file_sha256(builtin_model_paths()[1])[:16]}"
    if os.path.isfile(w):
        st = os.stat(w)
        return f"{os.path.realpath(w)}:{st.st_size}:{st.st_mtime_ns}"
    return w


def view_seed(seed: int, view: int) -> int:
    """The augmentation seed of view ``view`` of a run's training images; view 0 is the run's seed."""
    if view == 0:
        return seed
    return int.from_bytes(hashlib.sha256(f"{seed}:{view}".encode()).digest()[:7], "big")


def load_task_splits(spec: TaskSpec) -> tuple[DatasetSplits, list[DatasetSplits]]:
    """The few-shot dataset and the evaluation-only datasets, checked before any model work."""
    ds_spec = get_spec(spec.dataset)
    if ds_spec.test_only:
        raise UserError(f"dataset {spec.dataset} is test-only; train on {ds_spec.parent} and list it under eval_datasets")
    full = load_dataset(spec.dataset, spec.root)
    fs = few_shot_splits(full, spec.shots, spec.seed)
    splits = ("train", "val", "test") if spec.eval_test else ("train", "val")
    require_images(fs, splits)
    extra = []
    for key in spec.eval_datasets if spec.eval_test else ():
        if not scored_in(key, spec.dataset):
            raise UserError(f"eval dataset {key} is not scored in {spec.dataset}'s label space")
        ds = load_dataset(key, spec.root)
        if not get_spec(key).parent and ds.classnames != full.classnames:
            raise UserError(f"eval dataset {key} has other class names than {spec.dataset}: it cannot be scored in its label space")
        require_images(ds, ("test",))
        extra.append(ds)
    return fs, extra


def prepare_task(engine: ClipEngine, spec: TaskSpec, cache: FeatureCache | None = None) -> TaskData:
    """Encode (or read from the cache) the images of ``spec`` and collect labels."""
    fs, extra = load_task_splits(spec)
    wid = weights_id(engine)
    cache = cache if wid is not None else None
    # Features encoded under bf16 autocast are other features than fp32 ones.
    base = {"backbone": engine.loaded.backbone, "weights": wid, "dataset": spec.dataset,
            "precision": "bf16" if engine.bf16 else "fp32"}
    encoded = 0

    def source(items: list[Item], ds: DatasetSplits, transform, fields: dict,
               normalize: bool) -> tuple[list[str], dict[str, Any] | None]:
        """The image paths of ``items`` and their cache fields (None without a cache)."""
        paths = [ds.abspath(it) for it in items]
        if cache is None:  # the key stats (or hashes) every image: not needed without a cache
            return paths, None
        fields = {**base, **fields, **({"raw": True} if not normalize else {})}
        return paths, image_set_key(ds, items, describe_transform(transform), fields, cache.fingerprint)

    def encode_paths(paths: list[str], key: dict[str, Any] | None, transform, seed: int | None,
                     normalize: bool) -> tuple[torch.Tensor, int]:
        """Features of the images at ``paths`` (from the cache under ``key``, if given) and the number
        of images encoded. The training images (``seed`` given: an augmented pass) stay decoded in the
        engine's memory for the next view."""
        newly = 0

        def compute() -> torch.Tensor:
            nonlocal newly
            newly = len(paths)
            return engine.encode_images(paths, seeded(transform, seed), normalize=normalize,
                                        loader=engine.decoded if seed is not None else None)

        feats = cache.get_or_compute(key, compute) if key is not None else compute()
        return feats.to(engine.device), newly

    def encode(items: list[Item], ds: DatasetSplits, transform, fields: dict, seed: int | None,
               normalize: bool = True) -> tuple[torch.Tensor, int]:
        return encode_paths(*source(items, ds, transform, fields, normalize), transform, seed, normalize)

    def encode_counted(*args) -> torch.Tensor:
        nonlocal encoded
        feats, newly = encode(*args)
        encoded += newly
        return feats

    mean, std = engine.loaded.mean_std
    aug = train_aug_of(spec.dataset, spec.train_aug)
    preprocess = engine.loaded.preprocess
    train_aug = train_transform(aug, engine.loaded.image_size, mean, std)
    train_fields = {"split": "train", "shots": spec.shots, "seed": spec.seed, "aug": aug}
    features = {
        "train": encode_counted(fs.train, fs, train_aug, train_fields, spec.seed),
        "val": encode_counted(fs.val, fs, preprocess, {"split": "val", "shots": spec.shots, "seed": spec.seed, "aug": "test"}, None),
    }

    # The training set's paths and cache fields, worked out at its first view: the views (one per
    # epoch, all from the images decoded at the first) differ only in their seed and "view" field.
    view_source = functools.cache(lambda: source(fs.train, fs, train_aug, train_fields, False))

    def encode_view(view: int) -> tuple[torch.Tensor, int]:
        paths, key = view_source()
        key = {**key, "view": view} if key is not None else None
        return encode_paths(paths, key, train_aug, view_seed(spec.seed, view), False)

    labels = {s: torch.tensor([it.label for it in fs.split(s)]) for s in ("train", "val")}
    subsets: dict[str, list[int]] = {}
    if spec.eval_test:
        features["test"] = encode_counted(fs.test, fs, preprocess, {"split": "test", "aug": "test"}, None)
        labels["test"] = torch.tensor([it.label for it in fs.test])
    for ds in extra:
        name = f"test:{ds.key}"
        features[name] = encode_counted(ds.test, ds, preprocess, {"dataset": ds.key, "split": "test", "aug": "test"}, None)
        labels[name] = torch.tensor([it.label for it in ds.test])
        if ds.class_subset is not None:
            subsets[name] = list(ds.class_subset)
    views = TrainViews(encode_view, varies=aug_varies(aug))
    sources = {"train": (fs.train, fs, train_aug, spec.seed), "val": (fs.val, fs, preprocess, None)}
    if spec.eval_test:
        sources["test"] = (fs.test, fs, preprocess, None)
    for ds in extra:
        sources[f"test:{ds.key}"] = (ds.test, ds, preprocess, None)

    def load_pixels(split: str) -> PixelSet:
        """An image set's preprocessed images: the training set's augmented pass drawn with the run's
        seed, in the order its features were encoded, so that a prompt-free query sees those images."""
        from benchmark.datasets.images import load_image

        items, ds, transform, seed = sources[split]
        loader = engine.decoded if seed is not None else load_image
        # uint8 where the transform splits, else its float outputs (PixelSet takes either)
        return PixelSet(*apply_held(seeded(transform, seed), [loader(ds.abspath(it)) for it in items])).placed(engine.device)

    return TaskData(classnames=list(fs.classnames), template=fs.template, features=features, train_views=views,
                    labels=labels, class_subsets=subsets, images_encoded=encoded, pixel_source=load_pixels,
                    pixel_range=pixel_range(mean, std))

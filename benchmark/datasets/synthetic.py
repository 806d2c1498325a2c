"""paper-shapes: the 15 datasets at their real class counts and test sizes, with generated images.

Keys are ``paper-shapes/<key>`` (suite ``paper-shapes``); no data root is needed. Each train+test
dataset gets 16 train and 4 val items per class (enough for the paper's largest shot count) and
its real number of test items, dealt to classes in turn. ImageNet-A and -R keep a 200-class subset
of the synthetic ImageNet's label space (every fifth class), as the real ones do. Class names are
"class <n>"; images are ``synthetic://`` paths that ``images.load_image`` generates.
"""

from __future__ import annotations

from benchmark.datasets.images import synthetic_path
from benchmark.datasets.registry import DatasetSpec
from benchmark.datasets.types import DatasetSplits, Item

TRAIN_PER_CLASS = 16
VAL_PER_CLASS = 4


def _items(key: str, split: str, labels: list[int], classnames: list[str]) -> list[Item]:
    return [Item(synthetic_path(key, split, i), label, classnames[label]) for i, label in enumerate(labels)]


def load_synthetic(spec: DatasetSpec, parent: DatasetSpec | None) -> DatasetSplits:
    """The synthetic stand-in for ``spec`` (a paper-shapes row); ``parent`` is its label space's row."""
    total = parent.classes if parent else spec.classes
    classnames = [f"class {i}" for i in range(total)]
    subset = list(range(0, total, total // spec.classes))[: spec.classes] if spec.classes < total else None
    labels = subset or list(range(total))
    test = [labels[i % len(labels)] for i in range(spec.test_images)]
    ds = DatasetSplits(key=spec.key, classnames=classnames, template=spec.template, image_root="")
    ds.test = _items(spec.key, "test", test, classnames)
    if not spec.test_only:
        ds.train = _items(spec.key, "train", [c for c in labels for _ in range(TRAIN_PER_CLASS)], classnames)
        ds.val = _items(spec.key, "val", [c for c in labels for _ in range(VAL_PER_CLASS)], classnames)
    ds.class_subset = subset
    return ds

"""Plain records shared by every dataset loader: an item, the splits of a dataset."""

from __future__ import annotations

import os
from dataclasses import dataclass, field


@dataclass(frozen=True)
class Item:
    """One image: a path (absolute, or relative to ``DatasetSplits.image_root``), its label and class name."""

    path: str
    label: int
    classname: str


@dataclass
class DatasetSplits:
    """A loaded dataset: class names in label order, the zero-shot template and its splits."""

    key: str
    classnames: list[str]
    template: str
    train: list[Item] = field(default_factory=list)
    val: list[Item] = field(default_factory=list)
    test: list[Item] = field(default_factory=list)
    image_root: str = ""
    # For a test-only variant scored in its parent's label space with fewer classes (ImageNet-A/R):
    # the indices of this dataset's classes among the parent's classes.
    class_subset: list[int] | None = None
    # ImageNet's val split is its test set (CoOp); few-shot val is then drawn from train instead.
    val_is_test: bool = False

    def split(self, name: str) -> list[Item]:
        if name not in ("train", "val", "test"):
            raise KeyError(f"unknown split {name!r}; expected one of train, val, test")
        return getattr(self, name)

    def abspath(self, item: Item) -> str:
        """The path to open for ``item``: absolute and synthetic paths as they are, others under ``image_root``."""
        if "://" in item.path or os.path.isabs(item.path):
            return item.path
        return os.path.join(self.image_root, item.path)

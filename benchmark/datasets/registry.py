"""The datasets as rows of ``registry.csv`` (``loaders.load_dataset`` loads any of them).

Columns: ``layout`` picks the loader (see ``loaders.py``); ``split_file`` is the file that layout
indexes by (CoOp's split json, FGVC's ``images_variant_{split}.txt``, ImageNet's ``classnames.txt``);
``image_dir`` is where item paths start, under ``folder``; ``train_aug`` names a kind of
``transforms.train_transform``; ``role`` is ``train+test`` or ``test``; ``parent`` is the label space a
test-only variant is scored in; ``suites`` is a space-separated list.

Suites: ``coop11``, ``imagenet_shift``, ``all15`` (their union), ``builtin`` (the generated digits
suite) and ``paper-shapes`` (synthetic stand-ins for the 15 at their real sizes, keyed
``paper-shapes/<key>``; see ``synthetic.py``).
"""

from __future__ import annotations

import csv
from dataclasses import dataclass, replace
from functools import lru_cache
from importlib import resources

from benchmark.errors import UserError

SUITES = ("coop11", "imagenet_shift", "all15", "builtin", "paper-shapes")
SYNTHETIC_PREFIX = "paper-shapes/"


@dataclass(frozen=True)
class DatasetSpec:
    """One row of the registry."""

    key: str
    name: str
    folder: str
    layout: str
    split_file: str
    image_dir: str
    classes: int
    test_images: int
    template: str
    train_aug: str | None
    role: str
    parent: str | None
    suites: tuple[str, ...]

    @property
    def test_only(self) -> bool:
        return self.role == "test"


def _parse_row(row: dict[str, str]) -> DatasetSpec:
    return DatasetSpec(
        key=row["key"],
        name=row["name"],
        folder=row["folder"],
        layout=row["layout"],
        split_file=row["split_file"],
        image_dir=row["image_dir"],
        classes=int(row["classes"]),
        test_images=int(row["test_images"]),
        template=row["template"],
        train_aug=row["train_aug"] or None,
        role=row["role"],
        parent=row["parent"] or None,
        suites=tuple(row["suites"].split()),
    )


def _in_all15(spec: DatasetSpec) -> bool:
    return "coop11" in spec.suites or "imagenet_shift" in spec.suites


@lru_cache(maxsize=1)
def _registry() -> dict[str, DatasetSpec]:
    text = resources.files("benchmark.datasets").joinpath("registry.csv").read_text(encoding="utf-8")
    specs = [_parse_row(row) for row in csv.DictReader(text.splitlines())]
    synthetic = [
        replace(s, key=SYNTHETIC_PREFIX + s.key, layout="synthetic",
                parent=s.parent and SYNTHETIC_PREFIX + s.parent, suites=("paper-shapes",))
        for s in specs
        if _in_all15(s)
    ]
    return {s.key: s for s in specs + synthetic}


def list_datasets(suite: str | None = None) -> list[DatasetSpec]:
    """The registry's datasets in file order: every real and built-in one, or those of ``suite``."""
    specs = list(_registry().values())
    if suite is None:
        return [s for s in specs if s.layout != "synthetic"]
    if suite not in SUITES:
        raise UserError(f"unknown suite {suite!r}; valid suites: {', '.join(SUITES)}")
    if suite == "all15":
        return [s for s in specs if _in_all15(s)]
    return [s for s in specs if suite in s.suites]


def get_spec(key: str) -> DatasetSpec:
    """The registry row for ``key``; an unknown key is a UserError that lists the valid ones."""
    try:
        return _registry()[key]
    except KeyError:
        valid = ", ".join(s.key for s in list_datasets())
        raise UserError(
            f"unknown dataset {key!r}; valid keys: {valid} (and paper-shapes/<key> for each of the 15)"
        ) from None


def train_aug_of(dataset: str, override: str | None = None) -> str:
    """The training augmentation a run on ``dataset`` uses: ``override`` (a protocol's), else the
    dataset's own, else CraFT's ``rrc_flip``."""
    return override or get_spec(dataset).train_aug or "rrc_flip"


def scored_in(test_set: str, trained_on: str) -> bool:
    """Whether a run trained on ``trained_on`` can be scored on ``test_set``'s test split: the same
    dataset, a test-only variant of it (ImageNet's), or another dataset of the built-in suite (the
    ten digits under another shift; :func:`benchmark.model.task.load_task_splits` checks the class names)."""
    if test_set == trained_on or get_spec(test_set).parent == trained_on:
        return True
    return "builtin" in get_spec(test_set).suites and "builtin" in get_spec(trained_on).suites

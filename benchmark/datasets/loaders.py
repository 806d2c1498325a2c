"""Loading a dataset (:func:`load_dataset`): one loader per on-disk layout, each reading CoOp's exact
files (see CoOp's DATASETS.md), the synthetic paper-shapes stand-ins and the generated built-in suite.

Item paths are kept relative to ``DatasetSplits.image_root``. Every malformed input is a
``UserError`` that names the file and the place in it; a missing dataset folder is the
``MissingDataset`` subclass, so ``craft datasets check`` can tell "absent" from "broken".
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Iterable
from pathlib import Path

from benchmark.datasets.builtin import ensure_builtin_suite
from benchmark.datasets.registry import DatasetSpec, get_spec
from benchmark.datasets.synthetic import load_synthetic
from benchmark.datasets.types import DatasetSplits, Item
from benchmark.errors import UserError

SPLITS = ("train", "val", "test")
# Set to 1 to accept image paths in split files that leave the dataset's folder (absolute, or with '..').
ALLOW_OUTSIDE_ENV = "CRAFT_ALLOW_PATHS_OUTSIDE_ROOT"


def outside_allowed() -> bool:
    """Whether image paths that leave the data root are accepted (``CRAFT_ALLOW_PATHS_OUTSIDE_ROOT=1``)."""
    return os.environ.get(ALLOW_OUTSIDE_ENV, "") == "1"
ROW_FIELDS = ("image path", "label", "class name")


class MissingDataset(UserError):
    """The data root or a dataset's folder does not exist."""


def dataset_dir(spec: DatasetSpec, root: Path) -> Path:
    """``root/spec.folder``, or MissingDataset naming the expected path."""
    if not root.is_dir():
        raise MissingDataset(f"data root {root} does not exist or is not a folder")
    folder = root / spec.folder
    if not folder.is_dir():
        how = (
            "the built-in suite is generated there by benchmark.datasets.builtin.ensure_builtin_suite(root)"
            if "builtin" in spec.suites
            else "CoOp's DATASETS.md describes how to download and lay it out"
        )
        raise MissingDataset(f"dataset {spec.key}: expected its folder at {folder}; {how}")
    return folder


def load_layout(spec: DatasetSpec, root: Path) -> DatasetSplits:
    """Load ``spec`` from ``root`` with the loader of its layout."""
    folder = dataset_dir(spec, root)
    ds = LOADERS[spec.layout](spec, folder)
    ds.image_root = str(folder / spec.image_dir) if spec.image_dir else str(folder)
    return ds


def load_dataset(key: str, root: str | Path | None) -> DatasetSplits:
    """Load every split of ``key`` from ``root`` (the folder holding CoOp's dataset folders).

    ``root`` may be None for the synthetic paper-shapes suite and for the built-in suite, which is
    then generated into its cache on first use.
    """
    spec = get_spec(key)
    if spec.layout == "synthetic":
        return load_synthetic(spec, get_spec(spec.parent) if spec.parent else None)
    if root is None:
        root = _default_root(spec)
    ds = load_layout(spec, Path(root))
    if spec.parent and spec.classes < get_spec(spec.parent).classes:
        ds.class_subset = sorted({item.label for item in ds.test})
    return ds


def _default_root(spec: DatasetSpec) -> Path:
    if "builtin" not in spec.suites:
        raise UserError(
            f"dataset {spec.key} needs a data root: pass --root DIR, the folder that holds {spec.folder}/ "
            "(CoOp's DATASETS.md describes the download)"
        )
    return Path(ensure_builtin_suite())


def _splits(spec: DatasetSpec, classnames: list[str], **splits: list[Item]) -> DatasetSplits:
    return DatasetSplits(key=spec.key, classnames=classnames, template=spec.template, **splits)


# --- CoOp's split_zhou_*.json: {"train"|"val"|"test": [[path, label, classname], ...]} ---


def load_coop_json(spec: DatasetSpec, folder: Path) -> DatasetSplits:
    path = folder / spec.split_file
    if not path.is_file():
        raise UserError(f"dataset {spec.key}: split file {path} is missing")
    try:
        raw = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise UserError(f"split file {path} is not valid JSON: {exc}") from None
    if not isinstance(raw, dict) or any(not isinstance(raw.get(s), list) for s in SPLITS):
        raise UserError(f"split file {path} should be an object with lists 'train', 'val' and 'test'")
    splits = {s: [_parse_row(path, s, i, row) for i, row in enumerate(raw[s])] for s in SPLITS}
    places = ((f"{s}[{i}]", item) for s in SPLITS for i, item in enumerate(splits[s]))
    return _splits(spec, _classnames_of(path, places), **splits)


def _parse_row(path: Path, split: str, index: int, row: object) -> Item:
    where = f"split file {path}: {split}[{index}]"
    if not isinstance(row, list) or len(row) != 3:
        raise UserError(f"{where} should be [image path, label, class name], got {row!r}")
    impath, label, classname = row
    for field, value, ok in (
        (0, impath, isinstance(impath, str) and impath != ""),
        (1, label, isinstance(label, int) and not isinstance(label, bool) and label >= 0),
        (2, classname, isinstance(classname, str) and classname != ""),
    ):
        if not ok:
            kind = "a non-negative integer" if field == 1 else "a non-empty string"
            raise UserError(f"{where} field {field} ({ROW_FIELDS[field]}) should be {kind}, got {value!r}")
    if (os.path.isabs(impath) or ".." in Path(impath).parts) and not outside_allowed():
        raise UserError(f"{where}: image path {impath!r} leaves the dataset's folder (absolute or through '..'); "
                        f"give it relative to the folder, or set {ALLOW_OUTSIDE_ENV}=1 to allow it")
    return Item(impath, label, classname)


def _classnames_of(source: Path, places: Iterable[tuple[str, Item]]) -> list[str]:
    """Class names in label order; one label with two names, or a label with no items, is an error."""
    names: dict[int, tuple[str, str]] = {}
    for place, item in places:
        first = names.setdefault(item.label, (item.classname, place))
        if first[0] != item.classname:
            raise UserError(
                f"{source}: label {item.label} is named {first[0]!r} at {first[1]} "
                f"but {item.classname!r} at {place}"
            )
    absent = [label for label in range(max(names, default=-1) + 1) if label not in names]
    if absent:
        raise UserError(f"{source}: labels should run from 0 to {max(names)}, but {absent[:5]} have no items")
    return [names[label][0] for label in range(len(names))]


# --- FGVC-Aircraft: variants.txt + images_variant_{split}.txt ("<image id> <variant>") ---


def load_fgvc(spec: DatasetSpec, folder: Path) -> DatasetSplits:
    classnames = [line for _, line in _read_lines(spec, folder / "variants.txt")]
    label_of = {name: label for label, name in enumerate(classnames)}
    splits = {}
    for split in SPLITS:
        path = folder / spec.split_file.format(split=split)
        items = []
        for number, line in _read_lines(spec, path):
            image_id, _, variant = line.partition(" ")
            if variant not in label_of:
                raise UserError(f"{path} line {number}: variant {variant!r} is not listed in variants.txt")
            items.append(Item(f"{image_id}.jpg", label_of[variant], variant))
        splits[split] = items
    return _splits(spec, classnames, **splits)


def _read_lines(spec: DatasetSpec, path: Path) -> list[tuple[int, str]]:
    """Non-blank lines of a text file with their 1-based numbers."""
    if not path.is_file():
        raise UserError(f"dataset {spec.key}: file {path} is missing")
    lines = path.read_text(encoding="utf-8").splitlines()
    return [(n, line.strip()) for n, line in enumerate(lines, 1) if line.strip()]


# --- ImageNet and its variants: classnames.txt ("<wnid> <class name>") + image folders ---
# Labels are line numbers in classnames.txt (CoOp's file is in wnid order, so they equal CoOp's
# enumerate(sorted folders)); files are sorted, as torchvision's ImageFolder in Tip-Adapter's and
# CraFT's ImageNet code (CoOp takes os.listdir's order, which depends on the file system).


def read_classnames(spec: DatasetSpec, path: Path) -> tuple[list[str], list[str]]:
    """(wnids, class names) in file order, which is ImageNet's label order."""
    wnids, names = [], []
    for number, line in _read_lines(spec, path):
        wnid, _, name = line.partition(" ")
        if not name.strip():
            raise UserError(f"{path} line {number}: expected '<wnid> <class name>', got {line!r}")
        wnids.append(wnid)
        names.append(name.strip())
    return wnids, names


def _image_files(folder: Path) -> list[str]:
    return sorted(e.name for e in os.scandir(folder) if e.is_file() and not e.name.startswith("."))


def _class_folders(spec: DatasetSpec, folder: Path) -> list[str]:
    if not folder.is_dir():
        raise UserError(f"dataset {spec.key}: image folder {folder} is missing")
    return sorted(e.name for e in os.scandir(folder) if e.is_dir() and not e.name.startswith("."))


def _scan(
    spec: DatasetSpec, top: Path, prefix: str, label_of: Callable[[str], int], names: list[str]
) -> list[Item]:
    """Items of every class folder under ``top``; ``label_of`` maps a folder name to its label."""
    items = []
    for name in _class_folders(spec, top):
        label = label_of(name)
        rel = f"{prefix}/{name}" if prefix else name
        items += [Item(f"{rel}/{f}", label, names[label]) for f in _image_files(top / name)]
    return items


def _wnid_labels(spec: DatasetSpec, folder: Path) -> tuple[list[str], Callable[[str], int]]:
    """ImageNet's class names, and the label of a class folder named by its wnid (from ``spec.split_file``)."""
    source = folder / spec.split_file
    wnids, names = read_classnames(spec, source)
    index = {wnid: i for i, wnid in enumerate(wnids)}

    def label_of(folder: str) -> int:
        if folder not in index:
            raise UserError(f"dataset {spec.key}: class folder {folder!r} is not listed in {source}")
        return index[folder]

    return names, label_of


def load_imagenet(spec: DatasetSpec, folder: Path) -> DatasetSplits:
    """CoOp's imagenet.py: train from images/train; val and test are both images/val."""
    names, label_of = _wnid_labels(spec, folder)
    images = folder / spec.image_dir
    train = _scan(spec, images / "train", "train", label_of, names)
    test = _scan(spec, images / "val", "val", label_of, names)
    ds = _splits(spec, names, train=train, val=test, test=test)
    ds.val_is_test = True
    return ds


def load_imagenet_v2(spec: DatasetSpec, folder: Path) -> DatasetSplits:
    """ImageNetV2: one folder per ImageNet label number, named by the number."""
    source = folder / spec.split_file
    _, names = read_classnames(spec, source)

    def label_of(name: str) -> int:
        if not name.isdigit() or int(name) >= len(names):
            raise UserError(
                f"dataset {spec.key}: folder {name!r} should be a label number below {len(names)} ({source})"
            )
        return int(name)

    return _splits(spec, names, test=_scan(spec, folder / spec.image_dir, "", label_of, names))


def load_imagenet_folders(spec: DatasetSpec, folder: Path) -> DatasetSplits:
    """ImageNet-Sketch, -A, -R: one folder per wnid, labelled in ImageNet's label space."""
    names, label_of = _wnid_labels(spec, folder)
    return _splits(spec, names, test=_scan(spec, folder / spec.image_dir, "", label_of, names))


LOADERS: dict[str, Callable[[DatasetSpec, Path], DatasetSplits]] = {
    "coop_json": load_coop_json,
    "fgvc": load_fgvc,
    "imagenet": load_imagenet,
    "imagenet_v2": load_imagenet_v2,
    "imagenet_variant_folders": load_imagenet_folders,
}

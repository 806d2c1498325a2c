"""Small data roots in CoOp's exact layouts, for tests: every registry dataset, a few classes each."""

from __future__ import annotations

import json
from pathlib import Path

from PIL import Image

from benchmark.datasets.registry import DatasetSpec, get_spec, list_datasets

PER_CLASS = {"train": 4, "val": 2, "test": 2}
CLASSES = 3
IMAGENET = [  # (wnid, class name): the first four lines of CoOp's ImageNet classnames.txt
    ("n01440764", "tench"),
    ("n01443537", "goldfish"),
    ("n01484850", "great white shark"),
    ("n01491361", "tiger shark"),
]
SUBSETS = {"imagenet_a": [1, 3], "imagenet_r": [0, 2]}  # ImageNet labels of their class folders


def write_image(path: Path, seed: int = 0) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", (8, 8), (seed * 37 % 256, seed * 91 % 256, 128)).save(path)


# Class names as CoOp's split files write them (OxfordPets, Food101, UCF101, SUN397): underscores.
UNDERSCORED = ["american_bulldog", "apple_pie", "Apply_Eye_Makeup"]


def _coop_json(spec: DatasetSpec, folder: Path, names: list[str] | None = None) -> dict:
    image_dir = folder / spec.image_dir
    names = names or [f"{spec.key} class {c}" for c in range(CLASSES)]
    split = {}
    for name, n in PER_CLASS.items():
        rows = []
        for i in range(n):
            for c in reversed(range(CLASSES)):  # first appearance order: 2, 1, 0
                top = ("cars_test" if name == "test" else "cars_train") if spec.key == "stanford_cars" else f"c{c}"
                rel = f"{top}/{name}_{c}_{i}.{'png' if 'builtin' in spec.suites else 'jpg'}"
                write_image(image_dir / rel, c)
                rows.append([rel, c, names[c]])
        split[name] = rows
    (folder / spec.split_file).write_text(json.dumps(split))
    return {"classnames": names, **{s: PER_CLASS[s] * CLASSES for s in PER_CLASS}}


def _fgvc(spec: DatasetSpec, folder: Path) -> dict:
    names = [f"Boeing 7{c}7-200" for c in range(CLASSES)]
    (folder / "variants.txt").write_text("\n".join(names) + "\n")
    image_id = 1000000
    for split, n in PER_CLASS.items():
        lines = []
        for c in range(CLASSES):
            for _ in range(n):
                image_id += 1
                write_image(folder / "images" / f"{image_id}.jpg", c)
                lines.append(f"{image_id} {names[c]}")
        (folder / spec.split_file.format(split=split)).write_text("\n".join(lines) + "\n")
    return {"classnames": names, **{s: PER_CLASS[s] * CLASSES for s in PER_CLASS}}


def _wnid_tree(top: Path, labels: list[int], n: int, by_number: bool = False) -> int:
    for label in labels:
        for i in range(n):
            name = str(label) if by_number else IMAGENET[label][0]
            write_image(top / name / f"{name}_{i}.JPEG", label)
    return len(labels) * n


def _imagenet_family(spec: DatasetSpec, folder: Path) -> dict:
    (folder / "classnames.txt").write_text("".join(f"{w} {n}\n" for w, n in IMAGENET))
    names = [n for _, n in IMAGENET]
    images = folder / spec.image_dir
    everything = list(range(len(IMAGENET)))
    if spec.layout == "imagenet":
        train = _wnid_tree(images / "train", everything, PER_CLASS["train"])
        test = _wnid_tree(images / "val", everything, PER_CLASS["test"])
        return {"classnames": names, "train": train, "val": test, "test": test}
    labels = SUBSETS.get(spec.key, everything)
    test = _wnid_tree(images, labels, PER_CLASS["test"], by_number=spec.layout == "imagenet_v2")
    if spec.key == "imagenet_a":
        (images / "README.txt").write_text("n01443537 goldfish\n")  # shipped with ImageNet-A; not a class
    return {"classnames": names, "train": 0, "val": 0, "test": test}


BUILDERS = {
    "coop_json": _coop_json,
    "fgvc": _fgvc,
    "imagenet": _imagenet_family,
    "imagenet_v2": _imagenet_family,
    "imagenet_variant_folders": _imagenet_family,
}


def build_tree(root: Path, suite: str = "all15") -> dict[str, dict]:
    """Write every dataset of ``suite`` under ``root``; return per key its class names and split sizes."""
    expected = {}
    for spec in list_datasets(suite):
        folder = root / spec.folder
        folder.mkdir(parents=True)
        expected[spec.key] = BUILDERS[spec.layout](spec, folder)
    return expected


def build_coop_json(root: Path, key: str, classnames: list[str]) -> dict:
    """Write one dataset of the ``coop_json`` layout under ``root`` with these ``CLASSES`` class names."""
    spec = get_spec(key)
    if spec.layout != "coop_json" or len(classnames) != CLASSES:
        raise ValueError(f"{key}: need a coop_json dataset and {CLASSES} class names")
    folder = root / spec.folder
    folder.mkdir(parents=True)
    return _coop_json(spec, folder, classnames)

"""``craft datasets check``: load each dataset from a data root and list every problem found."""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

from benchmark.datasets.images import SYNTHETIC_SCHEME, load_image
from benchmark.datasets.loaders import ALLOW_OUTSIDE_ENV, SPLITS, MissingDataset, load_dataset, outside_allowed
from benchmark.datasets.registry import get_spec
from benchmark.datasets.types import DatasetSplits
from benchmark.errors import UserError

SHOWN = 3  # paths quoted per problem


@dataclass
class DatasetReport:
    """What ``check_dataset`` found: ``status`` is ok, missing or broken."""

    key: str
    status: str = "ok"
    classes: int | None = None
    counts: dict[str, int] = field(default_factory=dict)
    val_is_test: bool = False
    problems: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return self.status == "ok"


def _missing_problem(paths: list[str]) -> str:
    more = f" and {len(paths) - SHOWN} more" if len(paths) > SHOWN else ""
    return f"{len(paths)} listed images are missing: " + ", ".join(paths[:SHOWN]) + more


def missing_images(ds: DatasetSplits, splits: tuple[str, ...] = SPLITS) -> list[str]:
    """Paths of the listed images of ``splits`` that are not files, each once."""
    paths = dict.fromkeys(ds.abspath(item) for split in splits for item in ds.split(split))
    return [p for p in paths if not p.startswith(SYNTHETIC_SCHEME) and not os.path.isfile(p)]


def require_images(ds: DatasetSplits, splits: tuple[str, ...] = SPLITS) -> None:
    """UserError with the count and first paths when any listed image of ``splits`` is missing."""
    missing = missing_images(ds, splits)
    if missing:
        raise UserError(f"dataset {ds.key}: {_missing_problem(missing)}")


def _unreadable(ds: DatasetSplits, per_split: int | None, absent: set[str]) -> list[str]:
    """Errors from opening the first ``per_split`` images of each split (all when None)."""
    errors, opened = [], set()
    top = os.path.realpath(ds.image_root) + os.sep  # a linked dataset folder is fine; links out of it are not
    for split in SPLITS:
        for item in ds.split(split)[:per_split]:
            path = ds.abspath(item)
            if path in opened or path in absent:
                continue
            opened.add(path)
            real = os.path.realpath(path)
            if "://" not in path and not real.startswith(top) and not outside_allowed():
                errors.append(f"image {path} leads outside the dataset's folder, to {real} (a link); "
                              f"set {ALLOW_OUTSIDE_ENV}=1 to allow it")
                continue
            try:
                load_image(path)
            except UserError as exc:
                errors.append(str(exc))
    return errors


def check_dataset(key: str, root: str | Path | None, verify_images: int | None = 3) -> DatasetReport:
    """Load ``key`` from ``root``; check its images exist and that the first ``verify_images`` of
    each split open (every image when None)."""
    spec = get_spec(key)
    report = DatasetReport(key)
    try:
        ds = load_dataset(key, root)
    except MissingDataset as exc:
        report.status, report.problems = "missing", [str(exc)]
        return report
    except UserError as exc:
        report.status, report.problems = "broken", [str(exc)]
        return report
    report.classes = len(ds.class_subset) if ds.class_subset is not None else len(ds.classnames)
    report.counts = {split: len(ds.split(split)) for split in SPLITS}
    report.val_is_test = ds.val_is_test
    missing = missing_images(ds)
    if missing:
        report.problems.append(_missing_problem(missing))
    unreadable = _unreadable(ds, verify_images, set(missing))
    if unreadable:
        report.problems.append(f"{len(unreadable)} images cannot be read: " + "; ".join(unreadable[:SHOWN]))
    if not ds.test:
        report.problems.append("the test split is empty")
    if (report.classes, len(ds.test)) != (spec.classes, spec.test_images):
        report.notes.append(
            f"{report.classes} classes and {len(ds.test)} test images where the full dataset has "
            f"{spec.classes} and {spec.test_images}"
        )
    report.status = "broken" if report.problems else "ok"
    return report


def check_root(root: str | Path, keys: list[str], verify_images: int | None = 3) -> list[DatasetReport]:
    """One report per key; unknown keys and a missing data root are UserErrors, raised first."""
    for key in keys:
        get_spec(key)
    if not Path(root).is_dir():
        raise UserError(
            f"data root {root} does not exist or is not a folder; "
            "it should hold CoOp's dataset folders (CoOp's DATASETS.md describes the download)"
        )
    return [check_dataset(key, root, verify_images) for key in keys]

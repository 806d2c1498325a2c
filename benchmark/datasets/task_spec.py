"""What one run's data is: dataset, shots, seed and where the images live (a light module:
both a run's process and the model server hold it)."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class TaskSpec:
    """The data of one run."""

    dataset: str
    shots: int
    seed: int
    root: str | None = None
    eval_datasets: tuple[str, ...] = ()
    eval_test: bool = True  # False during a hyperparameter search: no test image is read
    train_aug: str | None = None  # a training augmentation in place of the dataset's own (a protocol's)

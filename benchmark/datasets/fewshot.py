"""The few-shot protocol of CoOp's ``DatasetBase.generate_fewshot_dataset``, item for item.

Seeded once, then for the train split: items grouped by label in order of first appearance,
``random.sample(items, K)`` per class (every item of a class with fewer than K); then the val
split the same way with ``min(K, 4)``, continuing from the same random state. A private
``random.Random(seed)`` draws exactly what ``random.seed(seed)`` + ``random.sample`` draw, without
touching the global state.

CoOp (and CBBT, built on it) samples train, then val. CraFT's official dataset classes
(``datasets/*.py`` of mrflogs/CraFT) call the same function on train only: their train sample is
the one drawn here, for the same seed (their val is the whole val split, which CraFT's reported
numbers do not use).

ImageNet's val split is its test set (CoOp); there the few-shot val is drawn, after train, from
the train items the train sample left out, so that validation never sees test images. The train
sample is then CoOp's. (CraFT's ImageNet class samples its own way, ``random.sample`` per class of
torchvision's ImageFolder, not compared here.)
"""

from __future__ import annotations

import random
from collections import defaultdict
from dataclasses import replace

from benchmark.datasets.types import DatasetSplits, Item
from benchmark.errors import UserError

PAPER_SHOTS = (1, 2, 4, 8, 16)
PAPER_SEEDS = (1, 2, 3)
MAX_VAL_SHOTS = 4


def _sample_per_class(rng: random.Random, items: list[Item], shots: int) -> list[Item]:
    by_label: dict[int, list[Item]] = defaultdict(list)
    for item in items:
        by_label[item.label].append(item)
    out: list[Item] = []
    for group in by_label.values():
        out += rng.sample(group, shots) if len(group) >= shots else group
    return out


def few_shot_splits(ds: DatasetSplits, shots: int, seed: int) -> DatasetSplits:
    """``ds`` with ``shots`` train items and ``min(shots, 4)`` val items per class; test unchanged.

    The paper uses shots in PAPER_SHOTS and seeds in PAPER_SEEDS; any positive shots and any int
    seed are accepted.
    """
    if isinstance(shots, bool) or not isinstance(shots, int) or shots < 1:
        raise UserError(f"shots must be a positive integer (the paper uses {PAPER_SHOTS}), got {shots!r}")
    if not ds.train:
        raise UserError(f"dataset {ds.key} has no train split to sample shots from (it is test-only)")
    rng = random.Random(seed)
    val_shots = min(shots, MAX_VAL_SHOTS)
    if ds.val_is_test:
        train = _sample_per_class(rng, ds.train, shots)
        chosen = set(map(id, train))
        val = _sample_per_class(rng, [item for item in ds.train if id(item) not in chosen], val_shots)
    else:
        train = _sample_per_class(rng, ds.train, shots)
        val = _sample_per_class(rng, ds.val, val_shots)
    return replace(ds, train=train, val=val, val_is_test=False)

"""few_shot_splits draws exactly what CoOp's generate_fewshot_dataset draws."""

from __future__ import annotations

import random
from collections import Counter, defaultdict

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from benchmark.datasets.fewshot import few_shot_splits
from benchmark.datasets.types import DatasetSplits, Item
from benchmark.errors import UserError


def coop_fewshot(train: list[Item], val: list[Item], shots: int, seed: int) -> tuple[list[Item], list[Item]]:
    """An independent transcription of CoOp: set_random_seed, then DatasetBase.generate_fewshot_dataset
    for train (num_shots) and val (min(num_shots, 4)), repeat=False."""

    def generate_fewshot_dataset(data_source, num_shots):
        tracker = defaultdict(list)  # DatasetBase.split_dataset_by_label
        for item in data_source:
            tracker[item.label].append(item)
        dataset = []
        for label, items in tracker.items():
            if len(items) >= num_shots:
                sampled_items = random.sample(items, num_shots)
            else:
                sampled_items = items
            dataset.extend(sampled_items)
        return dataset

    random.seed(seed)
    return generate_fewshot_dataset(train, shots), generate_fewshot_dataset(val, min(shots, 4))


def make_splits(train_labels: list[int], val_labels: list[int], test_labels: list[int] = ()) -> DatasetSplits:
    def items(split, labels):
        return [Item(f"{split}/{i}.jpg", c, f"class {c}") for i, c in enumerate(labels)]

    n = max([*train_labels, *val_labels, *test_labels], default=0) + 1
    return DatasetSplits("toy", [f"class {c}" for c in range(n)], "a photo of a {}.",
                         items("train", train_labels), items("val", val_labels), items("test", test_labels))


def shuffled_labels(counts: dict[int, int], seed: int = 0) -> list[int]:
    labels = [c for c, n in counts.items() for _ in range(n)]
    random.Random(seed).shuffle(labels)
    return labels


TOY = make_splits(shuffled_labels({0: 30, 1: 20, 2: 5, 3: 17}), shuffled_labels({0: 6, 1: 6, 2: 2, 3: 9}, 1), [0, 1, 2, 3])


@given(
    train=st.lists(st.integers(0, 6), max_size=80),
    val=st.lists(st.integers(0, 6), max_size=30),
    shots=st.sampled_from([1, 2, 4, 8, 16, 3]),
    seed=st.integers(-(2**40), 2**40),
)
@settings(max_examples=80, deadline=None)
def test_equals_coops_function(train, val, shots, seed):
    ds = make_splits(train, val)
    state = random.getstate()
    ours = few_shot_splits(ds, shots, seed) if train else None
    assert random.getstate() == state  # the global random state is left alone
    if ours is not None:
        assert (ours.train, ours.val) == coop_fewshot(ds.train, ds.val, shots, seed)


def test_train_sample_is_crafts_which_samples_train_only():
    """CraFT's official dataset classes call generate_fewshot_dataset on train alone, after
    random.seed(seed): the same train items as ours, whatever the val split holds."""
    for seed in (1, 2, 3):
        assert few_shot_splits(TOY, 4, seed).train == coop_fewshot(TOY.train, [], 4, seed)[0]


@pytest.mark.parametrize("shots", [1, 2, 4, 8, 16])
def test_exact_per_class_counts(shots):
    fs = few_shot_splits(TOY, shots, seed=1)
    assert Counter(i.label for i in fs.train) == {0: shots, 1: shots, 2: min(shots, 5), 3: shots}
    val_counts = {0: 6, 1: 6, 2: 2, 3: 9}
    assert Counter(i.label for i in fs.val) == {c: min(shots, 4, n) for c, n in val_counts.items()}
    assert fs.test == TOY.test and fs.classnames == TOY.classnames


def test_classes_in_order_of_first_appearance():
    fs = few_shot_splits(TOY, 4, seed=2)
    first_seen = list(dict.fromkeys(i.label for i in TOY.train))
    assert list(dict.fromkeys(i.label for i in fs.train)) == first_seen


def test_same_seed_same_items_other_seeds_differ():
    runs = {seed: few_shot_splits(TOY, 4, seed) for seed in (1, 2, 3)}
    assert few_shot_splits(TOY, 4, 1).train == runs[1].train and few_shot_splits(TOY, 4, 1).val == runs[1].val
    assert len({tuple(fs.train) for fs in runs.values()}) == 3


def test_train_and_val_never_overlap():
    for seed in (1, 2, 3):
        fs = few_shot_splits(TOY, 16, seed)
        assert not {i.path for i in fs.train} & {i.path for i in fs.val}


def test_val_from_train_leftovers_when_val_is_the_test_set():
    ds = make_splits(shuffled_labels({0: 20, 1: 20, 2: 3}), [], [0, 1, 2] * 5)
    ds.val, ds.val_is_test = ds.test, True
    fs = few_shot_splits(ds, 2, seed=1)
    assert fs.train == coop_fewshot(ds.train, [], 2, 1)[0]  # CoOp's imagenet.py samples train only
    assert Counter(i.label for i in fs.val) == {0: 2, 1: 2, 2: 1}
    assert {i.path for i in fs.val} <= {i.path for i in ds.train} - {i.path for i in fs.train}
    assert not fs.val_is_test and fs.test == ds.test


@pytest.mark.parametrize("shots", [0, -1, 2.0, True])
def test_bad_shots_are_user_errors(shots):
    with pytest.raises(UserError, match="shots must be a positive integer"):
        few_shot_splits(TOY, shots, 1)


def test_test_only_dataset_cannot_be_sampled():
    with pytest.raises(UserError, match="no train split"):
        few_shot_splits(make_splits([], [], [0, 1]), 1, 1)

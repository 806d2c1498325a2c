"""Every layout loads from a CoOp-layout tree with the right splits, labels and label spaces."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from benchmark.datasets import loaders
from benchmark.datasets.loaders import MissingDataset, load_dataset
from benchmark.datasets.registry import get_spec, list_datasets
from benchmark.errors import UserError
from dataset_trees import IMAGENET, SUBSETS, build_tree


@pytest.fixture(scope="module")
def tree(tmp_path_factory) -> tuple[Path, dict]:
    root = tmp_path_factory.mktemp("data")
    return root, build_tree(root)


def one_dataset(tree, tmp_path: Path, key: str) -> Path:
    """A data root holding a private copy of one dataset, to break."""
    folder = get_spec(key).folder
    shutil.copytree(tree[0] / folder, tmp_path / folder)
    return tmp_path


@pytest.mark.parametrize("key", [s.key for s in list_datasets("all15")])
def test_every_dataset_loads_with_right_splits_and_labels(tree, key):
    root, expected = tree
    ds = load_dataset(key, root)
    want = expected[key]
    assert ds.key == key and ds.template == get_spec(key).template
    assert ds.classnames == want["classnames"]
    assert [len(ds.train), len(ds.val), len(ds.test)] == [want["train"], want["val"], want["test"]]
    for item in ds.train + ds.val + ds.test:
        assert ds.classnames[item.label] == item.classname
        assert Path(ds.abspath(item)).is_file()


def test_image_roots_follow_coop(tree):
    root, _ = tree
    assert load_dataset("caltech101", root).image_root == str(root / "caltech-101" / "101_ObjectCategories")
    cars = load_dataset("stanford_cars", root)
    assert cars.image_root == str(root / "stanford_cars")
    assert cars.train[0].path.startswith("cars_train/") and cars.test[0].path.startswith("cars_test/")
    fgvc = load_dataset("fgvc_aircraft", root)
    assert fgvc.image_root == str(root / "fgvc_aircraft" / "images") and fgvc.train[0].path.endswith(".jpg")


def test_imagenet_val_is_its_test_set(tree):
    ds = load_dataset("imagenet", tree[0])
    assert ds.val is ds.test and ds.val_is_test
    assert {i.path.split("/")[0] for i in ds.train} == {"train"}
    assert {i.path.split("/")[0] for i in ds.test} == {"val"}
    assert [i.label for i in ds.test if i.path.startswith(f"val/{IMAGENET[2][0]}/")] == [2, 2]


def test_variants_are_scored_in_imagenet_label_space(tree):
    root, _ = tree
    for key in ("imagenet_v2", "imagenet_sketch"):
        ds = load_dataset(key, root)
        assert get_spec(key).parent == "imagenet" and ds.class_subset is None
        assert {i.label for i in ds.test} == {0, 1, 2, 3}
    v2 = load_dataset("imagenet_v2", root)
    assert all(i.path.split("/")[0] == str(i.label) for i in v2.test)
    for key, subset in SUBSETS.items():
        ds = load_dataset(key, root)
        assert get_spec(key).parent == "imagenet" and ds.class_subset == subset
        assert ds.classnames == [name for _, name in IMAGENET]
        assert {i.label for i in ds.test} == set(subset)
        assert all(i.path.split("/")[0] == IMAGENET[i.label][0] for i in ds.test)


def test_builtin_suite_loads_from_root_or_its_generator(tmp_path, monkeypatch):
    expected = build_tree(tmp_path, "builtin")
    ds = load_dataset("digits_rotate", tmp_path)
    assert ds.classnames == expected["digits_rotate"]["classnames"]
    assert [len(ds.train), len(ds.val), len(ds.test)] == [12, 6, 6]
    assert ds.template == "a photo of the digit {}."
    monkeypatch.setattr(loaders, "ensure_builtin_suite", lambda root=None: tmp_path)
    assert load_dataset("digits_noise", None).test == load_dataset("digits_noise", tmp_path).test


def test_real_dataset_without_root_is_a_user_error():
    with pytest.raises(UserError, match="needs a data root"):
        load_dataset("dtd", None)


def test_unknown_key_lists_valid_keys():
    with pytest.raises(UserError, match="valid keys: imagenet, caltech101"):
        load_dataset("imagenet1k", "/nowhere")


def test_missing_folder_names_expected_path(tmp_path):
    with pytest.raises(MissingDataset, match=f"{tmp_path / 'dtd'}.*DATASETS.md"):
        load_dataset("dtd", tmp_path)


def _edit_split(root: Path, key: str, edit) -> Path:
    path = root / get_spec(key).folder / get_spec(key).split_file
    split = json.loads(path.read_text())
    edit(split)
    path.write_text(json.dumps(split))
    return path


def test_malformed_row_names_file_row_and_field(tree, tmp_path):
    root = one_dataset(tree, tmp_path, "dtd")
    path = _edit_split(root, "dtd", lambda s: s["val"][3].__setitem__(1, "three"))
    with pytest.raises(UserError, match=rf"{path}: val\[3\] field 1 \(label\) should be a non-negative integer"):
        load_dataset("dtd", root)
    path.write_text('{"train": [')
    with pytest.raises(UserError, match=f"split file {path} is not valid JSON"):
        load_dataset("dtd", root)


def test_label_with_two_names_is_named(tree, tmp_path):
    root = one_dataset(tree, tmp_path, "eurosat")
    _edit_split(root, "eurosat", lambda s: s["test"][1].__setitem__(2, "Forest"))
    with pytest.raises(UserError, match=r"label 1 is named 'eurosat class 1' at train\[1\] but 'Forest' at test\[1\]"):
        load_dataset("eurosat", root)


def test_fgvc_unknown_variant_names_file_and_line(tree, tmp_path):
    root = one_dataset(tree, tmp_path, "fgvc_aircraft")
    path = root / "fgvc_aircraft" / "images_variant_test.txt"
    lines = path.read_text().splitlines()
    lines[2] = "1234567 Concorde"
    path.write_text("\n".join(lines))
    with pytest.raises(UserError, match=f"{path} line 3: variant 'Concorde' is not listed"):
        load_dataset("fgvc_aircraft", root)


def test_imagenet_folder_not_in_classnames(tree, tmp_path):
    root = one_dataset(tree, tmp_path, "imagenet_r")
    (root / "imagenet-rendition" / "imagenet-r" / "n99999999").mkdir()
    with pytest.raises(UserError, match="class folder 'n99999999' is not listed in"):
        load_dataset("imagenet_r", root)


def test_generated_builtin_suite_loads(tmp_path):
    pytest.importorskip("sklearn")
    from benchmark.datasets.builtin import ensure_builtin_suite

    root = ensure_builtin_suite(tmp_path)
    for spec in list_datasets("builtin"):
        ds = load_dataset(spec.key, root)
        assert len(ds.classnames) == spec.classes and len(ds.test) == spec.test_images
        assert Path(ds.abspath(ds.train[0])).is_file()

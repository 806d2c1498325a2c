"""``craft datasets check`` reports every dataset of a data root and names each problem."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from benchmark.cli import main
from benchmark.datasets.registry import list_datasets
from dataset_trees import build_tree

ALL15 = [s.key for s in list_datasets("all15")]


@pytest.fixture(scope="module")
def pristine(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("data")
    build_tree(root)
    return root


@pytest.fixture
def root(pristine, tmp_path) -> Path:
    shutil.copytree(pristine, tmp_path / "data")
    return tmp_path / "data"


def check(capsys, *args: str) -> tuple[int, str]:
    code = main(["datasets", "check", *args])
    out = capsys.readouterr()
    return code, out.out + out.err


def test_all_15_present_and_ok(pristine, capsys):
    code, out = check(capsys, "--root", str(pristine), "--verify-images", "all")
    assert code == 0, out
    assert "15 of 15 datasets ok" in out
    for key in ALL15:
        assert any(line.startswith(f"{key} ") and "  ok  " in line for line in out.splitlines()), key
    assert "val = test" in out  # ImageNet
    assert "note: 3 classes and 6 test images where the full dataset has 100 and 2465" in out


def test_removed_image_is_named(root, capsys):
    gone = root / "oxford_pets" / "images" / "c1" / "test_1_0.jpg"
    gone.unlink()
    code, out = check(capsys, "--root", str(root))
    assert code == 1
    assert f"problem: 1 listed images are missing: {gone}" in out
    assert "14 of 15 datasets ok; not ok: oxford_pets" in out


def test_broken_json_row_is_named(root, capsys):
    path = root / "food-101" / "split_zhou_Food101.json"
    split = json.loads(path.read_text())
    split["train"][5] = ["c1/train_1_1.jpg", 1]
    path.write_text(json.dumps(split))
    code, out = check(capsys, "--root", str(root), "food101", "dtd")
    assert code == 1
    assert f"split file {path}: train[5] should be [image path, label, class name]" in out
    assert "1 of 2 datasets ok; not ok: food101" in out


def test_unreadable_image_is_named(root, capsys):
    bad = root / "imagenet-sketch" / "images" / "n01440764" / "n01440764_0.JPEG"
    bad.write_bytes(b"not an image")
    code, out = check(capsys, "--root", str(root), "imagenet_sketch")
    assert code == 1 and f"images cannot be read: image {bad} cannot be read" in out


def test_absent_dataset_says_where_and_how(root, capsys):
    shutil.rmtree(root / "ucf101")
    code, out = check(capsys, "--root", str(root), "ucf101", "eurosat")
    assert code == 1
    assert "ucf101   MISSING\n" in out and f"expected its folder at {root / 'ucf101'}" in out
    assert "DATASETS.md" in out


def test_bad_input_exits_2_before_work(tmp_path, capsys):
    code, out = check(capsys, "--root", str(tmp_path / "nope"))
    assert code == 2 and f"data root {tmp_path / 'nope'} does not exist" in out
    code, out = check(capsys, "--root", str(tmp_path), "caltech")
    assert code == 2 and "unknown dataset 'caltech'; valid keys: imagenet, caltech101" in out


def _png_header_only(width: int, height: int) -> bytes:
    """A PNG that declares ``width x height`` pixels and holds none: PIL refuses it as a decompression bomb on open."""
    import struct
    import zlib

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"")) + chunk(b"IEND", b"")


def test_a_decompression_bomb_image_is_named_and_the_report_goes_on(root, capsys):
    """Issue 23, point 7: a 50,000 x 50,000 image no longer aborts the whole report."""
    bad = root / "imagenet-sketch" / "images" / "n01440764" / "n01440764_0.JPEG"
    bad.write_bytes(_png_header_only(50_000, 50_000))
    code, out = check(capsys, "--root", str(root), "imagenet_sketch", "eurosat", "--verify-images", "all")
    assert code == 1 and "Traceback" not in out
    assert f"image {bad} is refused: Image size (2500000000 pixels) exceeds limit" in out
    assert "1 of 2 datasets ok; not ok: imagenet_sketch" in out


def test_split_paths_that_leave_the_data_root_are_refused_unless_allowed(root, capsys, monkeypatch):
    """Issue 23, point 9: absolute and '..' paths in split files, and links out of a dataset's folder."""
    path = root / "food-101" / "split_zhou_Food101.json"
    split = json.loads(path.read_text())
    split["train"][5][0] = "../../../etc/hostname"
    path.write_text(json.dumps(split))
    code, out = check(capsys, "--root", str(root), "food101")
    assert code == 1
    assert (f"split file {path}: train[5]: image path '../../../etc/hostname' leaves the dataset's folder "
            "(absolute or through '..'); give it relative to the folder, or set CRAFT_ALLOW_PATHS_OUTSIDE_ROOT=1") in out
    split["train"][5][0] = "/etc/hostname"
    path.write_text(json.dumps(split))
    assert "image path '/etc/hostname' leaves the dataset's folder" in check(capsys, "--root", str(root), "food101")[1]
    monkeypatch.setenv("CRAFT_ALLOW_PATHS_OUTSIDE_ROOT", "1")
    assert "leaves the dataset's folder" not in check(capsys, "--root", str(root), "food101")[1]

    monkeypatch.delenv("CRAFT_ALLOW_PATHS_OUTSIDE_ROOT")
    outside = root.parent / "elsewhere.jpg"
    link = root / "oxford_pets" / "images" / "c1" / "train_1_0.jpg"
    outside.write_bytes(link.read_bytes())
    link.unlink()
    link.symlink_to(outside)
    code, out = check(capsys, "--root", str(root), "oxford_pets", "--verify-images", "all")
    assert code == 1 and f"image {link} leads outside the dataset's folder, to {outside} (a link)" in out

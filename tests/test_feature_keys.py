"""Feature-cache keys: each data root gets its own features, and a changed image is never served stale."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest
import torch

from benchmark.datasets.loaders import load_dataset
from benchmark.datasets.transforms import train_transform
from benchmark.errors import UserError
from benchmark.model.feature_keys import describe_transform, image_set_key
from benchmark.model.feature_cache import FeatureCache
from benchmark.serve.options import ServerOptions
from benchmark.serve.server import ModelServer
from benchmark.sweep.cell import Cell
from benchmark.sweep.run_cell import run_cell
from benchmark.serve.ray_runtime import _runtime_env

BASE = {"backbone": "craft-tiny", "weights": "w", "dataset": "digits_rotate", "precision": "fp32", "split": "test"}


@pytest.fixture(scope="module")
def suite(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The built-in suite, generated once for this module."""
    from benchmark.datasets.builtin import ensure_builtin_suite

    return ensure_builtin_suite(tmp_path_factory.mktemp("suite"))


def rotate_copy(suite: Path, to: Path, images_from: str = "digits-rotate") -> Path:
    """A data root holding digits-rotate's folder (split file and image names), its images taken
    from ``images_from``: the same layout, other images when that is another shift."""
    shutil.copytree(suite / "digits-rotate", to / "digits-rotate")
    for image in (to / "digits-rotate" / "images").iterdir():
        shutil.copyfile(suite / images_from / "images" / image.name, image)
    return to


def zero_shot(root: Path, cache: Path | None) -> dict:
    """One zero-shot cell on digits_rotate under ``root``, as a fresh sweep would run it."""
    server = ModelServer("craft-tiny", "builtin", ServerOptions(batching=False), cache_dir=str(cache) if cache else "")
    cell = Cell("zero_shot_clip", "digits_rotate", 1, 1, "craft-tiny", "builtin", root=str(root))
    return run_cell(cell, server)[0]


def test_two_roots_with_one_layout_get_their_own_accuracy_from_one_cache(suite: Path, tmp_path: Path) -> None:
    a = rotate_copy(suite, tmp_path / "a")
    b = rotate_copy(suite, tmp_path / "b", images_from="digits-noise")  # same names and labels, other pixels
    cache = tmp_path / "features"
    first = zero_shot(a, cache)
    second = zero_shot(b, cache)
    alone = zero_shot(b, None)  # b's own accuracy, no cache involved
    assert first["images_encoded"] == second["images_encoded"] == alone["images_encoded"] > 500  # every image
    assert second["top1_test"] == pytest.approx(alone["top1_test"], abs=1e-9)
    assert abs(second["top1_test"] - first["top1_test"]) > 10  # the digit sets differ by far more than noise
    again = zero_shot(a, cache)
    assert again["images_encoded"] == 0 and again["top1_test"] == first["top1_test"]  # still a cache


def test_an_image_corrupted_after_a_cached_run_fails_the_rerun_naming_it(suite: Path, tmp_path: Path) -> None:
    root = rotate_copy(suite, tmp_path / "data")
    cache = tmp_path / "features"
    assert zero_shot(root, cache)["images_encoded"] > 0
    ds = load_dataset("digits_rotate", root)
    truncated, garbled = ds.abspath(ds.test[3]), ds.abspath(ds.val[0])
    raw = Path(truncated).read_bytes()
    Path(truncated).write_bytes(raw[: len(raw) // 2])
    with pytest.raises(UserError, match=rf"^image {truncated} cannot be read"):
        zero_shot(root, cache)
    Path(truncated).write_bytes(raw)
    Path(garbled).write_bytes(b"not an image")
    with pytest.raises(UserError, match=rf"^image {garbled} cannot be read"):
        zero_shot(root, cache)


def test_the_key_follows_each_files_size_and_time_the_resolved_root_and_the_transform(suite: Path, tmp_path: Path) -> None:
    root = rotate_copy(suite, tmp_path / "data")
    (tmp_path / "link").symlink_to(root, target_is_directory=True)
    ds, via_link = load_dataset("digits_rotate", root), load_dataset("digits_rotate", tmp_path / "link")
    items, desc = ds.test[:20], "T"
    key = image_set_key(ds, items, desc, BASE)
    assert key["root"] == str((root / "digits-rotate" / "images").resolve()) and key["n"] == 20
    assert image_set_key(via_link, via_link.test[:20], desc, BASE) == key  # a symlinked root is the same data
    assert image_set_key(ds, items[:19], desc, BASE) != key and image_set_key(ds, items, "U", BASE) != key
    path = Path(ds.abspath(items[7]))
    st = path.stat()
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns + 1))  # touched: the same bytes, 1 ns later
    touched = image_set_key(ds, items, desc, BASE)
    assert touched != key
    path.write_bytes(path.read_bytes() + b"\0")  # one byte longer
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns + 1))
    assert image_set_key(ds, items, desc, BASE) not in (key, touched)
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns))
    assert image_set_key(ds, items, desc, BASE) != key  # size alone tells
    path.unlink()
    with pytest.raises(UserError, match=rf"^image {path} does not exist$"):
        image_set_key(ds, items, desc, BASE)
    with pytest.raises(UserError, match=r"^fingerprint must be one of stat, content, got 'mtime'$"):
        image_set_key(ds, items, desc, BASE, "mtime")


def test_content_fingerprint_sees_a_same_size_rewrite_that_kept_its_time(suite: Path, tmp_path: Path) -> None:
    """``stat`` cannot see bytes that changed under the same size and restored time; ``content`` does."""
    root = rotate_copy(suite, tmp_path / "data")
    ds = load_dataset("digits_rotate", root)
    items = ds.test[:10]
    keys = {how: image_set_key(ds, items, "T", BASE, how) for how in ("stat", "content")}
    path = Path(ds.abspath(items[2]))
    st = path.stat()
    other = Path(ds.abspath(next(it for it in ds.test if Path(ds.abspath(it)).stat().st_size == st.st_size
                                 and ds.abspath(it) != str(path)))).read_bytes()
    path.write_bytes(other)
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns))
    assert image_set_key(ds, items, "T", BASE, "stat") == keys["stat"]
    assert image_set_key(ds, items, "T", BASE, "content") != keys["content"]


def test_fingerprint_comes_from_the_environment_and_is_checked(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.delenv("CRAFT_FEATURE_FINGERPRINT", raising=False)
    assert FeatureCache(tmp_path).fingerprint == "stat"
    assert "CRAFT_FEATURE_FINGERPRINT" not in _runtime_env()["env_vars"]
    monkeypatch.setenv("CRAFT_FEATURE_FINGERPRINT", "content")
    assert FeatureCache(tmp_path).fingerprint == "content" and FeatureCache(tmp_path, "stat").fingerprint == "stat"
    assert _runtime_env()["env_vars"]["CRAFT_FEATURE_FINGERPRINT"] == "content"  # Ray's workers key alike
    monkeypatch.setenv("CRAFT_FEATURE_FINGERPRINT", "sha1")
    with pytest.raises(UserError, match=r"^CRAFT_FEATURE_FINGERPRINT must be one of stat, content, got 'sha1'$"):
        FeatureCache(tmp_path)


def test_transform_description_is_stable_and_shows_the_parameters() -> None:
    mean, std = (0.1, 0.2, 0.3), (0.4, 0.5, 0.6)
    rrc = describe_transform(train_transform("rrc", 32, mean, std))
    assert rrc == describe_transform(train_transform("rrc", 32, mean, std))
    assert "scale=(0.5, 1.0)" in rrc and "size=(32, 32)" in rrc and "0.4" in rrc and "Flip" not in rrc
    others = [train_transform("rrc_flip", 32, mean, std), train_transform("rrc", 64, mean, std),
              train_transform("rrc", 32, mean, (0.4, 0.5, 0.7)), train_transform("rrc_flip_imagenet", 32, mean, std)]
    assert len({rrc, *map(describe_transform, others)}) == 5

    def local(x: torch.Tensor) -> torch.Tensor:
        return x

    assert "0x" not in describe_transform([local, object()])  # addresses differ from process to process

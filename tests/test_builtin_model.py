"""The shipped ``craft-tiny`` weights and the built-in shifted-digit suite."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

open_clip = pytest.importorskip("open_clip")

from benchmark.datasets import builtin as bs  # noqa: E402
from benchmark.model import builtin as tiny  # noqa: E402


@pytest.fixture(scope="module")
def clip():
    """(model, preprocess, tokenizer) loaded from the shipped weights through open_clip."""
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # tiny model: one thread is fastest, especially on a busy machine
    tiny.register_builtin_model()
    tiny.register_builtin_model()  # idempotent
    _, weights = tiny.builtin_model_paths()
    model, _, preprocess = open_clip.create_model_and_transforms(tiny.BUILTIN_BACKBONE, pretrained=str(weights))
    yield model.eval(), preprocess, open_clip.get_tokenizer(tiny.BUILTIN_BACKBONE)
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def digits() -> tuple[np.ndarray, np.ndarray]:
    return bs.load_digits_arrays()


@pytest.fixture(scope="module")
def suite_root(tmp_path_factory) -> Path:
    return bs.ensure_builtin_suite(tmp_path_factory.mktemp("cache") / "builtin")


def _rows(root: Path, shift: str) -> dict[str, list]:
    folder = root / bs.SHIFTS[shift][0]
    return json.loads((folder / bs.split_file(shift)).read_text())


def test_config_and_weights(clip) -> None:
    model, _, tokenizer = clip
    config, weights = tiny.builtin_model_paths()
    assert json.loads(config.read_text())["text_cfg"]["vocab_size"] == 49408
    assert model.text_pool_type == "argmax"
    assert model.context_length == 16
    assert weights.stat().st_size < 8_000_000
    from safetensors import safe_open

    with safe_open(str(weights), "pt") as f:
        assert {str(f.get_tensor(k).dtype) for k in f.keys()} == {"torch.float16"}
    # [SOS] + 4 context tokens + the longest "classname." + [EOS] fits, as does the template.
    longest = max(bs.CLASSNAMES, key=lambda c: len(tokenizer.encode(c + ".")))
    assert 2 + 4 + len(tokenizer.encode(longest + ".")) <= model.context_length
    assert 2 + len(tokenizer.encode(bs.TEMPLATE.format(longest))) <= model.context_length


def test_zero_shot_clean_and_shifted(clip, digits, suite_root) -> None:
    model, preprocess, tokenizer = clip
    images, labels = digits
    _, held_out = bs.digits_split(len(labels))
    clean = bs.zero_shot_accuracy(
        model, preprocess, tokenizer, [bs.digit_image(images[i]) for i in held_out], labels[held_out]
    )
    assert clean >= 85.0
    for shift, (folder, _, _) in bs.SHIFTS.items():
        test = _rows(suite_root, shift)["test"]
        ims = [Image.open(suite_root / folder / "images" / p).convert("RGB") for p, _, _ in test]
        acc = bs.zero_shot_accuracy(model, preprocess, tokenizer, ims, np.array([y for _, y, _ in test]))
        assert acc <= clean - 15.0, (shift, acc, clean)


def test_suite_layout(suite_root, digits) -> None:
    _, labels = digits
    model_train, _ = bs.digits_split(len(labels))
    trained = {bs.image_name(i) for i in model_train}
    for shift, (folder, _, _) in bs.SHIFTS.items():
        rows = _rows(suite_root, shift)
        assert set(rows) == {"train", "val", "test"}
        names = {k: [r[0] for r in v] for k, v in rows.items()}
        assert len(set().union(*names.values())) == sum(len(v) for v in names.values())  # disjoint
        assert not trained & set().union(*names.values())  # no image the model trained on
        for split, minimum in (("train", 16), ("val", 4), ("test", 16)):
            counts = Counter(r[1] for r in rows[split])
            assert sorted(counts) == list(range(10)) and min(counts.values()) >= minimum
        assert len(rows["test"]) >= 250
        for path, label, classname in rows["train"] + rows["val"] + rows["test"]:
            assert isinstance(label, int) and classname == bs.CLASSNAMES[label]
            assert labels[int(Path(path).stem)] == label
            assert (suite_root / folder / "images" / path).is_file()
        with Image.open(suite_root / folder / "images" / rows["test"][0][0]) as im:
            assert im.size == (32, 32) and im.mode == "RGB"


def test_suite_is_built_once_and_deterministically(suite_root, tmp_path, digits) -> None:
    split = suite_root / "digits-noise" / bs.split_file("noise")
    before = split.stat().st_mtime_ns
    assert bs.ensure_builtin_suite(suite_root) == suite_root
    assert split.stat().st_mtime_ns == before
    assert not [p for p in suite_root.iterdir() if p.name.startswith(".")]  # no temp dirs left
    images, _ = digits
    name = _rows(suite_root, "noise")["test"][0][0]
    again = np.asarray(bs.shifted_image(images[int(Path(name).stem)], "noise", int(Path(name).stem)))
    with Image.open(suite_root / "digits-noise" / "images" / name) as im:
        assert np.array_equal(np.asarray(im), again)


def test_default_root_uses_cache_env(monkeypatch, tmp_path) -> None:
    monkeypatch.setenv("CRAFT_BENCH_CACHE", str(tmp_path))
    assert bs.default_root() == tmp_path / "builtin"

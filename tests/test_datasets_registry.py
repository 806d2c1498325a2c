"""The registry's rows, suites and CLI listing; images, transforms and the paper-shapes suite."""

from __future__ import annotations

import subprocess
import sys
from collections import Counter

import pytest
import torch
from PIL import Image

from benchmark.cli import main
from benchmark.datasets.fewshot import few_shot_splits
from benchmark.datasets.images import load_image
from benchmark.datasets.loaders import load_dataset
from benchmark.datasets.registry import get_spec, list_datasets
from benchmark.datasets.transforms import train_transform
from benchmark.errors import UserError

# key: (folder, classes, test images), from CoOp's DATASETS.md and datasets/*.py
PAPER = {
    "imagenet": ("imagenet", 1000, 50000),
    "caltech101": ("caltech-101", 100, 2465),
    "oxford_pets": ("oxford_pets", 37, 3669),
    "stanford_cars": ("stanford_cars", 196, 8041),
    "oxford_flowers": ("oxford_flowers", 102, 2463),
    "food101": ("food-101", 101, 30300),
    "fgvc_aircraft": ("fgvc_aircraft", 100, 3333),
    "sun397": ("sun397", 397, 19850),
    "dtd": ("dtd", 47, 1692),
    "eurosat": ("eurosat", 10, 8100),
    "ucf101": ("ucf101", 101, 3783),
    "imagenet_v2": ("imagenetv2", 1000, 10000),
    "imagenet_sketch": ("imagenet-sketch", 1000, 50889),
    "imagenet_a": ("imagenet-adversarial", 200, 7500),
    "imagenet_r": ("imagenet-rendition", 200, 30000),
}
MEAN, STD = (0.48145466, 0.4578275, 0.40821073), (0.26862954, 0.26130258, 0.27577711)


def test_the_15_rows_match_the_paper():
    specs = list_datasets("all15")
    assert {s.key: (s.folder, s.classes, s.test_images) for s in specs} == PAPER
    assert [s.key for s in list_datasets("coop11")] == list(PAPER)[:11]
    assert [s.key for s in list_datasets("imagenet_shift")] == ["imagenet", *list(PAPER)[11:]]
    assert all(s.test_only and s.parent == "imagenet" and s.train_aug is None for s in specs[11:])
    assert all(not s.test_only for s in specs[:11])
    assert get_spec("food101").template == "a photo of {}, a type of food."


def test_builtin_rows():
    specs = list_datasets("builtin")
    assert [(s.key, s.folder, s.split_file) for s in specs] == [
        ("digits_noise", "digits-noise", "split_zhou_DigitsNoise.json"),
        ("digits_invert", "digits-invert", "split_zhou_DigitsInvert.json"),
        ("digits_rotate", "digits-rotate", "split_zhou_DigitsRotate.json"),
        ("digits_shift", "digits-shift", "split_zhou_DigitsShift.json"),
    ]
    assert {(s.layout, s.classes, s.template, s.train_aug) for s in specs} == {
        ("coop_json", 10, "a photo of the digit {}.", "none")
    }


def test_suites():
    assert len(list_datasets()) == 19
    assert [s.key for s in list_datasets("paper-shapes")] == [f"paper-shapes/{k}" for k in PAPER]
    with pytest.raises(UserError, match="unknown suite 'coop'; valid suites: coop11"):
        list_datasets("coop")


def test_datasets_list_prints_a_table(capsys):
    assert main(["datasets", "list", "--suite", "builtin"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].split()[:4] == ["key", "name", "folder", "classes"]
    assert [line.split()[0] for line in lines[1:5]] == ["digits_noise", "digits_invert", "digits_rotate", "digits_shift"]
    assert lines[1].split()[2] == "digits-noise/" and lines[5] == "" and "CoOp/blob/main/DATASETS.md" in lines[6]


def test_datasets_list_does_not_import_torch():
    code = "import sys; from benchmark.cli import main; main(['datasets', 'list']); assert 'torch' not in sys.modules"
    subprocess.run([sys.executable, "-c", code], check=True, capture_output=True)


def test_paper_shapes_have_the_real_sizes():
    for key, (_, classes, test_images) in PAPER.items():
        ds = load_dataset(f"paper-shapes/{key}", None)
        assert len(ds.test) == test_images
        if key in ("imagenet_a", "imagenet_r"):
            assert len(ds.classnames) == 1000 and len(ds.class_subset) == 200
            assert {i.label for i in ds.test} == set(ds.class_subset)
        else:
            assert len(ds.classnames) == classes and ds.class_subset is None
        if get_spec(key).test_only:
            assert not ds.train and not ds.val and get_spec(ds.key).parent == "paper-shapes/imagenet"
        else:
            assert Counter(i.label for i in ds.train) == {c: 16 for c in range(classes)}
            assert Counter(i.label for i in ds.val) == {c: 4 for c in range(classes)}
    fs = few_shot_splits(load_dataset("paper-shapes/imagenet", None), 16, seed=1)
    assert (len(fs.train), len(fs.val)) == (16000, 4000)
    assert load_image(fs.abspath(fs.train[0])).size == (64, 64)


def test_synthetic_images_are_deterministic():
    a, b = load_image("synthetic://paper-shapes/dtd/test/0"), load_image("synthetic://paper-shapes/dtd/test/0")
    assert a.mode == "RGB" and a.tobytes() == b.tobytes()
    assert a.tobytes() != load_image("synthetic://paper-shapes/dtd/test/1").tobytes()


def test_load_image_converts_and_names_bad_paths(tmp_path):
    gray = tmp_path / "gray.png"
    Image.new("L", (5, 4), 7).save(gray)
    assert load_image(gray).mode == "RGB"
    with pytest.raises(UserError, match=f"image {tmp_path / 'nope.jpg'} does not exist"):
        load_image(tmp_path / "nope.jpg")
    (tmp_path / "bad.jpg").write_bytes(b"\xff\xd8 truncated")
    with pytest.raises(UserError, match=f"image {tmp_path / 'bad.jpg'} cannot be read"):
        load_image(tmp_path / "bad.jpg")


def test_train_transforms():
    image = Image.new("RGB", (40, 30), (255, 0, 0))
    for kind in ("rrc_flip", "rrc_flip_imagenet", "rrc", "none"):
        transform = train_transform(kind, 16, MEAN, STD)
        out = (transform if kind == "none" else transform.seeded(0))(image)
        assert out.shape == (3, 16, 16)
        assert torch.allclose(out[0], torch.full((16, 16), (1 - MEAN[0]) / STD[0]), atol=1e-4)
    rrc = train_transform("rrc", 16, MEAN, STD)
    assert (rrc.size, rrc.scale, rrc.flip, rrc.ratio) == (16, (0.5, 1.0), False, (0.75, 4 / 3))
    assert train_transform("rrc_flip_imagenet", 16, MEAN, STD).scale == (0.08, 1.0)
    assert train_transform("rrc_flip", 16, MEAN, STD).flip
    none = [type(t).__name__ for t in train_transform("none", 16, MEAN, STD).transforms]
    assert none == ["Resize", "CenterCrop", "ToTensor", "Normalize"]
    with pytest.raises(UserError, match="unknown train augmentation 'flip'"):
        train_transform("flip", 16, MEAN, STD)


@pytest.mark.parametrize("key", [s.key for s in list_datasets("coop11")] + ["paper-shapes/imagenet", "paper-shapes/dtd"])
def test_imagenet_trains_on_crops_of_scale_008_the_others_05(key):
    """CraFT's datasets/imagenet.py: RandomResizedCrop scale (0.08, 1) + flip; main_craft.py (the
    other 10): scale (0.5, 1) + flip."""
    aug = train_transform(get_spec(key).train_aug, 224, MEAN, STD)
    assert aug.flip and aug.size == 224 and aug.ratio == (0.75, 4 / 3)
    assert aug.scale == ((0.08, 1.0) if key.endswith("imagenet") else (0.5, 1.0))
    assert "interpolation=bicubic" in repr(aug)

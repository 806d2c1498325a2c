"""Training views' image path: decoded images kept in memory, crops drawn for a batch at once
(torchvision's box distribution, PIL's crop and resize), and ToTensor + Normalize on a whole batch,
each giving the per-image path's values to the bit."""

from __future__ import annotations

import os

import numpy as np
import pytest
import torch
from PIL import Image

from benchmark.datasets.images import DecodedImages, load_image
from benchmark.datasets.transforms import apply_batched, split_tensor_tail, train_transform
from benchmark.errors import UserError

MEAN, STD = (0.48145466, 0.4578275, 0.40821073), (0.26862954, 0.26130258, 0.27577711)


def _images(tmp_path, n: int = 6, sizes=((40, 30), (32, 32), (64, 48))) -> list[str]:
    rng = np.random.default_rng(0)
    paths = []
    for i in range(n):
        w, h = sizes[i % len(sizes)]
        p = tmp_path / f"im{i}.png"
        Image.fromarray(rng.integers(0, 256, (h, w, 3), np.uint8)).save(p)
        paths.append(str(p))
    return paths


@pytest.mark.parametrize("kind", ["rrc_flip", "rrc_flip_imagenet", "rrc"])
def test_a_seeded_pass_is_the_same_in_any_batches_and_image_by_image(tmp_path, kind):
    """An augmented pass is a function of its seed alone: one batch, two batches, or one image at a
    time through the transform, the same floats to the bit; another seed, other crops."""
    images = [load_image(p) for p in _images(tmp_path)]
    aug = train_transform(kind, 24, MEAN, STD)
    whole = apply_batched(aug.seeded(3), images)
    assert whole.dtype == torch.float32 and whole.shape == (6, 3, 24, 24)
    halves = aug.seeded(3)
    assert torch.equal(torch.cat([apply_batched(halves, images[:2]), apply_batched(halves, images[2:])]), whole)
    one_by_one = aug.seeded(3)
    assert torch.equal(torch.stack([one_by_one(im) for im in images]), whole)
    assert not torch.equal(apply_batched(aug.seeded(4), images), whole)
    with pytest.raises(TypeError, match="seeded"):
        apply_batched(aug, images)


def test_crops_are_torchvisions_box_cut_and_resized_by_pil(tmp_path):
    """Each view is torchvision's resized_crop of the box the sampler drew: PIL's crop, then its
    bicubic resize, then flipped where the flip draw says so."""
    from torchvision.transforms import functional as TF

    from benchmark.datasets.transforms import _DRAWS, crop_boxes

    images = [load_image(p) for p in _images(tmp_path)]
    aug = train_transform("rrc_flip", 24, MEAN, STD)
    got = aug.seeded(9).uint8(images)
    u = np.random.Generator(np.random.PCG64(9)).random((len(images), _DRAWS))
    sizes = np.array([im.size for im in images])
    boxes = crop_boxes(u, sizes[:, 1], sizes[:, 0], aug.scale)
    for k, (im, (top, left, h, w)) in enumerate(zip(images, boxes.tolist())):
        crop = TF.resized_crop(im, top, left, h, w, [24, 24], TF.InterpolationMode.BICUBIC)
        if u[k, -1] < 0.5:
            crop = TF.hflip(crop)
        assert torch.equal(got[k], torch.from_numpy(np.array(crop)).permute(2, 0, 1))


class _Uniforms:
    """Stands for ``torch`` inside torchvision's ``RandomResizedCrop.get_params``: its random draws
    come from one row of uniforms laid out as :func:`crop_boxes` reads them (the attempts' areas,
    their log-ratios, the row, the column), everything else is torch's, in float64."""

    def __init__(self, row: np.ndarray) -> None:
        from benchmark.datasets.transforms import CROP_ATTEMPTS

        self.row, self.attempts, self.uniforms = row, CROP_ATTEMPTS, 0
        self.places = iter((2 * CROP_ATTEMPTS, 2 * CROP_ATTEMPTS + 1))  # the box's row, then its column

    def __getattr__(self, name):
        return getattr(torch, name)

    def tensor(self, data, **kwargs):
        return torch.tensor(data, dtype=torch.float64)

    def empty(self, *shape):
        shim = self

        class _One:
            def uniform_(self, a, b):  # alternately an attempt's area and its log-ratio
                attempt, which = divmod(shim.uniforms, 2)
                shim.uniforms += 1
                u = shim.row[attempt + shim.attempts * which]
                return torch.tensor([float(a) + (float(b) - float(a)) * u], dtype=torch.float64)

        return _One()

    def randint(self, low, high, size):
        u = self.row[next(self.places)]
        return torch.tensor([low + int(np.floor(u * (high - low)))])


@pytest.mark.parametrize("size,scale", [((40, 30), (0.5, 1.0)), ((64, 48), (0.08, 1.0)), ((32, 32), (0.5, 1.0)),
                                        ((300, 20), (0.5, 1.0)), ((20, 300), (0.5, 1.0))])
def test_crop_boxes_are_torchvisions_get_params_on_the_same_draws(monkeypatch, size, scale):
    """torchvision's own get_params, its random draws replaced by the sampler's uniforms, gives the
    same box for every one of 3,000 draws, fallbacks included (no box fits the 300 x 20 and
    20 x 300 images: centre crops)."""
    import torchvision.transforms.transforms as tv
    from torchvision.transforms import RandomResizedCrop

    from benchmark.datasets.transforms import CROP_RATIO, _DRAWS, crop_boxes

    w, h = size
    n = 3_000
    u = np.random.Generator(np.random.PCG64(0)).random((n, _DRAWS))
    ours = crop_boxes(u, np.full(n, h), np.full(n, w), scale)
    image = Image.new("RGB", size)
    theirs = []
    for row in u:
        monkeypatch.setattr(tv, "torch", _Uniforms(row))
        theirs.append(RandomResizedCrop.get_params(image, list(scale), list(CROP_RATIO)))
    monkeypatch.undo()
    assert ours.tolist() == [list(b) for b in theirs]
    top, left, bh, bw = ours.T
    assert (top >= 0).all() and (left >= 0).all() and (top + bh <= h).all() and (left + bw <= w).all()


def test_open_clip_preprocess_splits_and_batches_the_same(tmp_path):
    from benchmark.model.loading import load_model

    preprocess = load_model("craft-tiny", "builtin").preprocess
    head, mean, std = split_tensor_tail(preprocess)
    torch.testing.assert_close(mean, torch.tensor(MEAN))
    images = [load_image(p) for p in _images(tmp_path)]
    assert torch.equal(apply_batched(preprocess, images), torch.stack([preprocess(im) for im in images]))


def test_other_transforms_are_applied_per_image():
    assert split_tensor_tail(lambda im: im) is None
    plain = lambda im: torch.full((1, 2, 2), float(im))  # noqa: E731
    assert torch.equal(apply_batched(plain, [1, 2]), torch.tensor([1.0, 2.0]).view(2, 1, 1, 1).expand(2, 1, 2, 2))


def test_decoded_images_decode_once_and_read_an_edited_file_again(tmp_path):
    paths = _images(tmp_path, n=3)
    loader = DecodedImages()
    first = [loader(p) for p in paths]
    again = [loader(p) for p in paths]
    assert loader.decoded == 3 and all(a is b for a, b in zip(first, again))
    assert all(a.tobytes() == load_image(p).tobytes() for a, p in zip(first, paths))
    Image.new("RGB", (5, 5), (9, 9, 9)).save(paths[0])
    os.utime(paths[0], ns=(1, 1))  # a new size and time: another key
    assert loader(paths[0]).size == (5, 5) and loader.decoded == 4
    with pytest.raises(UserError, match="nope.png does not exist"):
        loader(str(tmp_path / "nope.png"))


def test_decoded_images_stay_under_their_byte_limit(tmp_path):
    paths = _images(tmp_path, n=6, sizes=((32, 32),))  # 3,072 bytes each
    loader = DecodedImages(max_bytes=3 * 3072)
    for p in paths:
        loader(p)
    assert loader.held_bytes == 3 * 3072 and loader.decoded == 6
    loader(paths[-1])  # the most recent stays
    assert loader.decoded == 6
    loader(paths[0])  # the oldest went
    assert loader.decoded == 7 and loader.held_bytes == 3 * 3072


def test_a_tasks_views_decode_each_training_image_once(builtin_cache):
    """Through prepare_task: view after view re-augments the same decoded images."""
    from benchmark.datasets.task_spec import TaskSpec
    from benchmark.model.engine import ClipEngine
    from benchmark.model.loading import load_model
    from benchmark.model.task import prepare_task

    engine = ClipEngine(load_model("craft-tiny", "builtin"))
    data = prepare_task(engine, TaskSpec("digits_noise", 2, 1, train_aug="rrc_flip"), cache=None)
    n = len(data.labels["train"])
    v1, encoded1 = data.train_views.get(1)
    v2, encoded2 = data.train_views.get(2)
    assert encoded1 == encoded2 == n and not torch.equal(v1, v2)
    assert engine.decoded.decoded == n  # the training pass decoded them; the views did not again


def test_views_are_cached_under_the_full_key_with_the_training_set_fingerprinted_once(builtin_cache, tmp_path, monkeypatch):
    """A view's cache fields are image_set_key's over the training set with its "view" (the fields of
    every earlier version, so caches stay valid), but the training files are stat'ed at the first
    view only, not at each epoch's."""
    from benchmark.datasets.task_spec import TaskSpec
    from benchmark.model import task as task_mod
    from benchmark.model.engine import ClipEngine
    from benchmark.model.feature_cache import FeatureCache
    from benchmark.model.feature_keys import describe_transform, image_set_key
    from benchmark.model.loading import load_model

    engine = ClipEngine(load_model("craft-tiny", "builtin"))
    cache = FeatureCache(tmp_path / "features")
    keyed, computed = [], []
    monkeypatch.setattr(task_mod, "image_set_key", lambda *a, **k: keyed.append(a[1]) or image_set_key(*a, **k))
    real_get = cache.get_or_compute
    monkeypatch.setattr(cache, "get_or_compute", lambda fields, compute: computed.append(fields) or real_get(fields, compute))
    spec = TaskSpec("digits_noise", 2, 1, train_aug="rrc_flip")
    data = task_mod.prepare_task(engine, spec, cache=cache)
    before = len(keyed)
    for view in (1, 2, 3):
        data.train_views.get(view)
    assert len(keyed) == before + 1  # one digest for three views
    fs, _ = task_mod.load_task_splits(spec)
    aug = train_transform("rrc_flip", engine.loaded.image_size, *engine.loaded.mean_std)
    base = {"backbone": engine.loaded.backbone, "weights": task_mod.weights_id(engine), "dataset": "digits_noise",
            "precision": "fp32", "split": "train", "shots": 2, "seed": 1, "aug": "rrc_flip", "raw": True}
    for view, fields in zip((1, 2, 3), computed[-3:]):
        assert fields == image_set_key(fs, fs.train, describe_transform(aug), {**base, "view": view})


# ----------------------------------------------------------------- pixels for image-side queries
def test_pixel_sets_hold_uint8_and_give_the_transforms_floats_to_the_bit(tmp_path):
    from benchmark.datasets.transforms import apply_held
    from benchmark.model.pixels import PixelSet

    images = [load_image(p) for p in _images(tmp_path)]
    transform = train_transform("rrc_flip", 24, MEAN, STD)
    one_by_one = transform.seeded(5)
    expected = torch.stack([one_by_one(im) for im in images])
    held = PixelSet(*apply_held(transform.seeded(5), images))
    assert held.images.dtype == torch.uint8 and held.nbytes == 6 * 3 * 24 * 24
    assert torch.equal(held.rows(), expected)
    idx = torch.tensor([4, 1])
    assert torch.equal(held.rows(idx), expected[idx]) and torch.equal(held.subset(idx).rows(), expected[idx])
    assert torch.equal(held.rows(slice(2, 5)), expected[2:5])
    with pytest.raises(ValueError, match="uint8 pixels need their mean and std"):
        PixelSet(held.images)


def test_prompted_images_in_chunks_equal_one_pass(monkeypatch):
    """An evaluation split larger than a pass goes through in chunks of images; per-image pixel prompts
    (BlackVIP's) follow their images into the chunks."""
    from benchmark.model import engine as engine_mod
    from benchmark.model.engine import ClipEngine
    from benchmark.model.loading import load_model
    from benchmark.model.pixels import PixelSet
    from craft.blackbox import VisualPrompt

    torch.manual_seed(0)
    eng = ClipEngine(load_model("craft-tiny", "random"))
    rng = ((-1.8, 1.9), (-1.7, 2.0), (-1.5, 2.1))
    raw = torch.randint(0, 256, (7, 3, 32, 32), dtype=torch.uint8)
    images = PixelSet(raw, torch.tensor(MEAN), torch.tensor(STD))
    prompts = [VisualPrompt(pixels=torch.randn(3, 3, 32, 32) * 0.1), VisualPrompt(pixels=torch.randn(2, 7, 3, 32, 32) * 0.1),
               VisualPrompt(tokens=torch.randn(3, 2, eng.vision_width()) * 0.5)]
    whole = [eng.encode_prompted(images, p, rng) for p in prompts]
    monkeypatch.setitem(engine_mod._IMAGES_PER_PASS, "cpu", 3)  # chunks of 3, 3 and 1 images, one candidate a pass
    before = eng.query_images_encoded
    chunked = [eng.encode_prompted(images, p, rng) for p in prompts]
    assert eng.query_images_encoded - before == 7 * (3 + 2 + 3)
    for a, b in zip(whole, chunked):
        assert a.shape == b.shape and a.shape[1] == 7
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)
    assert eng.encode_prompted(images, VisualPrompt(tokens=torch.zeros(0, 2, eng.vision_width())), rng).shape[0] == 0

"""The built-in suite (four shifted digit sets) behind ``craft demo``, and the digits its model learnt.

Everything here comes from scikit-learn's bundled ``load_digits()`` (1,797 8x8 images); the model,
``craft-tiny``, is :mod:`benchmark.model.builtin`: nothing is downloaded. The digits are split once, by a
fixed seed, into the images the model trained on and held-out images; the suite uses only the
held-out ones, rendered at 32 px under four distribution shifts, in CoOp's folder layout.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path

import numpy as np
from PIL import Image

CLASSNAMES = ["zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine"]
TEMPLATE = "a photo of the digit {}."
IMAGE_SIZE = 32

SPLIT_SEED = 0
N_MODEL_TRAIN = 1000  # digits the model trains on; the other 797 are held out for the suite
SUITE_SEED = 1
TRAIN_PER_CLASS = 20  # suite train split (the 16-shot protocol samples from it)
VAL_PER_CLASS = 5
SUITE_VERSION = "1"

# Shift parameters, in 32-px image units (intensities in [0, 1]).
NOISE_STD = 0.2
ROTATE_QUARTERS = 1  # 90 degrees counter-clockwise
SHIFT_PIXELS = 8  # 2 pixels of the original 8x8 digit


# --- data -------------------------------------------------------------------------------


def load_digits_arrays() -> tuple[np.ndarray, np.ndarray]:
    """scikit-learn's digits as (images float32 [N, 8, 8] in [0, 1], labels int64 [N])."""
    from sklearn.datasets import load_digits

    d = load_digits()
    return (d.images / 16.0).astype(np.float32), d.target.astype(np.int64)


def digits_split(n_total: int = 1797) -> tuple[np.ndarray, np.ndarray]:
    """Fixed split of digit indices: (model-training indices, held-out indices), each sorted."""
    perm = np.random.default_rng(SPLIT_SEED).permutation(n_total)
    return np.sort(perm[:N_MODEL_TRAIN]), np.sort(perm[N_MODEL_TRAIN:])


def upsample(digit: np.ndarray) -> np.ndarray:
    """An 8x8 digit in [0, 1] as a 32x32 float image (bilinear)."""
    img = Image.fromarray(np.round(digit * 255).astype(np.uint8), mode="L")
    img = img.resize((IMAGE_SIZE, IMAGE_SIZE), Image.BILINEAR)
    return np.asarray(img, dtype=np.float32) / 255.0


def to_pil(image: np.ndarray) -> Image.Image:
    """A [0, 1] grey float image as an RGB PIL image."""
    grey = np.round(np.clip(image, 0.0, 1.0) * 255).astype(np.uint8)
    return Image.fromarray(grey, mode="L").convert("RGB")


def digit_image(digit: np.ndarray) -> Image.Image:
    """A clean 8x8 digit as the 32x32 RGB image the model sees."""
    return to_pil(upsample(digit))


def _noise(img: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    return img + rng.normal(0.0, NOISE_STD, img.shape).astype(np.float32)


def _invert(img: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    return 1.0 - img


def _rotate(img: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    return np.rot90(img, ROTATE_QUARTERS).copy()


def _shift(img: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    out = np.zeros_like(img)
    s = SHIFT_PIXELS
    out[s:, s:] = img[:-s, :-s]  # down and right, zero fill
    return out


# folder, CoOp-style class name (split file), shift
SHIFTS: dict[str, tuple[str, str, Callable[[np.ndarray, np.random.Generator], np.ndarray]]] = {
    "noise": ("digits-noise", "DigitsNoise", _noise),
    "invert": ("digits-invert", "DigitsInvert", _invert),
    "rotate": ("digits-rotate", "DigitsRotate", _rotate),
    "shift": ("digits-shift", "DigitsShift", _shift),
}


def shifted_image(digit: np.ndarray, shift: str, index: int) -> Image.Image:
    """Digit number ``index`` (8x8) under ``shift``, as a 32x32 RGB image; deterministic."""
    rng = np.random.default_rng([SUITE_SEED, index])
    return to_pil(SHIFTS[shift][2](upsample(digit), rng))


def image_name(index: int) -> str:
    """File name of digit ``index`` (its position in ``load_digits()``) under ``images/``."""
    return f"{index:04d}.png"


def suite_splits(labels: np.ndarray) -> dict[str, list[int]]:
    """Held-out digit indices per suite split (train, val, test), shared by all four sets."""
    _, held_out = digits_split(len(labels))
    rng = np.random.default_rng(SUITE_SEED)
    out: dict[str, list[int]] = {"train": [], "val": [], "test": []}
    for c in range(len(CLASSNAMES)):
        idx = rng.permutation(held_out[labels[held_out] == c])
        out["train"] += idx[:TRAIN_PER_CLASS].tolist()
        out["val"] += idx[TRAIN_PER_CLASS : TRAIN_PER_CLASS + VAL_PER_CLASS].tolist()
        out["test"] += idx[TRAIN_PER_CLASS + VAL_PER_CLASS :].tolist()
    return {k: sorted(v) for k, v in out.items()}


# --- suite on disk ----------------------------------------------------------------------


def default_root() -> Path:
    """``$CRAFT_BENCH_CACHE/builtin``, else ``~/.cache/craft-bench/builtin``."""
    base = os.environ.get("CRAFT_BENCH_CACHE")
    return (Path(base) if base else Path.home() / ".cache" / "craft-bench") / "builtin"


def split_file(shift: str) -> str:
    """Name of the CoOp split file of one shifted set."""
    return f"split_zhou_{SHIFTS[shift][1]}.json"


def _complete(folder: Path, shift: str) -> bool:
    marker = folder / ".suite-version"
    return (folder / split_file(shift)).is_file() and marker.is_file() and marker.read_text() == SUITE_VERSION


def _write_dataset(folder: Path, shift: str, images: np.ndarray, labels: np.ndarray) -> None:
    (folder / "images").mkdir(parents=True)
    splits = suite_splits(labels)
    rows: dict[str, list[list]] = {}
    for name, indices in splits.items():
        rows[name] = []
        for i in indices:
            shifted_image(images[i], shift, i).save(folder / "images" / image_name(i))
            rows[name].append([image_name(i), int(labels[i]), CLASSNAMES[labels[i]]])
    (folder / split_file(shift)).write_text(json.dumps(rows))
    (folder / ".suite-version").write_text(SUITE_VERSION)


def ensure_builtin_suite(root: Path | None = None) -> Path:
    """Write the four shifted digit sets under ``root`` once (atomically per set); return ``root``."""
    root = Path(root) if root is not None else default_root()
    root.mkdir(parents=True, exist_ok=True)
    arrays: tuple[np.ndarray, np.ndarray] | None = None
    for shift, (folder_name, _, _) in SHIFTS.items():
        final = root / folder_name
        if _complete(final, shift):
            continue
        arrays = arrays or load_digits_arrays()
        tmp = Path(tempfile.mkdtemp(prefix=f".{folder_name}-", dir=root))
        try:
            _write_dataset(tmp / "d", shift, *arrays)
            if final.exists():  # stale or partial: move aside, then replace
                stale = Path(tempfile.mkdtemp(prefix=f".{folder_name}-stale-", dir=root))
                try:
                    final.rename(stale / "d")
                except OSError:
                    pass
            try:
                (tmp / "d").rename(final)
            except OSError:
                if not _complete(final, shift):  # a concurrent writer won only if it finished
                    raise
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
            for leftover in root.glob(f".{folder_name}-stale-*"):
                shutil.rmtree(leftover, ignore_errors=True)
    return root


def zero_shot_accuracy(model, preprocess, tokenizer, images: list[Image.Image], labels: np.ndarray) -> float:
    """Top-1 zero-shot accuracy (%) of an open_clip model with ``TEMPLATE`` over the ten digits."""
    import torch

    with torch.no_grad():
        text = model.encode_text(tokenizer([TEMPLATE.format(c) for c in CLASSNAMES]), normalize=True)
        pixels = torch.stack([preprocess(im) for im in images])
        feats = model.encode_image(pixels, normalize=True)
        pred = (feats @ text.T).argmax(dim=1).numpy()
    return float((pred == np.asarray(labels)).mean() * 100.0)

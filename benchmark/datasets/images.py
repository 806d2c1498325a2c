"""Opening images: files on disk, or the deterministic ``synthetic://`` images of paper-shapes."""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np
from PIL import Image, UnidentifiedImageError

from benchmark.errors import UserError

SYNTHETIC_SCHEME = "synthetic://"
SYNTHETIC_SIZE = 64


def synthetic_path(key: str, split: str, index: int) -> str:
    """The path of the ``index``-th generated image of a synthetic dataset's split."""
    return f"{SYNTHETIC_SCHEME}{key}/{split}/{index}"


def _synthetic_image(path: str) -> Image.Image:
    seed = int.from_bytes(hashlib.sha256(path.encode()).digest()[:8], "little")
    pixels = np.random.default_rng(seed).integers(0, 256, (SYNTHETIC_SIZE, SYNTHETIC_SIZE, 3), np.uint8)
    return Image.fromarray(pixels, "RGB")


def load_image(path: str | Path) -> Image.Image:
    """The image at ``path`` in RGB; a missing or unreadable file is a UserError naming it."""
    path = str(path)
    if path.startswith(SYNTHETIC_SCHEME):
        return _synthetic_image(path)
    try:
        with Image.open(path) as image:
            return image.convert("RGB")
    except FileNotFoundError:
        raise UserError(f"image {path} does not exist") from None
    except Image.DecompressionBombError as exc:  # more pixels than PIL's limit: a decompression bomb, or a huge scan
        raise UserError(f"image {path} is refused: {exc}") from None
    except (UnidentifiedImageError, OSError, ValueError) as exc:
        raise UserError(f"image {path} cannot be read: {exc}") from None

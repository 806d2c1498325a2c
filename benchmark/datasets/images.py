"""Opening images: files on disk, or the deterministic ``synthetic://`` images of paper-shapes."""

from __future__ import annotations

import hashlib
import os
import threading
from collections import OrderedDict
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


class DecodedImages:
    """A loader like :func:`load_image` that keeps decoded images in memory, up to ``max_bytes``
    (least recently used out): a run's training images are augmented afresh every generation
    (the official refinement module's views), and decoding them again each time costs more than
    augmenting them. Keyed by path, size and modification time, so an edited file is read again."""

    def __init__(self, max_bytes: int = 2 * 2**30) -> None:
        self.max_bytes = max_bytes
        self.held_bytes = 0
        self.decoded = 0  # images decoded (not served from memory), for tests and measurements
        self._images: OrderedDict[tuple, Image.Image] = OrderedDict()
        self._lock = threading.Lock()

    def __call__(self, path: str | Path) -> Image.Image:
        path = str(path)
        if path.startswith(SYNTHETIC_SCHEME):
            key: tuple = (path,)
        else:
            try:
                st = os.stat(path)
            except FileNotFoundError:
                raise UserError(f"image {path} does not exist") from None
            key = (path, st.st_size, st.st_mtime_ns)
        with self._lock:
            if key in self._images:
                self._images.move_to_end(key)
                return self._images[key]
        image = load_image(path)
        image.load()
        size = _nbytes(image)
        with self._lock:
            self.decoded += 1
            if size <= self.max_bytes and key not in self._images:
                self._images[key] = image
                self.held_bytes += size
                while self.held_bytes > self.max_bytes:
                    _, old = self._images.popitem(last=False)
                    self.held_bytes -= _nbytes(old)
        return image


def _nbytes(image: Image.Image) -> int:
    """Bytes of a decoded 8-bit image's pixels."""
    return len(image.getbands()) * image.width * image.height

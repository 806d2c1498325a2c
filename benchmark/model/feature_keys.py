"""The feature-cache key of a set of images: where they are, what each file is, how it is seen.

Features depend on the model and its weights, the precision, the transform and each image's
bytes. The bytes are stood for by each file's size and modification time in ns (``stat``, the
default: one ``stat`` per image, small next to encoding it) or by a sha256 of each file
(``content``: reads every byte, for file systems whose times cannot be trusted). The key is
built before any image is read, so a file that changes afterwards, even mid-encoding, changes
the key of every later lookup: its old entry is never served again, and the image is encoded
anew (an unreadable one then fails, naming the file).
"""

from __future__ import annotations

import hashlib
import os
import re
from collections.abc import Sequence
from typing import Any

from benchmark.datasets.images import SYNTHETIC_SCHEME
from benchmark.datasets.types import DatasetSplits, Item
from benchmark.errors import UserError
from benchmark.files import file_sha256

KEY_VERSION = 3  # bump when what a key means changes: older entries are then never hit
# 3: pretrained tags trained with QuickGELU are built with it (entries of 2 hold GELU models' features)
FINGERPRINTS = ("stat", "content")
FINGERPRINT_ENV = "CRAFT_FEATURE_FINGERPRINT"
_ADDRESS = re.compile(r" at 0x[0-9a-fA-F]+")


def default_fingerprint() -> str:
    """``$CRAFT_FEATURE_FINGERPRINT`` (``stat`` or ``content``), else ``stat``."""
    return check_fingerprint(os.environ.get(FINGERPRINT_ENV) or "stat", FINGERPRINT_ENV)


def check_fingerprint(how: str, source: str = "fingerprint") -> str:
    """``how`` if it is a known fingerprint kind, else a UserError naming ``source``."""
    if how not in FINGERPRINTS:
        raise UserError(f"{source} must be one of {', '.join(FINGERPRINTS)}, got {how!r}")
    return how


def describe_transform(transform: object) -> str:
    """A stable text for a transform: its repr (torchvision's shows every step and parameter:
    sizes, crop scale, flip, interpolation, mean and std) without memory addresses."""
    return _ADDRESS.sub("", repr(transform))


def file_fingerprint(path: str, how: str = "stat") -> str:
    """``size:mtime_ns`` of the file at ``path`` (``stat``) or the sha256 of its bytes (``content``);
    the path itself for a generated ``synthetic://`` image, which is a function of its path."""
    if path.startswith(SYNTHETIC_SCHEME):
        return "synthetic"
    try:
        if how == "content":
            return file_sha256(path)
        st = os.stat(path)
    except FileNotFoundError:
        raise UserError(f"image {path} does not exist") from None
    except OSError as exc:
        raise UserError(f"image {path} cannot be read: {exc.strerror or exc}") from None
    return f"{st.st_size}:{st.st_mtime_ns}"


def image_set_key(
    ds: DatasetSplits, items: Sequence[Item], transform_desc: str, base: dict[str, Any], fingerprint: str = "stat"
) -> dict[str, Any]:
    """The cache fields of ``items`` of ``ds`` seen through a transform described by ``transform_desc``:
    ``base`` (model, weights, precision, dataset, split, seed, ...) plus the resolved data root,
    the transform, the number of images and a digest of each image's path, label and fingerprint."""
    check_fingerprint(fingerprint)
    h = hashlib.sha256()
    for it in items:
        h.update(f"{it.path}\t{it.label}\t{file_fingerprint(ds.abspath(it), fingerprint)}\n".encode())
    root = os.path.realpath(ds.image_root) if ds.image_root else None
    return {
        **base, "key_version": KEY_VERSION, "root": root, "transform": transform_desc,
        "fingerprint": fingerprint, "n": len(items), "items": h.hexdigest()[:32],
    }

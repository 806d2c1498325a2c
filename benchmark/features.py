"""A disk cache of image features, keyed by everything that determines them.

One entry is ``<sha256>.safetensors`` (the tensor, no pickle) beside ``<sha256>.json`` (the fields,
for people). Both are written to a temporary file in the same folder and renamed into place, so a
reader sees a whole entry or none, and two processes filling the same entry at once are safe: each
computes, and the last rename wins with identical content.
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

TENSOR_NAME = "features"


def default_cache_root() -> Path:
    """``$CRAFT_BENCH_CACHE/features``, else ``~/.cache/craft-bench/features``."""
    base = os.environ.get("CRAFT_BENCH_CACHE")
    return (Path(base) if base else Path.home() / ".cache" / "craft-bench") / "features"


class FeatureCache:
    """Features on disk under ``root``, one entry per distinct set of fields."""

    def __init__(self, root: Path | None = None) -> None:
        self.root = Path(root) if root is not None else default_cache_root()

    @staticmethod
    def key(**fields: Any) -> str:
        """Stable sha256 of the fields (backbone, weights, dataset, split, seed, shots, aug pass, ...)."""
        text = json.dumps(fields, sort_keys=True, separators=(",", ":"), ensure_ascii=True)
        return hashlib.sha256(text.encode()).hexdigest()

    def path(self, fields: dict[str, Any]) -> Path:
        return self.root / f"{self.key(**fields)}.safetensors"

    def get(self, fields: dict[str, Any]) -> torch.Tensor | None:
        """The cached tensor, or None when absent or unreadable."""
        try:
            return load_file(self.path(fields))[TENSOR_NAME]
        except (FileNotFoundError, SafetensorError, KeyError):
            return None

    def get_or_compute(self, fields: dict[str, Any], compute: Callable[[], torch.Tensor]) -> torch.Tensor:
        """The cached tensor for ``fields``, computing and storing it first on a miss."""
        cached = self.get(fields)
        if cached is not None:
            return cached
        tensor = compute().detach().cpu().contiguous()
        path = self.path(fields)
        self.root.mkdir(parents=True, exist_ok=True)
        self._atomic_write(path.with_suffix(".json"), lambda p: Path(p).write_text(json.dumps(fields, indent=1)))
        self._atomic_write(path, lambda p: save_file({TENSOR_NAME: tensor}, p, metadata={"key": path.stem}))
        return tensor

    def _atomic_write(self, path: Path, write: Callable[[str], object]) -> None:
        fd, tmp = tempfile.mkstemp(dir=self.root, prefix=f".{path.name}.", suffix=".tmp")
        os.close(fd)
        try:
            write(tmp)
            os.replace(tmp, path)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise

"""A disk cache of image features, keyed by everything that determines them.

One entry is ``<sha256>.safetensors`` (the tensor, no pickle) beside ``<sha256>.json`` (the fields,
for people). Both are written to a temporary file in the same folder and renamed into place, so a
reader sees a whole entry or none, and two processes filling the same entry at once are safe: each
computes, and the last rename wins with identical content. ``entries``, ``check_entry`` and
``remove_entry`` are what ``craft cache`` sees and does (``entries`` imports no torch).
"""

from __future__ import annotations

import hashlib
import json
import os
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from benchmark.files import TMP_SUFFIX, write_atomic
from benchmark.model.feature_keys import check_fingerprint, default_fingerprint

if TYPE_CHECKING:
    import torch

TENSOR_NAME = "features"
SUFFIX = ".safetensors"
STRAY_TMP_S = 600.0  # a writer's temporary file older than this was left by a dead writer


def default_cache_root() -> Path:
    """``$CRAFT_BENCH_CACHE/features``, else ``~/.cache/craft-bench/features``."""
    base = os.environ.get("CRAFT_BENCH_CACHE")
    return (Path(base) if base else Path.home() / ".cache" / "craft-bench") / "features"


class FeatureCache:
    """Features on disk under ``root``, one entry per distinct set of fields."""

    def __init__(self, root: Path | None = None, fingerprint: str | None = None) -> None:
        """``fingerprint``: how image files enter keys (``stat`` or ``content``, see
        :mod:`benchmark.model.feature_keys`); None: ``$CRAFT_FEATURE_FINGERPRINT``, else ``stat``."""
        self.root = Path(root) if root is not None else default_cache_root()
        self.fingerprint = check_fingerprint(fingerprint) if fingerprint is not None else default_fingerprint()

    @staticmethod
    def key(**fields: Any) -> str:
        """Stable sha256 of the fields (backbone, weights, dataset, split, seed, shots, aug pass, ...)."""
        text = json.dumps(fields, sort_keys=True, separators=(",", ":"), ensure_ascii=True)
        return hashlib.sha256(text.encode()).hexdigest()

    def path(self, fields: dict[str, Any]) -> Path:
        return self.root / f"{self.key(**fields)}{SUFFIX}"

    def get(self, fields: dict[str, Any]) -> torch.Tensor | None:
        """The cached tensor, or None when absent, unreadable or not of the ``n`` rows that ``fields`` record."""
        from safetensors import SafetensorError
        from safetensors.torch import load_file

        try:
            # Copied into memory of its own: the file's tensor starts after its header, not on the
            # 64-byte boundary of torch's allocations, and a product with a misaligned operand can
            # round differently (a one-candidate einsum does): a run's results would depend on
            # whether its features came from the cache.
            tensor = load_file(self.path(fields))[TENSOR_NAME].clone()
        except (FileNotFoundError, SafetensorError, KeyError):
            return None
        n = fields.get("n")
        return None if isinstance(n, int) and (tensor.dim() == 0 or tensor.shape[0] != n) else tensor

    def get_or_compute(self, fields: dict[str, Any], compute: Callable[[], torch.Tensor]) -> torch.Tensor:
        """The cached tensor for ``fields``, computing and storing it first on a miss."""
        from safetensors.torch import save

        cached = self.get(fields)
        if cached is not None:
            return cached
        tensor = compute().detach().cpu().contiguous()
        path = self.path(fields)
        write_atomic(path.with_suffix(".json"), lambda f: f.write(json.dumps(fields, indent=1).encode()))
        write_atomic(path, lambda f: f.write(save({TENSOR_NAME: tensor}, metadata={"key": path.stem})))
        return tensor


@dataclass
class Entry:
    """One item of a cache folder: a tensor with its sidecar, or a leftover without the other half.

    ``fields`` is the sidecar's content (None when it is missing or unreadable); ``key`` the file
    name's stem; ``stray`` marks a writer's temporary file left behind.
    """

    key: str
    tensor: Path | None
    sidecar: Path | None
    fields: dict[str, Any] | None
    bytes: int
    mtime: float
    stray: bool = False

    def paths(self) -> list[Path]:
        return [p for p in (self.tensor, self.sidecar) if p is not None]


def _read_fields(path: Path) -> dict[str, Any] | None:
    try:
        fields = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, ValueError):
        return None
    return fields if isinstance(fields, dict) else None


def entries(root: Path) -> list[Entry]:
    """Every entry under ``root``, with leftovers: lone halves and writers' stale temporary files.
    A file that another process renames or removes meanwhile is left out."""
    groups: dict[str, dict[str, tuple[Path, os.stat_result]]] = {}
    found = []
    now = time.time()
    for path in sorted(root.iterdir()):
        stray = path.name.startswith(".") and path.name.endswith(TMP_SUFFIX)
        if not stray and path.suffix not in (SUFFIX, ".json"):
            continue
        try:
            st = path.stat()
        except FileNotFoundError:
            continue
        if stray and now - st.st_mtime > STRAY_TMP_S:  # younger ones are being written
            found.append(Entry(path.name, None, path, None, st.st_size, st.st_mtime, stray=True))
        elif not stray and path.is_file():
            groups.setdefault(path.stem, {})[path.suffix] = (path, st)
    for key, halves in groups.items():
        tensor, sidecar = halves.get(SUFFIX, (None, None))[0], halves.get(".json", (None, None))[0]
        stats = [st for _, st in halves.values()]
        fields = _read_fields(sidecar) if sidecar is not None else None
        found.append(Entry(key, tensor, sidecar, fields, sum(s.st_size for s in stats), max(s.st_mtime for s in stats)))
    return found


def check_entry(entry: Entry) -> str | None:
    """What is wrong with ``entry`` in one phrase, or None: both halves present, the sidecar's fields
    hash to the file name, and the tensor reads back with as many rows as the sidecar records."""
    if entry.stray:
        return "temporary file left by a writer that did not finish"
    if entry.tensor is None:
        return "sidecar without its features file"
    if entry.sidecar is None:
        return "features file without its .json sidecar"
    if entry.fields is None:
        return "sidecar is not a JSON object"
    if FeatureCache.key(**entry.fields) != entry.key:
        return "sidecar's fields do not hash to the file name"
    from safetensors import SafetensorError, safe_open

    try:
        with safe_open(entry.tensor, framework="pt") as f:
            tensor = f.get_tensor(TENSOR_NAME)
    except (OSError, SafetensorError, KeyError, ValueError) as exc:
        return f"features file cannot be read: {str(exc).splitlines()[0] if str(exc) else type(exc).__name__}"
    n = entry.fields.get("n")
    if not isinstance(n, int):
        return "sidecar records no image count n"
    if tensor.dim() == 0 or tensor.shape[0] != n:
        return f"features have shape {tuple(tensor.shape)}, expected {n} rows"
    return None


def remove_entry(entry: Entry) -> None:
    """Delete the entry's files (a file already gone is fine: another process removed it)."""
    for path in entry.paths():
        path.unlink(missing_ok=True)

"""Peak memory in MiB: the one measure of the cost table (white-box training, colocated runs, a
cell's process) and of ``craft perf``.

On CUDA: torch's peak of memory allocated on the device (weights, cached features, activations,
gradients, optimizer state: all that the work holds on the GPU). On CPU (Linux): the process's
peak resident set, ``VmHWM``, which :func:`peak_memory` resets at entry through
``/proc/self/clear_refs``. Both are process- or device-wide: runs sharing a process inflate each
other's figure, so cost measurements run one at a time.
"""

from __future__ import annotations

import re
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

import torch

_STATUS = Path("/proc/self/status")
_CLEAR_REFS = Path("/proc/self/clear_refs")


@dataclass
class PeakMemory:
    """Filled when the ``with`` block ends: ``mb`` (MiB), ``None`` where nothing can measure it; ``how``: what it is."""

    mb: float | None = None
    how: str = ""


def device_peak_mb(device: torch.device) -> float | None:
    """The peak of memory allocated on a CUDA ``device`` since its last reset (MiB); None on any other device."""
    return torch.cuda.max_memory_allocated(device) / 2**20 if device.type == "cuda" else None


def process_peak_rss_mb() -> float:
    """The process's peak resident set (MiB): ``VmHWM`` (since its last reset), else ``ru_maxrss`` (its whole life)."""
    try:
        return _status_kb("VmHWM") / 1024
    except OSError:
        import resource

        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def _status_kb(key: str) -> int:
    match = re.search(rf"^{key}:\s+(\d+) kB", _STATUS.read_text(), re.M)
    if match is None:
        raise OSError(f"{key} not in {_STATUS}")
    return int(match.group(1))


def _reset_rss_peak() -> bool:
    try:
        _CLEAR_REFS.write_text("5")  # Linux: 5 resets the peak resident set (VmHWM) to the current one
        return True
    except OSError:
        return False


@contextmanager
def peak_memory(device: torch.device, resident_bytes: int | None = 0) -> Iterator[PeakMemory]:
    """Measure the peak memory of the block on ``device``.

    On CPU: the process's peak resident set during the block above its level at entry, plus
    ``resident_bytes`` (what was resident before and the work needs: a model's weights); None where
    the peak cannot be reset. ``resident_bytes=None``: the whole peak resident set, all that was
    resident at entry included.
    """
    out = PeakMemory()
    if device.type == "cuda":
        torch.cuda.synchronize(device)
        torch.cuda.reset_peak_memory_stats(device)
        yield out
        torch.cuda.synchronize(device)
        out.mb, out.how = device_peak_mb(device), "cuda max_memory_allocated"
        return
    try:
        base_kb: int | None = _status_kb("VmRSS")
    except OSError:
        base_kb = None
    reset = _reset_rss_peak()
    yield out
    if resident_bytes is None:
        out.mb, out.how = process_peak_rss_mb(), "process peak RSS (model weights included)"
    elif reset and base_kb is not None:
        grown_kb = max(0, _status_kb("VmHWM") - base_kb)
        out.mb, out.how = grown_kb / 1024 + resident_bytes / 2**20, "peak RSS growth + weights"

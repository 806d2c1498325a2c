"""Peak training memory of a white-box run, for the cost table.

On CUDA: torch's peak of allocated memory while the block runs (weights, cached features,
activations, gradients, optimizer state: all that training holds on the GPU). On CPU (Linux):
the process's peak resident set above its level at entry (the peak is reset through
``/proc/self/clear_refs``), plus the model's weights, which were resident before and which
training needs. Both are process- or device-wide: runs sharing a server inflate each other's
figure, so cost measurements run one at a time.
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
    """Filled when the ``with`` block ends: ``mb`` (MiB), ``None`` where nothing can measure it."""

    mb: float | None = None
    how: str = ""


def _status_kb(key: str) -> int:
    match = re.search(rf"^{key}:\s+(\d+) kB", _STATUS.read_text(), re.M)
    if match is None:
        raise OSError(f"{key} not in {_STATUS}")
    return int(match.group(1))


def _reset_rss_peak() -> bool:
    try:
        _CLEAR_REFS.write_text("5")
        return True
    except OSError:
        return False


@contextmanager
def peak_memory(device: torch.device, resident_bytes: int = 0) -> Iterator[PeakMemory]:
    """Measure the peak memory of the block on ``device``; ``resident_bytes``: weights counted on CPU."""
    out = PeakMemory()
    if device.type == "cuda":
        torch.cuda.synchronize(device)
        torch.cuda.reset_peak_memory_stats(device)
        yield out
        torch.cuda.synchronize(device)
        out.mb, out.how = torch.cuda.max_memory_allocated(device) / 2**20, "cuda max_memory_allocated"
        return
    try:
        base_kb = _status_kb("VmRSS")
        ok = _reset_rss_peak()
    except OSError:
        ok = False
    yield out
    if ok:
        grown_kb = max(0, _status_kb("VmHWM") - base_kb)
        out.mb, out.how = grown_kb / 1024 + resident_bytes / 2**20, "peak RSS growth + weights"

"""Where a loop's thread blocks, and for how long: ``craft perf``'s diagnostic of what bounds
interleaved runs (kept free of torch: CMA-ES worker processes import it)."""

from __future__ import annotations

import time
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass, field
from typing import Iterator


@dataclass
class Waits:
    """When a loop's thread was blocked, and on what: ``(start, end, kind)`` in ``time.perf_counter``
    seconds. A measurement's diagnostic (``craft perf``): a thread that rarely waits for its GPU is
    what bounds the runs it interleaves."""

    spans: list[tuple[float, float, str]] = field(default_factory=list)

    def within(self, start: float, end: float) -> dict[str, float]:
        """Seconds blocked between ``start`` and ``end``, per kind."""
        out: dict[str, float] = {}
        for a, b, kind in self.spans:
            overlap = min(b, end) - max(a, start)
            if overlap > 0:
                out[kind] = out.get(kind, 0.0) + overlap
        return out


# Where the waits of this context are recorded (None: not recorded; craft perf's loops set it).
WAITS: ContextVar[Waits | None] = ContextVar("waits", default=None)


@contextmanager
def blocked(kind: str) -> Iterator[None]:
    """Record the enclosed wait in the context's :data:`WAITS`, if any."""
    waits = WAITS.get()
    if waits is None:
        yield
        return
    start = time.perf_counter()
    try:
        yield
    finally:
        waits.spans.append((start, time.perf_counter(), kind))

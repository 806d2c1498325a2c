"""Several runs stepped round-robin in one thread: ``craft perf``'s interleaved loops and their tests.

The product interleaves colocated runs on a model server (:class:`benchmark.serve.colocate.Interleaver`);
this is the same stepping (:func:`craft.interleave.take_turn`) without a server, to measure it.
"""

from __future__ import annotations

from collections import deque
from typing import Generator, Sequence, TypeVar

from craft.cma_es import WORKERS, CMAWorkers
from craft.interleave import take_turn

R = TypeVar("R")


def run_interleaved(runs: Sequence[Generator[None, None, R]], cma_workers: CMAWorkers | None = None) -> list[R | BaseException]:
    """Step ``runs`` round-robin until each returns; per run its result, or the exception it raised
    (a failing run ends alone: the others go on). ``cma_workers``: the pool their CMA-ES runs in
    (None: in this thread)."""
    token = WORKERS.set(cma_workers)
    try:
        return _round_robin(runs)
    finally:
        WORKERS.reset(token)


def _round_robin(runs: Sequence[Generator[None, None, R]]) -> list[R | BaseException]:
    out: list[R | BaseException | None] = [None] * len(runs)
    live = deque(enumerate(runs))
    while live:
        i, steps = live.popleft()
        ended = take_turn(steps)
        if ended is None:
            live.append((i, steps))
        else:
            out[i] = ended.error if ended.error is not None else ended.result
    return out  # type: ignore[return-value]

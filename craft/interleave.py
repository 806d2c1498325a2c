"""Several runs interleaved in one thread, so that one GPU is kept busy by all of them.

One CraFT run cannot keep a GPU busy: each generation's CMA-ES step on the CPU needs the
fitness of the text-tower pass before it, and the pass needs the step. A method's
:data:`craft.methods.base.Steps` yields where it would next wait for its device (its
candidates' pass and fitness, or an evaluation, queued). :func:`run_interleaved` steps
several such runs in turn: while one run's pass runs on the GPU, the next run's CMA-ES step
runs on the CPU, and no run waits for work queued after its own (:mod:`craft.transfer`).
Threads would do the same work with every run's Python contending for the interpreter lock;
here one thread does it in turn.

The thread's own CPU work then bounds the runs together: pycma's ask and tell is the largest
part of it (docs/throughput.md, CMA-ES workers). With ``cma_workers`` each run's CMA-ES
runs in a worker process (:class:`craft.cma_es.CMAWorkers`): a run sends its fitness and yields,
and takes its next candidates on its next turn, so the strategies compute on other cores.

A run's results do not depend on what it is interleaved with, nor on where its CMA-ES runs: its
arithmetic is its own, and on a CPU it is bit for bit that of the run alone
(tests/test_interleave.py).
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass
from typing import Any, Generator, Sequence, TypeVar

from craft.cma_es import WORKERS, CMAWorkers

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


@dataclass(frozen=True)
class Ended:
    """How a run ended: its result, or the exception it raised."""

    result: Any = None
    error: BaseException | None = None


def take_turn(steps: Generator[None, None, Any], catch: type[BaseException] = Exception) -> Ended | None:
    """Step a run once: None while it goes on, else how it ended (exceptions of type ``catch``
    become its outcome; others propagate)."""
    try:
        next(steps)
    except StopIteration as stop:
        return Ended(stop.value)
    except catch as exc:  # noqa: BLE001 - the run's outcome
        return Ended(error=exc)
    return None


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

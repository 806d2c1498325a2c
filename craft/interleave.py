"""One step of a run: how interleaved runs keep one GPU busy.

One CraFT run cannot keep a GPU busy: each generation's CMA-ES step on the CPU needs the
fitness of the text-tower pass before it, and the pass needs the step. A method's
:data:`craft.methods.base.Steps` yields where it would next wait for its device (its
candidates' pass and fitness, or an evaluation, queued). A driver that steps several such runs
in turn (:func:`take_turn`; :class:`benchmark.serve.colocate.Interleaver` on a model server) runs
one run's CMA-ES step on the CPU while another's pass runs on the GPU, and no run waits for work
queued after its own (:mod:`craft.transfer`). With CMA-ES worker processes
(:class:`craft.cma_es.CMAWorkers`) a run sends its fitness and yields, and takes its next
candidates on its next turn, so the strategies compute on other cores.

A run's results do not depend on what it is interleaved with, nor on where its CMA-ES runs: on a
CPU they are bit for bit those of the run alone (tests/test_interleave.py).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Generator


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

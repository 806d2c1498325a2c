"""Colocated runs: a black-box run executed in the model server's process (sweep key ``colocate``).

A run's own work (fitness of every candidate, refinement module, evaluation) scales with its
logits: 2.6 GB a generation at ImageNet's 16-shot shapes. Sent to a run's process, they cross
the object store and are worked on by one CPU core. Colocated, the run executes beside the
engine and its logits never leave the server's device.

The method still sees the model only through a :class:`craft.blackbox.MeteredBlackBox`:
logits in, queries counted and capped, as in a run of its own.

On a GPU the server's colocated runs are interleaved in one thread (:class:`Interleaver`, see
:mod:`craft.interleave`): while one run's text-tower pass runs, the next run's CMA-ES step
runs on the CPU, and each run's CMA-ES runs in a worker process of its own, so that several runs
keep the GPU busy where one run, or runs as threads, cannot. What it gains: docs/throughput.md.
"""

from __future__ import annotations

import threading
from collections import deque
from concurrent.futures import Future
from dataclasses import asdict
from typing import Any

import torch
from threadpoolctl import threadpool_limits

from benchmark.model.engine import ClipEngine, EngineBackend, TaskData
from benchmark.memory import device_peak_mb, peak_memory
from craft.blackbox import MeteredBlackBox
from craft.cma_es import WORKERS, CMAWorkers
from craft.interleave import take_turn
from craft.methods import RunResult, Task, get_method, make_config
from craft.methods.base import Steps, drive


class Interleaver:
    """Steps every colocated run submitted to it in one thread of its own, in turn.

    :meth:`run` is called by a server's caller threads and blocks until that run ends; runs
    submitted while others are live join the rotation at once. CMA-ES's eigendecompositions run on
    one BLAS thread, as in a run task.
    """

    def __init__(self, device: torch.device, cma_workers: bool = False) -> None:
        """``cma_workers``: each run's CMA-ES in a worker process (:class:`craft.cma_es.CMAWorkers`)."""
        self.device = torch.device(device)
        self._cma_workers = CMAWorkers() if cma_workers else None
        self._cond = threading.Condition()
        self._new: deque[tuple[Steps, Future]] = deque()
        self._thread: threading.Thread | None = None
        self.live_max = 0  # most runs live at once so far

    def run(self, steps: Steps) -> tuple[RunResult, float | None]:
        """Run ``steps`` with the others: its result and the GPU's peak memory (MiB) while it ran
        (shared with the runs beside it; None on a CPU)."""
        fut: Future = Future()
        with self._cond:
            self._new.append((steps, fut))
            if self._thread is None:
                self._thread = threading.Thread(target=self._loop, name="colocated-runs", daemon=True)
                self._thread.start()
            self._cond.notify()
        return fut.result()

    def _loop(self) -> None:
        WORKERS.set(self._cma_workers)  # this thread's context: the runs it steps take their workers here
        while True:
            with self._cond:
                while not self._new:
                    self._cond.wait()
            if self.device.type == "cuda":  # a fresh span of live runs: its own peak
                torch.cuda.reset_peak_memory_stats(self.device)
            with threadpool_limits(1):  # process-wide: held while runs are live only
                self._step_until_idle()

    def _step_until_idle(self) -> None:
        live: deque[tuple[Steps, Future]] = deque()
        while True:
            with self._cond:
                live.extend(self._new)
                self._new.clear()
                if not live:
                    return
            self.live_max = max(self.live_max, len(live))
            steps, fut = live.popleft()
            ended = take_turn(steps, catch=BaseException)  # whatever it raises, its caller raises
            if ended is None:
                live.append((steps, fut))
            elif ended.error is not None:
                fut.set_exception(ended.error)
            else:
                fut.set_result((ended.result, device_peak_mb(self.device)))


def run_colocated(
    engine: ClipEngine, prepared: TaskData, method: str, hparams: dict[str, Any], seed: int,
    *, budget: int, shots: int, dataset: str, eval_splits: tuple[str, ...], interleaver: Interleaver | None = None,
) -> dict[str, Any]:
    """Run black-box ``method`` on the engine's device: ``{"result": RunResult fields, "peak_mem_mb": ...}``.

    ``interleaver``: step the run there with the server's other colocated runs (else in the
    calling thread, alone)."""
    runner = get_method(method)
    if not runner.colocatable:
        raise ValueError(f"{method!r} does not run colocated: only methods whose work is on every candidate's "
                         "logits do (colocatable = True: bbt, craft)")
    config = make_config(method, hparams)
    box = MeteredBlackBox(EngineBackend(engine, prepared, output_device=engine.device), budget)
    task = Task(dataset, prepared.classnames, prepared.template, prepared.labels, shots, eval_splits, prepared.class_subsets)
    steps = runner.steps(box, task, config, seed)
    if interleaver is not None:
        result, peak = interleaver.run(steps)
    else:
        # As a run task: CMA-ES's eigendecompositions on one BLAS thread.
        with threadpool_limits(1), peak_memory(engine.device) as mem:
            result = drive(steps)
        # The GPU's peak; on a CPU none (the cell reports its run's process, as for runs in their own task).
        peak = mem.mb if engine.device.type == "cuda" else None
    return {"result": asdict(result), "peak_mem_mb": peak}

"""pycma's CMA-ES as BBT and CraFT drive it: in the run's thread, or in a worker process.

:class:`RunCMA` runs in the caller's process with numpy's global random state of its own.
:class:`RemoteCMA` runs the same strategy in a worker process of a :class:`CMAWorkers` pool:
``tell`` sends the fitness and returns at once, and the worker computes the tell and the next
ask while the caller does other work (steps other interleaved runs, :mod:`craft.interleave`);
``ask`` then takes the candidates. Both give a run the candidates it has alone in its own
process, bit for bit.
"""

from __future__ import annotations

import multiprocessing as mp
import threading
from contextlib import contextmanager
from contextvars import ContextVar
from typing import Any, Iterator

import numpy as np


def cma_strategy(dim: int, sigma: float, popsize: int, bound: float, seed: int, eigen_gap: float, maxiter: int | None = None):
    """pycma's CMA-ES as BBT and CraFT run it: ``x0 = 0``, box bounds ``+-bound`` when ``bound > 0``,
    and the eigendecomposition interval scaled by ``eigen_gap`` (see :class:`craft.methods.BBTConfig`)."""
    import cma  # here, not at the top: it imports scipy.stats and matplotlib (a second), which a sweep's driver never needs

    opts = {"popsize": popsize, "seed": seed, "verbose": -9}
    if maxiter is not None:
        opts["maxiter"] = maxiter
    if bound > 0:
        opts["bounds"] = [-bound, bound]
    es = cma.CMAEvolutionStrategy(np.zeros(dim), sigma, opts)
    es.sm.lazy_update_gap *= eigen_gap  # pycma's interval, from c1, c_mu and N, scaled
    return es


class RunCMA:
    """:func:`cma_strategy` in this process, with numpy's global random state of its own.

    pycma seeds numpy's global random state and draws from it, for its samples and in its step-size
    rule's consistency checks. Runs that share a process (interleaved in one thread,
    :mod:`craft.interleave`, or concurrent in a model server's threads) would share that state, and
    each run's candidates would depend on the others'. So each run keeps its own: swapped in around
    every pycma call, under a process-wide lock, and the caller's put back.
    """

    remote = False
    _lock = threading.Lock()

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        """The arguments of :func:`cma_strategy`."""
        self._state: tuple | None = None  # the run's own; pycma seeds it in its constructor
        with self._own_random_state():
            self.es = cma_strategy(*args, **kwargs)

    @contextmanager
    def _own_random_state(self) -> Iterator[None]:
        with self._lock:
            outside = np.random.get_state()
            if self._state is not None:
                np.random.set_state(self._state)
            try:
                yield
            finally:
                self._state = np.random.get_state()
                np.random.set_state(outside)

    def ask(self) -> list[np.ndarray]:
        with self._own_random_state():
            return self.es.ask()

    def tell(self, solutions: list[np.ndarray], values: list[float]) -> None:
        with self._own_random_state():
            self.es.tell(solutions, values)

    def close(self) -> None:
        pass


def _serve(conn) -> None:
    """A worker: one strategy at a time (``new``), each ``step`` a tell and the next ask. BLAS on
    one thread, as in a run's own process: its threads would spin on the cores the runs use."""
    from threadpoolctl import threadpool_limits

    threadpool_limits(1)
    es = last = None
    while True:
        msg = conn.recv()
        if msg is None:
            return
        try:
            if msg[0] == "new":
                es = cma_strategy(*msg[1], **msg[2])  # seeds this process's global random state
                last = es.ask()
            else:  # ("step", values): the candidates asked last, told their fitness
                es.tell(last, msg[1])
                last = es.ask()
            conn.send(("ok", np.asarray(last)))
        except Exception as exc:  # noqa: BLE001 - raised in the run that sent the message
            conn.send(("error", f"{type(exc).__name__}: {exc}"))


class CMAWorkers:
    """A pool of worker processes for :class:`RemoteCMA`; a run holds one worker while it lives.

    Workers are forked from a forkserver that has pycma imported, so a new one starts in a few
    milliseconds, and they are reused run after run. Use as a context manager (or :meth:`close`).
    """

    def __init__(self) -> None:
        self._ctx = mp.get_context("forkserver")
        self._ctx.set_forkserver_preload(["craft.cma_es", "cma"])
        self._idle: list[tuple[Any, Any]] = []
        self._all: list[tuple[Any, Any]] = []
        self._lock = threading.Lock()

    def checkout(self) -> tuple[Any, Any]:
        """An idle worker ``(process, connection)``, started if there is none."""
        with self._lock:
            if self._idle:
                return self._idle.pop()
        parent, child = self._ctx.Pipe()
        proc = self._ctx.Process(target=_serve, args=(child,), daemon=True, name="cma-worker")
        proc.start()
        child.close()
        with self._lock:
            self._all.append((proc, parent))
        return proc, parent

    def checkin(self, worker: tuple[Any, Any]) -> None:
        with self._lock:
            self._idle.append(worker)

    @property
    def started(self) -> int:
        """Worker processes started so far."""
        return len(self._all)

    def close(self) -> None:
        with self._lock:
            workers, self._all, self._idle = self._all, [], []
        for proc, conn in workers:
            try:
                conn.send(None)
            except OSError:
                pass
            proc.join(5)
            if proc.is_alive():
                proc.kill()

    def __enter__(self) -> "CMAWorkers":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()


class RemoteCMA:
    """:func:`cma_strategy` in a worker of ``workers``: :meth:`tell` sends and returns at once,
    :meth:`ask` waits for the worker's tell and next ask. Calls alternate: ask, tell, ask, ..."""

    remote = True

    def __init__(self, workers: CMAWorkers, *args: Any, **kwargs: Any) -> None:
        self._workers = workers
        self._worker: tuple[Any, Any] | None = workers.checkout()
        self._conn = self._worker[1]
        self._conn.send(("new", args, kwargs))
        self._pending = True  # an answer on its way

    def _receive(self) -> list[np.ndarray]:
        status, value = self._conn.recv()
        self._pending = False
        if status != "ok":
            raise RuntimeError(f"CMA-ES worker: {value}")
        return list(value)

    def ask(self) -> list[np.ndarray]:
        return self._receive()

    def tell(self, solutions: list[np.ndarray], values: list[float]) -> None:
        """``solutions`` must be those of the last :meth:`ask` (the worker tells its own copy)."""
        self._conn.send(("step", list(values)))
        self._pending = True

    def close(self) -> None:
        """Give the worker back, once its answer to a pending message (which nobody will ask for) is read."""
        if self._worker is not None:
            worker, self._worker = self._worker, None
            if self._pending:
                self._conn.recv()
            self._workers.checkin(worker)


# The pool that runs stepped in this context take their CMA-ES workers from (craft.interleave sets it).
WORKERS: ContextVar[CMAWorkers | None] = ContextVar("cma_workers", default=None)


def new_cma(*args: Any, **kwargs: Any) -> RunCMA | RemoteCMA:
    """A run's CMA-ES (the arguments of :func:`cma_strategy`): in a worker of the context's pool
    (:data:`WORKERS`) if there is one, else in this process."""
    workers = WORKERS.get()
    return RemoteCMA(workers, *args, **kwargs) if workers is not None else RunCMA(*args, **kwargs)

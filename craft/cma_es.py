"""pycma's CMA-ES as BBT and CraFT drive it: in the run's thread, or in a worker process.

:class:`RunCMA` runs in the caller's process with numpy's global random state of its own.
:class:`RemoteCMA` runs the same strategy in a worker process of a :class:`CMAWorkers` pool:
``tell`` sends the fitness and returns at once, and the worker computes the tell and the next
ask while the caller does other work (steps other interleaved runs, :mod:`craft.interleave`);
``ask`` then takes the candidates. Both give a run the candidates it has alone in its own
process, bit for bit.

Both follow one cycle: the constructor asks the first population; ``ask`` hands out the
candidates pending; ``tell`` gives their fitness, after which the strategy computes the prompt in
use (:attr:`prompt_z`, by :func:`tell_and_ask`) and asks the next candidates.
"""

from __future__ import annotations

import os
import pickle
import subprocess
import sys
import threading
from contextlib import contextmanager
from contextvars import ContextVar
from typing import Any, BinaryIO, Iterator

import numpy as np

from craft.waits import blocked


# The step-size rules a run may pin. The official code ran with pycma's default of its time, CSA;
# pycma 4.5 made TPA the default at dimension >= 300, so the rule is always named, never left to
# the installed version.
STEP_RULES = {"csa": "CMAAdaptSigmaCSA", "tpa": "CMAAdaptSigmaTPA"}

# Where the prompt in use comes from after each tell (see tell_and_ask).
PROMPT_SOURCES = ("mean", "candidates", "xbest")


def pycma_seed(seed: int) -> int:
    """The run's seed as pycma's ``seed`` option: the same number, as the official code passes it,
    except 0, which pycma reads as "seed from the clock"."""
    return seed if seed != 0 else 2**31


_POPULATION_CLASSES: tuple[type, type] | None = None


def population_classes() -> tuple[type, type]:
    """pycma's ``CMAEvolutionStrategy`` and ``BoundTransform``, with each ask's candidates repaired
    into the box in one call instead of one call each.

    pycma's ``ask`` repairs its candidates one at a time through its linear-quadratic box
    transformation, a dozen small-array operations per candidate (``measurement.cma_cost`` times
    a generation). Here ``ask_geno`` hands the population to the boundary handler, which at
    the first candidate's repair runs pycma's own transformation once over the whole population
    (its bounds broadcast to the population's shape) and answers each candidate from that.
    Every operation of the transformation is elementwise, so each candidate gets pycma's values
    bit for bit (``tests/test_cma_es.py``); a candidate that is not a row of the population asked
    last goes to pycma as before.
    """
    global _POPULATION_CLASSES
    if _POPULATION_CLASSES is None:
        from types import SimpleNamespace

        import cma
        from cma.boundary_handler import BoundTransform

        class PopulationBoundTransform(BoundTransform):
            _population: np.ndarray | None = None  # the genotypes asked last
            _repaired: tuple[np.ndarray, np.ndarray] | None = None  # their repairs, and which rows changed

            def expect(self, population: np.ndarray) -> None:
                """The population just asked: its rows are repaired together (a 2-D float array inside bounds only)."""
                ok = self.bounds is not None and population.ndim == 2 and population.dtype == np.float64
                self._population, self._repaired = (population if ok else None), None

            def _row(self, x: Any) -> int | None:
                """``x``'s row in the population asked last, None if it is not one of its rows."""
                pop = self._population
                if (pop is None or not isinstance(x, np.ndarray) or x.base is not pop
                        or x.shape != pop.shape[1:] or x.strides != pop.strides[1:]):
                    return None
                offset = x.ctypes.data - pop.ctypes.data
                i, rest = divmod(offset, pop.strides[0])
                return i if rest == 0 and 0 <= i < len(pop) else None

            def _repair_all(self, pop: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
                tf = self.bounds_tf
                if len(tf._lb) != pop.shape[1]:
                    tf.initialize(pop.shape[1])
                shadow = SimpleNamespace(**{k: np.broadcast_to(getattr(tf, k), pop.shape) for k in ("_lb", "_ub", "_al", "_au")})
                repaired = np.asarray(type(tf).__call__(shadow, pop, copy=True))
                return repaired, (repaired != pop).any(axis=1)

            def repair(self, x, copy_if_changed=True):
                i = self._row(x)
                if i is None:
                    return super().repair(x, copy_if_changed)
                if self._repaired is None:
                    self._repaired = self._repair_all(self._population)
                repaired, changed = self._repaired
                if not changed[i]:
                    return x  # pycma returns an unchanged candidate itself
                return repaired[i].copy()

        class PopulationCMA(cma.CMAEvolutionStrategy):
            def ask_geno(self, *args: Any, **kwargs: Any) -> np.ndarray:
                pop = super().ask_geno(*args, **kwargs)
                if isinstance(self.boundary_handler, PopulationBoundTransform):
                    self.boundary_handler.expect(pop)
                return pop

        _POPULATION_CLASSES = (PopulationCMA, PopulationBoundTransform)
    return _POPULATION_CLASSES


def cma_strategy(dim: int, sigma: float, popsize: int, bound: float, seed: int, eigen_gap: float,
                 maxiter: int | None = None, step_rule: str = "csa"):
    """pycma's CMA-ES as BBT and CraFT run it: ``x0 = 0``, box bounds ``+-bound`` when ``bound > 0``,
    the step-size rule ``step_rule`` (:data:`STEP_RULES`), and the eigendecomposition interval scaled
    by ``eigen_gap`` (see :class:`craft.methods.BBTConfig`)."""
    import cma  # here, not at the top: it imports scipy.stats and matplotlib (a second), which a sweep's driver never needs

    if step_rule not in STEP_RULES:
        raise ValueError(f"unknown CMA-ES step-size rule {step_rule!r}; expected one of {', '.join(STEP_RULES)}")
    opts = {"popsize": popsize, "seed": pycma_seed(seed), "verbose": -9,
            "AdaptSigma": getattr(cma.sigma_adaptation, STEP_RULES[step_rule])}
    if maxiter is not None:
        opts["maxiter"] = maxiter
    if bound > 0:
        opts["bounds"] = [-bound, bound]
        opts["BoundaryHandler"] = population_classes()[1]
    es = population_classes()[0](np.zeros(dim), sigma, opts)
    es.sm.lazy_update_gap *= eigen_gap  # pycma's interval, from c1, c_mu and N, scaled
    return es


def tell_and_ask(es: Any, solutions: list[np.ndarray], values: list[float], prompt_from: str) -> tuple[list[np.ndarray], np.ndarray]:
    """Tell ``es`` the candidates' fitness; return the next candidates and the ``z`` of the prompt in use.

    ``prompt_from``: ``mean``, the mean of a freshly asked population, asked before the next
    candidates (the official loop: two asks per tell, which only CSA allows); ``candidates``, the
    mean of the next candidates (one ask per tell); ``xbest``, the best candidate evaluated so far
    (the official ImageNet scripts).
    """
    es.tell(solutions, values)
    if prompt_from == "mean":
        prompt = np.mean(es.ask(), axis=0)
        following = es.ask()
    elif prompt_from == "candidates":
        following = es.ask()
        prompt = np.mean(following, axis=0)
    elif prompt_from == "xbest":
        following = es.ask()
        prompt = np.array(es.result.xbest, copy=True)
    else:
        raise ValueError(f"unknown prompt source {prompt_from!r}; expected one of {', '.join(PROMPT_SOURCES)}")
    return following, prompt


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

    def __init__(self, prompt_from: str, *args: Any, **kwargs: Any) -> None:
        """``prompt_from`` (see :func:`tell_and_ask`), then the arguments of :func:`cma_strategy`."""
        self._state: tuple | None = None  # the run's own; pycma seeds it in its constructor
        self.prompt_from = prompt_from
        self.prompt_z: np.ndarray | None = None  # the prompt in use, after the first tell
        with self._own_random_state():
            self.es = cma_strategy(*args, **kwargs)
            self._pending = self.es.ask()

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
        """The candidates to score next."""
        return self._pending

    def tell(self, solutions: list[np.ndarray], values: list[float]) -> None:
        """Fitness of the last :meth:`ask`'s candidates; computes :attr:`prompt_z` and the next candidates."""
        with self._own_random_state():
            self._pending, self.prompt_z = tell_and_ask(self.es, solutions, values, self.prompt_from)

    def close(self) -> None:
        pass


def _serve(inp: BinaryIO, out: BinaryIO) -> None:
    """A worker's loop: one strategy at a time (``new``), each ``step`` a tell and the next ask;
    pickled messages in, pickled answers out. BLAS on one thread, as in a run's own process (its
    threads would spin on the cores the runs use)."""
    from threadpoolctl import threadpool_limits

    threadpool_limits(1)
    es = last = prompt_from = None
    prompt = None
    while True:
        try:
            msg = pickle.load(inp)
        except EOFError:  # the pool closed its end
            return
        if msg is None:
            return
        try:
            if msg[0] == "new":  # ("new", prompt_from, args, kwargs)
                prompt_from = msg[1]
                es = cma_strategy(*msg[2], **msg[3])  # seeds this process's global random state
                last, prompt = es.ask(), None
            else:  # ("step", values): the candidates asked last, told their fitness
                last, prompt = tell_and_ask(es, last, msg[1], prompt_from)
            answer = ("ok", (np.asarray(last), prompt))
        except Exception as exc:  # noqa: BLE001 - raised in the run that sent the message
            answer = ("error", f"{type(exc).__name__}: {exc}")
        pickle.dump(answer, out, protocol=pickle.HIGHEST_PROTOCOL)
        out.flush()


class _Worker:
    """One worker process (``python -m craft.cma_es``) and its pipes."""

    def __init__(self) -> None:
        # A fresh interpreter, not a fork: nothing of the caller's (CUDA, threads, its __main__) is copied.
        # It imports what this process imports: the same path.
        env = {**os.environ, "PYTHONPATH": os.pathsep.join(p for p in sys.path if p)}
        self.proc = subprocess.Popen([sys.executable, "-m", "craft.cma_es"], stdin=subprocess.PIPE,
                                     stdout=subprocess.PIPE, env=env)

    def send(self, msg: Any) -> None:
        pickle.dump(msg, self.proc.stdin, protocol=pickle.HIGHEST_PROTOCOL)
        self.proc.stdin.flush()

    def receive(self) -> Any:
        try:
            return pickle.load(self.proc.stdout)
        except EOFError:
            raise RuntimeError(f"CMA-ES worker exited (code {self.proc.wait()})") from None

    def close(self) -> None:
        try:
            self.send(None)
            self.proc.stdin.close()
        except OSError:
            pass
        try:
            self.proc.wait(5)
        except subprocess.TimeoutExpired:
            self.proc.kill()


class CMAWorkers:
    """A pool of worker processes for :class:`RemoteCMA`; a run holds one worker while it lives.

    Each worker is a fresh interpreter that imports pycma once: workers are reused run after run.
    Use as a context manager (or :meth:`close`).
    """

    def __init__(self) -> None:
        self._idle: list[_Worker] = []
        self._all: list[_Worker] = []
        self._lock = threading.Lock()

    def checkout(self) -> _Worker:
        """An idle worker, started if there is none."""
        with self._lock:
            if self._idle:
                return self._idle.pop()
        worker = _Worker()
        with self._lock:
            self._all.append(worker)
        return worker

    def checkin(self, worker: _Worker) -> None:
        with self._lock:
            self._idle.append(worker)

    @property
    def started(self) -> int:
        """Worker processes started so far."""
        return len(self._all)

    def close(self) -> None:
        with self._lock:
            workers, self._all, self._idle = self._all, [], []
        for worker in workers:
            worker.close()

    def __enter__(self) -> "CMAWorkers":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()


class RemoteCMA:
    """:func:`cma_strategy` in a worker of ``workers``: :meth:`tell` sends and returns at once,
    :meth:`ask` waits for the worker's tell and next ask (and :attr:`prompt_z`). Calls alternate:
    ask, tell, ask, ..."""

    remote = True

    def __init__(self, workers: CMAWorkers, prompt_from: str, *args: Any, **kwargs: Any) -> None:
        self._workers = workers
        self._worker: _Worker | None = workers.checkout()
        self._worker.send(("new", prompt_from, args, kwargs))
        self._pending = True  # an answer on its way
        self.prompt_z: np.ndarray | None = None

    def ask(self) -> list[np.ndarray]:
        assert self._worker is not None, "closed"
        with blocked("cma_worker"):
            status, value = self._worker.receive()
        self._pending = False
        if status != "ok":
            raise RuntimeError(f"CMA-ES worker: {value}")
        candidates, prompt = value
        if prompt is not None:
            self.prompt_z = prompt
        return list(candidates)

    def tell(self, solutions: list[np.ndarray], values: list[float]) -> None:
        """``solutions`` must be those of the last :meth:`ask` (the worker tells its own copy)."""
        assert self._worker is not None, "closed"
        self._worker.send(("step", [float(v) for v in values]))
        self._pending = True

    def close(self) -> None:
        """Give the worker back, once its answer to a pending message (which nobody will ask for) is read."""
        if self._worker is not None:
            worker, self._worker = self._worker, None
            if self._pending:
                worker.receive()
            self._workers.checkin(worker)


# The pool that runs stepped in this context take their CMA-ES workers from (craft.interleave sets it).
WORKERS: ContextVar[CMAWorkers | None] = ContextVar("cma_workers", default=None)


def new_cma(*args: Any, **kwargs: Any) -> RunCMA | RemoteCMA:
    """A run's CMA-ES (``prompt_from``, then the arguments of :func:`cma_strategy`): in a worker of
    the context's pool (:data:`WORKERS`) if there is one, else in this process."""
    workers = WORKERS.get()
    return RemoteCMA(workers, *args, **kwargs) if workers is not None else RunCMA(*args, **kwargs)


if __name__ == "__main__":  # a worker of CMAWorkers: the protocol on the original stdin and stdout
    _protocol_out = os.fdopen(os.dup(1), "wb")
    os.dup2(2, 1)  # anything printed goes to stderr, not into the answers
    _serve(sys.stdin.buffer, _protocol_out)

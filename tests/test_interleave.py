"""Runs interleaved in one thread (craft.interleave, benchmark.serve.colocate.Interleaver): each run's
results are those it has alone, the runs take turns, and a failing run ends alone."""

from __future__ import annotations

import threading
from dataclasses import asdict

import pytest
import torch
from threadpoolctl import threadpool_limits

from benchmark.serve.colocate import Interleaver
from craft.blackbox import MeteredBlackBox
from measurement.interleaved import run_interleaved
from craft.methods import Task, get_method, make_config
from craft.methods.base import drive
from tests.fakes import LinearBackend

SMALL = {"popsize": 6, "intrinsic_dim": 12, "budget": 6 * 7, "eval_every": 3}


class TaggedBackend(LinearBackend):
    """Records, in one shared list, which run made each budgeted call (its tag)."""

    def __init__(self, tag: str, log: list[str]) -> None:
        super().__init__()
        self.tag, self.log = tag, log

    def logits(self, contexts, split, indices=None):
        if contexts.shape[0] > 1:  # the candidates of a generation (the refinement query has one)
            self.log.append(self.tag)
        return super().logits(contexts, split, indices)


def _steps(method: str, seed: int, log: list[str] | None = None, on_eval=None):
    backend = TaggedBackend(f"{method}{seed}", log if log is not None else [])
    box = MeteredBlackBox(backend, 1000)
    task = Task("fake", [f"c{i}" for i in range(5)], "a photo of a {}.", backend.labels, shots=4, on_eval=on_eval)
    runner = get_method(method)
    return runner.steps(box, task, make_config(method, SMALL), seed)


def _alone(method: str, seed: int):
    """The run alone with BLAS on one thread, as the interleaver runs it (matrix products round alike)."""
    with threadpool_limits(1):
        return drive(_steps(method, seed))


def _same(a, b) -> None:
    a, b = asdict(a), asdict(b)
    a.pop("wall_s"), b.pop("wall_s")
    assert a == b


def test_interleaved_runs_each_give_the_results_they_have_alone():
    specs = [("craft", 1), ("craft", 2), ("bbt", 3)]
    alone = [drive(_steps(m, s)) for m, s in specs]
    together = run_interleaved([_steps(m, s) for m, s in specs])
    for a, t in zip(alone, together):
        _same(t, a)
    assert alone[0].trace != alone[1].trace  # the runs differ: each got its own


def test_runs_take_turns_a_generation_each():
    log: list[str] = []
    run_interleaved([_steps("craft", 1, log), _steps("craft", 2, log)])
    generations = SMALL["budget"] // SMALL["popsize"]
    assert log == ["craft1", "craft2"] * generations


def test_a_run_yields_once_per_generation_and_once_per_evaluation():
    steps = _steps("craft", 1)
    yields = 0
    with pytest.raises(StopIteration):
        while True:
            next(steps)
            yields += 1
    generations = SMALL["budget"] // SMALL["popsize"]  # 7, evaluated at 3, 6 and the last
    assert yields == generations + 3


def test_a_failing_run_ends_alone_and_the_others_finish():
    def stop(row):
        if row["generation"] >= 3:
            raise RuntimeError("pruned")

    out = run_interleaved([_steps("craft", 1), _steps("craft", 2, on_eval=stop), _steps("bbt", 3)])
    assert isinstance(out[1], RuntimeError) and str(out[1]) == "pruned"
    _same(out[0], drive(_steps("craft", 1)))
    _same(out[2], drive(_steps("bbt", 3)))


def test_the_server_interleaver_steps_concurrent_callers_runs_together():
    inter = Interleaver(torch.device("cpu"))
    both_in = threading.Barrier(2)
    submitted = threading.Event()

    def held(steps):
        """A run that starts only once the other caller's run has been submitted too."""
        while not submitted.is_set():
            yield
        return (yield from steps)

    results: dict[int, object] = {}

    def call(i: int) -> None:
        both_in.wait()
        steps = _steps("craft", i)
        if i == 1:
            steps = held(steps)
        else:
            threading.Timer(0.2, submitted.set).start()  # after this call has been submitted
        try:
            results[i] = inter.run(steps)
        except BaseException as exc:  # noqa: BLE001 - asserted below
            results[i] = exc

    threads = [threading.Thread(target=call, args=(i,)) for i in (1, 2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert inter.live_max == 2
    for i in (1, 2):
        result, peak = results[i]
        assert peak is None  # no GPU peak on a CPU
        _same(result, _alone("craft", i))
    # A failing run raises in its caller; the interleaver goes on serving.
    with pytest.raises(RuntimeError, match="pruned"):
        inter.run(_steps("craft", 1, on_eval=lambda row: (_ for _ in ()).throw(RuntimeError("pruned"))))
    result, _ = inter.run(_steps("bbt", 3))
    _same(result, _alone("bbt", 3))


def test_a_run_keeps_numpys_global_random_state_to_itself():
    import numpy as np

    # pycma seeds and draws from numpy's global state; a run swaps in its own around each call.
    np.random.seed(5)
    expected_next = np.random.RandomState(5).rand()
    result = drive(_steps("craft", 1))
    assert np.random.rand() == expected_next  # the caller's state, not advanced by the run
    np.random.seed(6)
    _same(drive(_steps("craft", 1)), result)  # nor does the run depend on it


@pytest.fixture(scope="module")
def workers():
    from craft.cma_es import CMAWorkers

    with CMAWorkers() as pool:
        yield pool


@pytest.mark.parametrize("prompt_from", ["mean", "candidates", "xbest"])
def test_cma_in_a_worker_process_asks_what_it_asks_in_the_run(workers, prompt_from):
    import numpy as np

    from craft.cma_es import RemoteCMA, RunCMA

    args = (prompt_from, 16, 1.0, 6, 5.0, 7, 10.0)
    here, there = RunCMA(*args), RemoteCMA(workers, *args)
    try:
        for g in range(8):  # past pycma's first consistency checks (from its 4th tell)
            a, b = here.ask(), there.ask()
            assert np.array_equal(np.array(a), np.array(b)), g
            if g:
                assert np.array_equal(here.prompt_z, there.prompt_z), g
            values = [float(np.sum(x**2)) for x in a]
            here.tell(a, values)
            there.tell(b, values)
    finally:
        there.close()  # with a tell's answer pending: read and dropped


def test_interleaved_runs_with_cma_workers_give_the_results_each_has_alone(workers):
    specs = [("craft", 1), ("craft", 2), ("bbt", 3)]
    before = workers.started
    together = run_interleaved([_steps(m, s) for m, s in specs], cma_workers=workers)
    for (m, s), t in zip(specs, together):
        _same(t, drive(_steps(m, s)))
    assert workers.started - before <= 3  # one worker per live run, reused afterwards
    again = run_interleaved([_steps("craft", 1)], cma_workers=workers)
    _same(again[0], together[0])
    assert workers.started - before <= 3


def test_a_run_that_fails_gives_its_worker_back_in_a_state_the_next_run_can_use(workers):
    def stop(row):
        if row["generation"] >= 3:
            raise RuntimeError("pruned")

    out = run_interleaved([_steps("craft", 2, on_eval=stop)], cma_workers=workers)
    assert isinstance(out[0], RuntimeError)
    started = workers.started
    [after] = run_interleaved([_steps("bbt", 3)], cma_workers=workers)
    assert workers.started == started  # the same worker, reused
    _same(after, drive(_steps("bbt", 3)))


def test_waits_for_workers_are_recorded_where_a_measurement_asks_for_them(workers):
    import time

    from craft.waits import WAITS, Waits, blocked

    with blocked("device"):  # nobody records
        pass
    waits = Waits()
    token = WAITS.set(waits)
    try:
        start = time.perf_counter()
        run_interleaved([_steps("bbt", 3)], cma_workers=workers)
        with blocked("device"):
            time.sleep(0.01)
        end = time.perf_counter()
    finally:
        WAITS.reset(token)
    kinds = waits.within(start, end)
    assert set(kinds) == {"cma_worker", "device"} and kinds["device"] >= 0.01
    assert waits.within(end, end + 1) == {}  # only the overlap with the window counts
    assert sum(kinds.values()) <= end - start


def test_a_worker_reports_pycmas_error_in_the_run(workers):
    from craft.cma_es import RemoteCMA

    cma = RemoteCMA(workers, "mean", 0, 1.0, 6, 5.0, 7, 10.0)  # dimension 0
    with pytest.raises(RuntimeError, match="CMA-ES worker: "):
        cma.ask()
    cma.close()

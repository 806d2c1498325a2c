"""A sweep on a local Ray runtime, as ``craft demo`` runs one: no more runs in flight than CPUs."""

from __future__ import annotations

from pathlib import Path

import pytest

from benchmark.report.load import load_results
from benchmark.sweep.config import config_from_dict
from benchmark.sweep.plan import expand


def test_a_local_sweep_runs_each_cell_once_one_at_a_time_on_one_cpu(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A run blocks in ``ray.get`` at every query, and Ray lends a blocked task's CPU to the next
    task, so the driver caps runs in flight at the CPUs (recorded times are to the second)."""
    ray = pytest.importorskip("ray")
    from benchmark.datasets.builtin import ensure_builtin_suite
    from benchmark.serve.options import ServerOptions
    from benchmark.sweep.runner import run_sweep

    monkeypatch.setenv("CRAFT_BENCH_CACHE", str(tmp_path / "cache"))  # workers inherit it
    ensure_builtin_suite(tmp_path / "cache" / "builtin")
    cfg = config_from_dict({
        "out": str(tmp_path / "out"), "datasets": ["digits_rotate"], "methods": ["bbt"], "shots": [2],
        "seeds": [1, 2, 3], "backbones": ["craft-tiny:builtin"], "runs_per_server": 4,
        "hparams": {"bbt": {"*": {"budget": 400, "intrinsic_dim": 64}}},
    })
    cells = expand(cfg)
    ray.init(address="local", num_cpus=1, include_dashboard=False, log_to_driver=False)  # not a cluster `ray start` left
    try:
        summary = run_sweep(cells, cfg.out, ServerOptions(runs_per_server=4), progress=False)
    finally:
        ray.shutdown()
    assert (summary.done, summary.failed) == (3, 0)
    rows = load_results(cfg.out).sort_values("started_at")
    assert sorted(rows["cell_id"]) == sorted(c.cell_id for c in cells)
    spans = list(zip(rows["started_at"], rows["finished_at"]))
    for (_, end), (start, _) in zip(spans, spans[1:]):
        assert start >= end, f"two runs in flight on one CPU: {spans}"


class _Remote:
    def __init__(self) -> None:
        self.started: list[str] = []

    def remote(self, cell, servers, eval_test, colocate, sink=None):  # noqa: ANN001 - stands in for a Ray remote function
        self.started.append(cell.cell_id)
        return object()


def test_submit_fills_free_slots_in_order_on_the_least_loaded_server() -> None:
    from benchmark.serve.leases import ServerLeases
    from benchmark.serve.options import ServerOptions
    from benchmark.serve.pool import ServerKey, ServerPool
    from benchmark.sweep.runner import _submit

    cfg = config_from_dict({
        "out": "unused", "datasets": ["digits_rotate"], "methods": ["bbt"], "shots": [2], "seeds": [1, 2, 3, 4, 5],
        "backbones": ["craft-tiny:builtin"],
    })
    cells = expand(cfg)
    key = ServerKey(cells[0].backbone, cells[0].weights, "fp32")
    servers, leases, pending, remote = ServerPool(ServerOptions(runs_per_server=4), groups={key: ["s0", "s1"]}), ServerLeases({key: 2}), {}, _Remote()
    leases.acquire(key)  # a run already on s0: load [1, 0]
    left = _submit(cells, pending, servers, leases, remote, True, slots=2)
    assert remote.started == [c.cell_id for c in cells[:2]] and left == cells[2:]
    assert leases.loads()[key] == [2, 1] and sorted(idx for _, _, idx in pending.values()) == [0, 1]
    assert _submit(left, pending, servers, leases, remote, True, slots=0) == left  # no free CPU: nothing starts
    servers.options = ServerOptions(runs_per_server=2)
    left = _submit(left, pending, servers, leases, remote, True, slots=9)  # now the servers are full
    assert left == cells[3:] and leases.loads()[key] == [2, 2]


def test_servers_compute_in_fp32_on_cpus_and_for_cbbt_under_auto_on_gpus() -> None:
    from benchmark.serve.options import ServerOptions
    from benchmark.serve.pool import ServerPool

    craft, cbbt = "craft", "cbbt"
    arith = lambda precision, gpu, m: ServerPool(ServerOptions(precision=precision), gpu).key("craft-tiny", "builtin", m).precision  # noqa: E731
    assert (arith("auto", True, craft), arith("auto", True, cbbt)) == ("bf16", "fp32")
    assert (arith("bf16", True, cbbt), arith("fp32", True, craft)) == ("bf16", "fp32")  # a set precision is kept
    assert {arith(p, False, c) for p in ("auto", "bf16") for c in (craft, cbbt)} == {"fp32"}  # one key on CPUs


def test_without_gpus_a_key_gets_a_server_for_every_runs_per_server_cpus() -> None:
    from benchmark.serve.pool import server_count

    assert server_count(1, 0, cpus=2, runs_per_server=1) == (2, 0.0)  # craft paper --suite builtin on 2 cores
    assert server_count(1, 0, cpus=2, runs_per_server=4) == (1, 0.0)
    assert server_count(3, 0, cpus=5, runs_per_server=2) == (3, 0.0)  # rounded up: every CPU's run has a place
    assert server_count(2, 4, cpus=64, runs_per_server=1) == (4, 0.5)  # GPUs: one per GPU and key, CPUs aside
    # craft tune: as many as its trials at once, where the CPUs allow
    assert server_count(1, 0, cpus=16, runs_per_server=1, runs_at_once=2) == (2, 0.0)
    assert server_count(1, 0, cpus=2, runs_per_server=1, runs_at_once=4) == (2, 0.0)
    assert server_count(1, 0, cpus=2, runs_per_server=1, runs_at_once=1) == (1, 0.0)  # a sweep with one cell left


def test_a_cpu_runtime_starts_as_many_servers_as_its_runs_need(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    ray = pytest.importorskip("ray")
    from benchmark.serve.options import ServerOptions
    from benchmark.serve.leases import leased_server, start_leases
    from benchmark.serve.pool import start_servers, stop_servers

    monkeypatch.setenv("CRAFT_BENCH_CACHE", str(tmp_path / "cache"))
    ray.init(address="local", num_cpus=2, include_dashboard=False, log_to_driver=False)
    try:
        for runs_per_server, at_once, expected in ((1, None, 2), (2, None, 1), (1, 1, 1)):
            pool = start_servers([("craft-tiny", "builtin", "bbt")], ServerOptions(runs_per_server=runs_per_server),
                                 runs_at_once=at_once)
            try:
                (group,) = pool.groups.values()
                pids = {ray.get(s.ping.remote())["pid"] for s in group}
                assert len(group) == len(pids) == expected, (runs_per_server, pids)
                if expected == 2:  # craft tune's trials: each on the least-loaded server, counted by an actor
                    leases = start_leases(pool)
                    run = ("craft-tiny", "builtin", "bbt")
                    with leased_server(leases, pool, *run) as first, leased_server(leases, pool, *run) as second:
                        assert {first._actor_id, second._actor_id} == {s._actor_id for s in group}
                    assert list(ray.get(leases.loads.remote()).values()) == [[0, 0]]  # given back
                    ray.kill(leases)
            finally:
                stop_servers(pool)
    finally:
        ray.shutdown()

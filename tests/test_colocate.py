"""Colocated runs (sweep key ``colocate``): CraFT and BBT executed in the model server's process."""

from __future__ import annotations

import pytest

from benchmark.serve.colocate import run_colocated
from benchmark.errors import UserError
from benchmark.sweep.cell import Cell
from benchmark.sweep.config import config_from_dict
from benchmark.sweep.run_cell import run_cell


def _cell(method: str, hparams: dict) -> Cell:
    return Cell(method, "digits_rotate", 4, 1, "craft-tiny", "builtin", hparams)


@pytest.mark.parametrize("method", ["craft", "bbt"])
def test_a_colocated_run_gives_the_rows_of_a_run_in_its_own_task(server, method):
    cell = _cell(method, {"popsize": 6, "intrinsic_dim": 8, "budget": 6 * 5, "eval_every": 2})
    seen: list[dict] = []
    served = server._served
    [alone] = run_cell(cell, server)
    assert server._served > served  # its queries went through the server's interface
    served = server._served
    [beside] = run_cell(cell, server, colocate=True, on_eval=seen.append)
    assert server._served == served  # none did: it ran beside the engine
    # On a CPU the logits are the same numbers whether they travel or not: the same run, bit for bit.
    for key in ("top1_val", "top1_test", "queries", "unbudgeted_queries", "text_sequences", "model_calls", "trace"):
        assert beside[key] == alone[key], key
    assert beside["queries"] == 30 and beside["gpu_s"] > 0
    assert [r["generation"] for r in seen] == [2, 4, 5]  # its evaluations, reported when it ends


def test_methods_that_do_not_colocate_run_in_their_task_and_the_server_refuses_them(server):
    cell = _cell("cbbt", {"q": 2, "batch_size": 16, "epochs": 1})
    [alone] = run_cell(cell, server)
    [again] = run_cell(cell, server, colocate=True)
    assert again["top1_test"] == alone["top1_test"] and again["queries"] == alone["queries"]
    with pytest.raises(ValueError, match="'cbbt' does not run colocated"):  # refused before the task is read
        run_colocated(server.engine, None, "cbbt", {}, 1, budget=10, shots=4, dataset="digits_rotate",
                      eval_splits=("val",))


def test_colocate_is_a_boolean_sweep_key():
    base = {"out": "unused", "datasets": ["digits_rotate"], "methods": ["craft"], "shots": [2], "seeds": [1],
            "backbones": ["craft-tiny:builtin"]}
    assert config_from_dict(base).server.colocate is False
    assert config_from_dict({**base, "colocate": True}).server.colocate is True
    with pytest.raises(UserError, match="colocate must be true or false, got 'yes'"):
        config_from_dict({**base, "colocate": "yes"})


def test_a_sweep_with_colocate_runs_craft_on_its_ray_model_server(tmp_path, monkeypatch, server):
    import ray

    from benchmark.datasets.builtin import ensure_builtin_suite
    from benchmark.report.load import load_results
    from benchmark.sweep.plan import expand
    from benchmark.sweep.runner import run_sweep

    monkeypatch.setenv("CRAFT_BENCH_CACHE", str(tmp_path / "cache"))  # workers inherit it
    ensure_builtin_suite(tmp_path / "cache" / "builtin")
    hp = {"popsize": 6, "intrinsic_dim": 8, "budget": 30, "eval_every": 2}
    cfg = config_from_dict({
        "out": str(tmp_path / "out"), "datasets": ["digits_rotate"], "methods": ["craft"], "shots": [4], "seeds": [1],
        "backbones": ["craft-tiny:builtin"], "runs_per_server": 1, "colocate": True, "hparams": {"craft": {"*": hp}},
    })
    cells = expand(cfg)
    ray.init(address="local", num_cpus=2, include_dashboard=False, log_to_driver=False)
    try:
        summary = run_sweep(cells, cfg.out, cfg.server.replace(runs_per_server=1), progress=False)
    finally:
        ray.shutdown()
    assert (summary.done, summary.failed) == (1, 0)
    [row] = load_results(cfg.out).to_dict("records")
    [local] = run_cell(cells[0], server)  # the same cell in its own task, on an in-process server
    assert row["queries"] == 30 and row["gpu_s"] > 0
    assert row["top1_test"] == pytest.approx(local["top1_test"]) and row["top1_val"] == pytest.approx(local["top1_val"])
    log = next((tmp_path / "out").rglob("*.log")).read_text()
    assert "eval generation=2" in log  # progress lines of the run on the server, in its log


def test_an_interleaving_server_runs_concurrent_colocated_cells_as_each_alone(server):
    import threading

    from benchmark.serve.server import ModelServer

    inter = ModelServer("craft-tiny", "builtin", cache_dir="", interleave=True)
    cells = [_cell(m, {"popsize": 6, "intrinsic_dim": 8, "budget": 6 * 4, "eval_every": 2}) for m in ("craft", "bbt")]
    alone = [run_cell(c, server, colocate=True)[0] for c in cells]
    rows: dict[int, dict] = {}
    threads = [threading.Thread(target=lambda i=i: rows.__setitem__(i, run_cell(cells[i], inter, colocate=True)[0]))
               for i in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    assert inter.ping()["colocated_live_max"] >= 1 and server.ping()["colocated_live_max"] is None
    for i in range(2):
        for key in ("top1_val", "top1_test", "queries", "unbudgeted_queries", "text_sequences", "trace"):
            assert rows[i][key] == alone[i][key], (cells[i].method, key)

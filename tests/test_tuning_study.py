"""Study bookkeeping without Ray: resume repairs, warm start, milestone reports, pruning states, export."""

from __future__ import annotations

import optuna
import pytest
import yaml

from benchmark.errors import UserError
from craft.methods import make_config
from tuning.config import parse_config
from tuning.export import best_per_study, exported_hparams, final_cells, write_export
from benchmark.serve.options import ServerOptions
from benchmark.serve.pool import ServerPool
from tuning.objective import run_trial
from tuning.search import _searcher_cls
from tuning.storage import (
    INTERRUPTED, WARM_START, enqueue_warm_start, fail_interrupted, finished, open_storage, open_study, repair_journal,
)
from tuning.studies import plan_studies
from tuning.warmstart import warm_start_points

optuna.logging.set_verbosity(optuna.logging.WARNING)

RAW = {
    "methods": ["craft"], "datasets": ["digits_rotate"], "shots": [4], "backbones": {"craft-tiny": "builtin"},
    "hparams": {"craft": {"*": {"budget": 400, "intrinsic_dim": 16}}},
}


def config(tmp_path, **overrides):
    return parse_config({**RAW, "out": str(tmp_path / "out"), "storage": str(tmp_path / "s.journal"), **overrides},
                        "t.yaml", check_data=False)


def test_killed_driver_leftovers_become_failed_and_numbers_stay_unique(tmp_path) -> None:
    path = str(tmp_path / "s.journal")
    study = open_study(open_storage(path), "s")
    for value in (1.0, 2.0):
        t = study.ask()
        study.tell(t, value)
    study.ask(), study.ask()  # left RUNNING by a driver that died
    with open(path, "ab") as f:
        f.write(b'{"op_code": 5, "worker_id": "x", "trial_id"')  # killed mid-append
    assert repair_journal(path) and not repair_journal(path)
    study = open_study(open_storage(path), "s")
    assert fail_interrupted(study) == 2 and fail_interrupted(study) == 0
    states = [t.state for t in study.trials]
    assert states.count(optuna.trial.TrialState.FAIL) == 2 and len(finished(study)) == 2
    assert all(t.user_attrs.get(INTERRUPTED) for t in study.trials if t.state == optuna.trial.TrialState.FAIL)
    t = study.ask()
    study.tell(t, 3.0)
    numbers = [t.number for t in open_study(open_storage(path), "s").trials]
    assert numbers == sorted(set(numbers)) == list(range(5))


def test_warm_start_official_row_first_then_defaults_and_no_repeat_on_resume(tmp_path) -> None:
    cfg = parse_config({**RAW, "datasets": ["dtd"], "storage": str(tmp_path / "s.journal")}, "t.yaml", check_data=False)
    study = plan_studies(cfg)[0]
    points = warm_start_points(study)
    assert points[0][0] == "official:dtd"
    assert points[0][1] == {"sigma": 0.02, "std": 1.0, "bound": 5.0, "lr": 0.001, "lambda_i": 0.001,
                            "lambda_o": 0.001, "n": 1}
    assert points[1][0] == "defaults" and points[1][1]["sigma"] == 1.0 and points[1][1]["lambda_o"] == 0.1
    ot = open_study(open_storage(cfg.storage), study.name)
    assert enqueue_warm_start(ot, points, room=5) == 2
    assert enqueue_warm_start(ot, points, room=5) == 0  # still waiting: not enqueued twice
    trial = ot.ask()
    assert study.space.sample(trial) == points[0][1] and trial.user_attrs[WARM_START] == "official:dtd"


def test_warm_start_on_a_dataset_without_official_row_uses_every_distinct_setting(tmp_path) -> None:
    points = warm_start_points(plan_studies(config(tmp_path))[0])
    labels = [label for label, _ in points]
    assert len(points) == len({repr(sorted(p.items())) for _, p in points}) >= 5
    assert any("defaults" in label and "official:caltech101" in label for label in labels)  # same values


def test_trial_reports_milestones_over_its_cells_in_turn_and_never_asks_for_test(monkeypatch) -> None:
    study = plan_studies(parse_config({**RAW, "search_seeds": [1, 2]}, "t.yaml", check_data=False))[0]
    assert study.milestones.queries == (120, 240, 400) and study.milestones.eval_every == 3
    runs = []

    def fake_run_cell(cell, server, eval_test=True, on_eval=None):
        assert eval_test is False and cell.hparams["eval_every"] == 3 and server == "srv"
        runs.append(cell.seed)
        base = 10.0 * cell.seed
        for g in (3, 6, 9, 10):  # evaluations every 3 generations of 40, and the last
            on_eval({"generation": g, "queries": 40 * g, "top1_val": base + g})
        return [{"top1_val": base + 10}]

    monkeypatch.setattr("benchmark.sweep.run_cell.run_cell", fake_run_cell)
    reports = []
    run_trial(study, {"sigma": 0.5}, ServerPool(ServerOptions(), groups={("craft-tiny", "builtin", "fp32"): ["srv"]}), reports.append)
    assert runs == [1, 2]
    assert reports == [
        {"top1_val": 13.0, "queries": 120, "fraction": 0.15}, {"top1_val": 16.0, "queries": 240, "fraction": 0.3},
        {"top1_val": 20.0, "queries": 400, "fraction": 0.5},
        {"top1_val": 21.5, "queries": 520, "fraction": 0.65}, {"top1_val": 23.0, "queries": 640, "fraction": 0.8},
        {"top1_val": 25.0, "queries": 800, "fraction": 1.0},
    ]


def test_a_trials_cells_run_on_the_least_loaded_server_and_give_it_back(monkeypatch) -> None:
    from benchmark.serve.leases import ServerLeases
    from benchmark.serve.pool import ServerKey

    study = plan_studies(parse_config({**RAW, "search_seeds": [1, 2]}, "t.yaml", check_data=False))[0]
    key = ServerKey("craft-tiny", "builtin", "fp32")
    pool = ServerPool(ServerOptions(), groups={key: ["a", "b"]})
    leases = ServerLeases({key: 2})
    other = leases.acquire(key)  # another trial runs on "a"
    assert other == 0
    used = []

    def fake_run_cell(cell, server, eval_test=True, on_eval=None):
        used.append((server, leases.loads()[key]))
        if cell.seed == 2 and fail:
            raise RuntimeError("the run failed")
        return [{"top1_val": 1.0}]

    monkeypatch.setattr("benchmark.sweep.run_cell.run_cell", fake_run_cell)
    fail = False
    run_trial(study, {"sigma": 0.5}, pool, lambda r: None, leases)
    assert used == [("b", [1, 1]), ("b", [1, 1])]  # each cell on the free server, counted while it runs
    assert leases.loads()[key] == [1, 0]  # given back; the other trial's lease stays
    leases.release(key, other)
    used.clear()
    fail = True
    with pytest.raises(RuntimeError):
        run_trial(study, {"sigma": 0.5}, pool, lambda r: None, leases)
    assert [u[0] for u in used] == ["a", "a"] and leases.loads()[key] == [0, 0]  # a failed run gives it back too


def test_a_method_without_query_budget_reports_once_per_cell(monkeypatch) -> None:
    raw = {**RAW, "methods": ["coop"], "hparams": {}, "search_seeds": [1, 2],
           "space": {"coop": {"lr": {"type": "float", "low": 1e-4, "high": 1e-1, "log": True}}}}
    study = plan_studies(parse_config(raw, "t.yaml", check_data=False))[0]
    assert study.milestones.queries == (0,) and study.milestones.eval_every is None

    def fake_run_cell(cell, server, eval_test=True, on_eval=None):
        assert eval_test is False and on_eval is None and "eval_every" not in cell.hparams
        return [{"top1_val": 10.0 * cell.seed}]

    monkeypatch.setattr("benchmark.sweep.run_cell.run_cell", fake_run_cell)
    reports = []
    run_trial(study, {"lr": 0.01}, ServerPool(ServerOptions(), groups={("craft-tiny", "builtin", "fp32"): ["srv"]}), reports.append)
    assert reports == [{"top1_val": 10.0, "queries": 0, "fraction": 0.5}, {"top1_val": 15.0, "queries": 0, "fraction": 1.0}]


def test_a_stopped_trial_ends_its_run_at_the_milestone() -> None:
    """The report of a trial ASHA stops raises in the method's evaluation callback: no query after it."""
    from fakes import LinearBackend

    from craft.blackbox import MeteredBlackBox
    from craft.methods import Task, get_method

    backend = LinearBackend(n_classes=5, width=8)
    box = MeteredBlackBox(backend, 400)
    cfg = make_config("craft", {"budget": 400, "popsize": 10, "intrinsic_dim": 8, "eval_every": 10})

    def stop(row):
        raise SystemExit(0)  # what ray.tune.report raises in a stopped trial

    task = Task("fake", [str(i) for i in range(5)], "{}", backend.labels, 4, ("val",), on_eval=stop)
    with pytest.raises(SystemExit):
        get_method("craft").run(box, task, cfg, seed=1)
    assert box.usage.queries == 100


def test_searcher_tells_asha_stopped_trials_as_pruned(tmp_path) -> None:
    cfg = config(tmp_path)
    study = plan_studies(cfg)[0]
    storage = open_storage(cfg.storage)
    searcher = _searcher_cls()(space=study.space.sample, metric="top1_val", mode="max", storage=storage,
                               study_name=study.name)
    for tid in ("a", "b", "c"):
        assert set(searcher.suggest(tid)) == set(study.space.names)
    searcher.on_trial_result("a", {"top1_val": 10.0, "queries": 120, "fraction": 0.3})
    searcher.on_trial_complete("a", {"top1_val": 12.0, "queries": 240, "fraction": 0.6})
    searcher.on_trial_complete("b", {"top1_val": 30.0, "queries": 400, "fraction": 1.0})
    searcher.on_trial_complete("c", None, error=True)
    trials = open_study(storage, study.name).trials
    assert [t.state.name for t in trials] == ["PRUNED", "COMPLETE", "FAIL"]
    assert trials[0].intermediate_values == {120: 10.0, 240: 12.0} and trials[1].value == 30.0


def _finish(storage, study, values):
    ot = open_study(storage, study.name)
    for v in values:
        t = ot.ask()
        params = study.space.sample(t)
        ot.tell(t, v)
    pruned = ot.ask()
    study.space.sample(pruned)
    pruned.report(99.0, 120)
    ot.tell(pruned, state=optuna.trial.TrialState.PRUNED)  # a high early score is never the best
    return ot, params


def test_export_is_a_bench_include_that_makes_the_final_cells(tmp_path) -> None:
    from benchmark.sweep.config import load_config as load_bench
    from benchmark.sweep.plan import expand

    fixed = {"budget": 400, "intrinsic_dim": 16, "std": 1}  # an int for a float field: the bench makes it 1.0
    cfg = config(tmp_path, datasets=["digits_rotate", "digits_invert"], pool=["dataset"], hparams={"craft": {"*": fixed}})
    storage = open_storage(cfg.storage)
    (study,) = plan_studies(cfg)
    ot, _ = _finish(storage, study, [20.0, 35.0, 30.0])
    best = ot.trials[1]
    out = tmp_path / "best.yaml"
    text = write_export(cfg, str(out), best_per_study(cfg, storage))
    assert f"# study {study.name}: best val 35.00% (trial 1, 4 trials)" in text
    exported = yaml.safe_load(out.read_text())
    assert set(exported) == {"hparams"} and set(exported["hparams"]["craft"]) == {"digits_rotate", "digits_invert"}
    for hp in exported["hparams"]["craft"].values():
        assert hp == {**fixed, **best.params}
    # craft bench of a config that includes the export makes exactly the final evaluation's cells.
    bench = tmp_path / "bench.yaml"
    bench.write_text(yaml.safe_dump({
        "include": ["best.yaml"], "out": cfg.out, "methods": ["craft"], "datasets": ["digits_rotate", "digits_invert"],
        "shots": [4], "seeds": [1, 2, 3], "backbones": ["craft-tiny:builtin"],
    }))
    final = final_cells(cfg, best_per_study(cfg, storage))
    assert len(final) == 6 and {c.cell_id for c in final} == {c.cell_id for c in expand(load_bench(bench))}
    assert all(c.hparams["std"] == 1.0 and c.full_hparams()["sigma"] == best.params["sigma"] for c in final)


def test_export_refuses_two_settings_for_one_dataset_and_a_study_without_result(tmp_path) -> None:
    cfg = config(tmp_path, shots=[4, 16])
    storage = open_storage(cfg.storage)
    with pytest.raises(UserError, match="has no completed trial yet"):
        best_per_study(cfg, storage)
    for study in plan_studies(cfg):
        _finish(storage, study, [10.0])
    with pytest.raises(UserError, match="both give digits_rotate a craft setting"):
        exported_hparams(best_per_study(cfg, storage))
    with pytest.raises(UserError, match="folder .* does not exist"):
        write_export(cfg, str(tmp_path / "nowhere" / "x.yaml"), [])


@pytest.mark.parametrize("kind", ["tpe", "cmaes", "gp"])
def test_each_sampler_drives_the_search_space(tmp_path, kind) -> None:
    from tuning.search import make_sampler

    cfg = config(tmp_path, sampler=kind)
    study = plan_studies(cfg)[0]
    searcher = _searcher_cls()(space=study.space.sample, metric="top1_val", mode="max",
                               storage=open_storage(cfg.storage), study_name=study.name, sampler=make_sampler(kind, 0))
    for i in range(6):
        params = searcher.suggest(str(i))
        make_config("craft", study.hparams("digits_rotate", params))
        searcher.on_trial_complete(str(i), {"top1_val": params["sigma"], "queries": 400, "fraction": 1.0})
    ot = open_study(open_storage(cfg.storage), study.name)
    assert len(completed_trials := finished(ot)) == 6 and len({t.params["sigma"] for t in completed_trials}) == 6

"""Any sweep config the validator accepts makes rows the results store can write (issue 23, point 2).

Hypothesis draws configs with seeds, shots, budgets and hyperparameters at and around their
bounds; each config is either refused with a UserError, or every cell of it writes both a result
row (built by :func:`benchmark.sweep.run_cell.result_rows`, from a run that used its whole
budget, one trace row per step) and a failure row (:func:`failed_row`) through
:func:`benchmark.results.store.write_cell`, and reads back whole.
"""

from __future__ import annotations

import datetime as dt
import re
import tempfile

import pyarrow.parquet as pq
import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from benchmark.errors import UserError
from benchmark.results.store import scan_cells, write_cell
from benchmark.sweep.config import config_from_dict
from benchmark.sweep.plan import expand
from benchmark.sweep.run_cell import failed_row, result_rows
from craft.budget import one_step
from craft.methods import RunResult, make_config

EDGES = [-1, 0, 1, 2, 39, 40, 2**31 - 1, 2**31, 2**32 + 1, 2**53, 2**63]


def ints(low: int, high: int) -> st.SearchStrategy[int]:
    """Integers biased to the edges of int32, int64 and the validators' bounds."""
    return st.one_of(st.sampled_from(EDGES), st.integers(low, high))


HPARAMS = {
    "bbt": st.fixed_dictionaries({}, optional={"budget": st.one_of(st.none(), ints(-5, 10**6)), "popsize": ints(1, 100),
                                               "eval_every": ints(1, 50)}),
    "craft": st.fixed_dictionaries({}, optional={"budget": st.one_of(st.none(), ints(-5, 10**6)), "popsize": ints(1, 100),
                                                 "n": ints(1, 8), "hidden": ints(1, 512)}),
    "cbbt": st.fixed_dictionaries({}, optional={"budget": st.one_of(st.none(), ints(-5, 10**6)), "q": ints(1, 300),
                                                "two_sided": st.booleans(), "epochs": ints(1, 500), "batch_size": ints(1, 64)}),
    "coop": st.fixed_dictionaries({}, optional={"epochs": ints(1, 500), "n_ctx": ints(1, 32), "eval_every": ints(1, 50)}),
    "zero_shot_clip": st.just({}),
}


@st.composite
def sweeps(draw: st.DrawFn) -> dict:
    methods = draw(st.lists(st.sampled_from(sorted(HPARAMS)), min_size=1, max_size=3, unique=True))
    return {
        "out": "unused", "methods": methods,
        "datasets": draw(st.lists(st.sampled_from(["digits_noise", "dtd", "imagenet"]), min_size=1, max_size=2, unique=True)),
        "shots": draw(st.lists(ints(-1, 64), min_size=1, max_size=2, unique=True)),
        "seeds": draw(st.lists(ints(-1, 10), min_size=1, max_size=2, unique=True)),
        "backbones": ["craft-tiny:builtin"],
        "hparams": {m: {"*": draw(HPARAMS[m])} for m in methods},
    }


def finished(cell) -> RunResult:  # noqa: ANN001 - a Cell
    """What a run of ``cell`` that spent its whole budget, one trace row per step, reports."""
    budget = cell.budget()
    step = one_step(make_config(cell.method, cell.hparams)) or 1
    steps = max(1, budget // step)
    trace = [{"generation": g, "queries": g * step, "fitness": 1.0, "train_loss": 0.5} for g in (1, steps)]
    trace[-1].update(top1_val=50.0, top1_test=40.0)
    usage = {"queries": steps * step if budget else 0, "unbudgeted_queries": 2**40, "text_sequences": 2**50,
             "images_encoded": 2**40, "calls": 2**40}
    return RunResult(cell.method, cell.full_hparams(), {"top1_val": 50.0, "top1_test": 40.0}, usage, trace,
                     learned_params=2**40, learned_bytes=2**42, wall_s=1e9)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(raw=sweeps())
def test_every_accepted_config_writes_its_result_and_failure_rows(raw: dict) -> None:
    try:
        cfg = config_from_dict(raw)
    except UserError:
        event("refused")
        return  # refused at validation, with one sentence: nothing reaches a writer
    event("accepted")
    cells = expand(cfg)[:4]
    with tempfile.TemporaryDirectory() as out:
        for cell in cells:
            write_cell(out, [failed_row(cell, "Traceback ...\nValueError: boom")])
            now = dt.datetime.now(dt.timezone.utc)
            path = write_cell(out, result_rows(cell, finished(cell), cell.budget(), now, 0, {"gpu_s": 1.0}, 1e6, cell.shots))
            row = pq.read_table(path).to_pylist()[0]
            assert (row["seed"], row["shots"], row["budget"]) == (cell.seed, cell.shots, cell.budget())
        status, damaged = scan_cells(out)
        assert damaged == {} and status == {c.cell_id: "ok" for c in cells}


@pytest.mark.parametrize("key, value, message", [
    ("seeds", [2**31], "seeds must all be >= 0 and < 2,147,483,648 (seeds seed numpy and pycma and are stored as int32), got 2147483648"),
    ("seeds", [2**32 + 1], "got 4294967297"),
    ("seeds", [-1], "got -1"),
    ("shots", [2**31], "shots must all be >= 1 and < 2,147,483,648 (stored as int32), got 2147483648"),
])
def test_seeds_and_shots_outside_int32_are_refused_with_one_sentence(key: str, value: list, message: str) -> None:
    raw = {"out": "x", "methods": ["bbt"], "datasets": ["digits_noise"], "shots": [1], "seeds": [1],
           "backbones": ["craft-tiny:builtin"], key: value}
    with pytest.raises(UserError, match=re.escape(message)):
        config_from_dict(raw)


def test_demo_seeds_and_tune_test_seeds_are_bounded_too(tmp_path, capsys) -> None:  # noqa: ANN001
    from benchmark.cli import main

    assert main(["demo", "--seeds", "1", str(2**31), "--out", str(tmp_path / "demo")]) == 2
    assert "seeds must all be >= 0 and < 2,147,483,648" in capsys.readouterr().err
    assert not (tmp_path / "demo").exists()
    from tuning.config import parse_config

    raw = {"methods": ["bbt"], "datasets": ["digits_noise"], "backbones": {"craft-tiny": "builtin"},
           "out": str(tmp_path / "tune"), "test_seeds": [1, 2**32 + 1]}
    with pytest.raises(UserError, match=r"test_seeds must all be >= 0 and < 2,147,483,648 .*got 4294967297"):
        parse_config(raw, "t.yaml", check_data=False)
    with pytest.raises(UserError, match=r"seed must be < 2,147,483,648"):
        parse_config({**raw, "test_seeds": [1], "seed": 2**32}, "t.yaml", check_data=False)


@pytest.mark.parametrize("method, hparams, message", [
    # BBT's and CraFT's configs refuse such a budget themselves (as they do when built directly)
    ("bbt", {"budget": 0}, "hparams.bbt.*: budget 0 is less than one generation of the "
                           "search, 40 queries (popsize); give budget >= 40, or leave it unset for the default"),
    ("craft", {"budget": 39}, "hparams.craft.*: budget 39 is less than one generation of "
                              "the search, 40 queries"),
    ("craft", {"popsize": 5000}, "craft's default budget on digits_noise at 1 shots, 2000 queries, is less than one step "
                                 "of craft's search, 5000 queries (popsize); set hparams.craft.budget >= 5000"),
    ("cbbt", {"budget": 0}, "invalid hyperparameter value(s): budget=0"),
    ("cbbt", {"q": 4, "budget": 4}, "budget=4 (expected: "),
    ("blackvip", {"budget": 9}, "budget=9 (expected: "),  # one SPSA step: 2 sp_avg = 10 queries
])
def test_a_budget_that_cannot_buy_one_step_is_refused_naming_key_and_value(method: str, hparams: dict, message: str) -> None:
    """Issue 23, point 4: ``budget: 0`` never becomes the default, nor runs zero queries reported ok."""
    raw = {"out": "x", "methods": [method], "datasets": ["digits_noise"], "shots": [1], "seeds": [1],
           "backbones": ["craft-tiny:builtin"], "hparams": {method: {"*": hparams}}}
    with pytest.raises(UserError, match=re.escape(message)):
        config_from_dict(raw)
    ok = {**hparams, "budget": 40} if method != "cbbt" else {**hparams, "budget": 257 if "q" not in hparams else 5}
    if method == "craft" and "popsize" in hparams:
        ok["budget"] = 5000
    assert expand(config_from_dict({**raw, "hparams": {method: {"*": ok}}}))[0].budget() == ok["budget"]


@pytest.mark.parametrize("method, hparams, budget, spent", [
    ("craft", {}, 2000, 2000), ("craft", {"budget": 1001}, 1001, 1000), ("bbt", {"popsize": 30}, 2000, 1980),
    ("cbbt", {"epochs": 2}, 2 * 1 * 257, 2 * 1 * 257), ("coop", {}, 0, 0), ("zero_shot_clip", {}, 0, 0),
])
def test_cells_and_checks_take_the_budget_from_one_function(method: str, hparams: dict, budget: int, spent: int) -> None:
    """craft.methods.base.run_budget: a cell's budget, the config check's and a study's are one number."""
    from benchmark.sweep.cell import Cell
    from benchmark.sweep.plan import estimated_queries
    from craft.budget import whole_steps
    from craft.methods.base import run_budget
    from craft.methods import get_method

    cell = Cell(method, "digits_noise", 1, 1, "craft-tiny", "builtin", hparams)
    assert cell.budget() == run_budget(get_method(method), make_config(method, hparams), 1, "digits_noise", 10) == budget
    assert estimated_queries(cell) == whole_steps(budget, cell.config) == spent

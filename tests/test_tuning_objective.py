"""A trial with the real methods and an in-process model server (no Ray): reports and score."""

from __future__ import annotations

import dataclasses

import pytest

from benchmark.serve.server import ModelServer
from benchmark.sweep.run_cell import run_cell
from craft.methods import METHODS
from tuning.config import parse_config
from benchmark.serve.options import ServerOptions
from benchmark.serve.pool import ServerPool
from tuning.objective import run_trial
from tuning.studies import plan_studies

BASE = {"datasets": ["digits_rotate"], "shots": [4], "backbones": ["craft-tiny:builtin"]}
FIXED = {"craft": {"budget": 200, "popsize": 10, "intrinsic_dim": 16}, "cbbt": {"epochs": 3, "q": 2, "batch_size": 10}}


@pytest.fixture(scope="module")
def server() -> ModelServer:
    return ModelServer("craft-tiny", "builtin", cache_dir="")


@pytest.mark.parametrize("method", [m for m in FIXED if m in METHODS])
def test_a_trial_reports_its_milestones_and_scores_its_cell_on_validation(server, method) -> None:
    cfg = parse_config({**BASE, "methods": [method], "hparams": {method: {"*": FIXED[method]}}}, "t.yaml", check_data=False)
    study = plan_studies(cfg)[0]
    params = study.space.project({"sigma": 0.5, "std": 0.5, "lr": 0.002, "mu": 0.01, "q": 2})
    reports = []
    run_trial(study, params, ServerPool(ServerOptions(), groups={("craft-tiny", "builtin", "fp32"): [server]}), reports.append)
    assert [r["fraction"] for r in reports] == sorted(r["fraction"] for r in reports) and reports[-1]["fraction"] == 1.0
    if method == "craft":  # evaluations land on every milestone (5, 10, 20 generations of 10)
        assert [r["queries"] for r in reports] == list(study.milestones.queries) == [50, 100, 200]
    # The score is the validation accuracy of the same cell run as a benchmark cell, which
    # evaluates on another schedule and on test too.
    (cell,) = study.search_cells(params)
    bench = dataclasses.replace(cell, hparams={**cell.hparams, "eval_every": 1})
    bench_row = run_cell(bench, server)[0]
    assert reports[-1]["top1_val"] == pytest.approx(bench_row["top1_val"]) and bench_row["top1_test"] is not None

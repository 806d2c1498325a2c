"""White-box CoOp on the tiny model: it learns, its memory is measured, it runs as a cell; CBBT as a cell too."""

from __future__ import annotations

import pytest
import torch

from benchmark.sweep.cell import Cell
from benchmark.sweep.run_cell import run_cell
from craft.blackbox import MeteredBlackBox
from craft.methods import Task, cbbt, get_method, make_config
from craft.methods.whitebox import coop_epochs
from tests.fakes import LinearBackend


def _cell(method: str, hparams: dict, dataset: str = "digits_rotate") -> Cell:
    return Cell(method, dataset, 16, 1, "craft-tiny", "builtin", hparams)


def test_coop_learns_through_run_cell_and_measures_its_memory(server):
    seen = []
    [row] = run_cell(_cell("coop", {"n_ctx": 4, "epochs": 12, "eval_every": 4}), server, on_eval=seen.append)
    [zs] = run_cell(_cell("zero_shot_clip", {}), server)
    trace = row["trace"]
    assert [r["generation"] for r in trace] == list(range(1, 13))
    assert trace[-1]["train_loss"] < 0.8 * trace[0]["train_loss"]
    assert row["top1_test"] > zs["top1_test"] + 10  # rotated digits: far from zero-shot's prompt
    assert [r["generation"] for r in seen] == [4, 8, 12]  # evaluations reported to the runner, in order
    assert row["status"] == "ok" and row["budget"] == 0 and row["queries"] == 0
    assert row["learned_params"] == 4 * 64 and row["learned_bytes"] == 4 * 64 * 4
    weights_mb = sum(p.numel() * p.element_size() for p in server.engine.model.parameters()) / 2**20
    assert weights_mb < row["peak_mem_mb"] < weights_mb + 500
    assert row["hparams"]["n_ctx"] == 4 and row["gpu_s"] > 0


def test_coop_default_context_is_16_tokens_and_too_many_for_the_tiny_model_is_a_clear_error(server):
    with pytest.raises(ValueError, match=r"n_ctx=16 context tokens do not fit backbone craft-tiny: .* set n_ctx <= 12"):
        run_cell(_cell("coop", {"epochs": 1}), server)
    with pytest.raises(ValueError, match=r"n_ctx=3 contradicts ctx_init='a photo of a', which is 4 token\(s\)"):
        run_cell(_cell("coop", {"ctx_init": "a photo of a", "n_ctx": 3, "epochs": 1}), server)


def test_cbbt_runs_as_a_cell_with_the_adapter_over_server_features(server):
    hp = {"q": 8, "epochs": 3, "adapter_start": 2, "eval_every": 1}
    cell = _cell("cbbt", hp, "digits_shift")
    [row] = run_cell(cell, server)
    # 3 epochs x (160 // 32) steps x (1 + 8) queries: the cell's budget is the schedule's cost, all used.
    assert row["budget"] == cell.budget() == 3 * 5 * 9 == row["queries"]
    assert [r["queries"] for r in row["trace"]] == [45, 90, 135]
    assert all(r["top1_test"] is not None for r in row["trace"])
    assert row["learned_params"] == 64 + 2 * 64 * 16  # the context token and the image adapter


def test_coop_refuses_a_black_box_and_its_epochs_follow_coops_scripts():
    backend = LinearBackend()
    task = Task("fake", list("abcde"), "{}", backend.labels)
    with pytest.raises(TypeError, match="coop is a white-box reference"):
        get_method("coop").run(MeteredBlackBox(backend, 0), task, make_config("coop"), 1)
    cfg = make_config("coop")
    assert [coop_epochs(cfg, k, "dtd") for k in (1, 2, 4, 8, 16)] == [50, 100, 100, 200, 200]
    assert coop_epochs(cfg, 16, "imagenet") == 50 and coop_epochs(make_config("coop", {"epochs": 7}), 16, "dtd") == 7
    with pytest.raises(ValueError, match=r"unknown hyperparameter\(s\) nctx in method coop; CoOpConfig accepts: .*n_ctx"):
        make_config("coop", {"nctx": 4})


def test_coop_trains_each_epoch_on_a_fresh_view_as_dassl_reaugments(server):
    """Under the official protocol the digits get Dassl's crop and flip: each epoch's view is new images;
    ``train_views: cached`` trains on the task's one pass instead (no view encoded)."""
    import dataclasses

    cell = dataclasses.replace(_cell("coop", {"n_ctx": 4, "epochs": 3, "eval_every": 3}), protocol="official")
    assert cell.train_aug == "rrc_flip_imagenet"
    [fresh] = run_cell(cell, server)
    cached_cell = dataclasses.replace(cell, hparams={**cell.hparams, "train_views": "cached"})
    [cached] = run_cell(cached_cell, server)
    n_train = 16 * 10
    assert fresh["images_encoded"] - cached["images_encoded"] == 3 * n_train  # one view per epoch, encoded on the server
    assert fresh["trace"][0]["train_loss"] != cached["trace"][0]["train_loss"]
    with pytest.raises(ValueError, match="train_views"):
        make_config("coop", {"train_views": "sometimes"})


def test_a_cells_backbone_reaches_cbbt_its_schedule_and_budget(server, monkeypatch):
    """The epochs the official scripts set per backbone (ImageNet's) reach the run and its budget:
    here a made-up entry for the tiny model."""
    monkeypatch.setitem(cbbt.OFFICIAL_EPOCHS_BY_BACKBONE, ("digits_shift", "craft-tiny"), 2)
    cell = _cell("cbbt", {"q": 2, "adapter_ratio": 0}, "digits_shift")
    [row] = run_cell(cell, server)
    assert row["budget"] == cell.budget() == 2 * 5 * 3 == row["queries"]  # 2 epochs x 5 steps x (1 + 2)
    assert [r["generation"] for r in row["trace"]] == [1, 2] and row["hparams"]["epochs"] == 2

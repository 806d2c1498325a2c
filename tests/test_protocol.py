"""The sweep key ``protocol`` and the configs that reproduce the official scripts' settings."""

from __future__ import annotations

from pathlib import Path

import pytest

from benchmark.errors import UserError
from benchmark.sweep.config import config_from_dict, load_config
from benchmark.sweep.plan import expand
from benchmark.sweep.run_cell import task_spec
from craft.methods import make_config

ROOT = Path(__file__).resolve().parents[1]
BASE = {"out": "results/x", "suite": "builtin", "methods": ["zero_shot_clip", "bbt", "craft"], "shots": [16],
        "seeds": [1], "backbones": ["craft-tiny:builtin"]}


def test_official_protocol_sets_every_switch_and_changes_the_ids_it_should():
    harness, official = expand(config_from_dict(BASE)), expand(config_from_dict({**BASE, "protocol": "official"}))
    by = {(c.method, c.dataset): c for c in official}
    for cell in harness:
        twin = by[(cell.method, cell.dataset)]
        assert cell.train_aug is None and task_spec(cell).train_aug is None
        assert twin.train_aug == "rrc_flip" and task_spec(twin).train_aug == "rrc_flip"  # CraFT's crop and flip
        assert twin.cell_id != cell.cell_id  # other features, other numbers: never the same cell
        if cell.method in ("bbt", "craft"):
            assert cell.full_hparams()["cma_eigen_gap"] == 10.0 and twin.full_hparams()["cma_eigen_gap"] == 1.0
    # a sweep's own hparams still win over the protocol's
    own = expand(config_from_dict({**BASE, "protocol": "official", "hparams": {"craft": {"*": {"cma_eigen_gap": 3}}}}))
    assert {c.full_hparams()["cma_eigen_gap"] for c in own if c.method == "craft"} == {3.0}


def test_harness_cell_ids_are_those_from_before_protocols():
    """Zero-shot's config did not change: its results written before protocols existed keep their ids."""
    import dataclasses
    import hashlib
    import json

    cell = next(c for c in expand(config_from_dict(BASE)) if c.method == "zero_shot_clip")
    d = dataclasses.asdict(cell)
    for key in ("root", "protocol", "precision"):  # each enters the id only where it is not its default
        d.pop(key)
    d["hparams"], d["eval_datasets"] = cell.full_hparams(), list(cell.eval_datasets)
    before = hashlib.sha256(json.dumps(d, sort_keys=True, separators=(",", ":")).encode()).hexdigest()[:20]
    assert cell.cell_id == before
    assert dataclasses.replace(cell, protocol="official").cell_id != cell.cell_id


def test_official_protocol_serves_in_fp32_unless_told_otherwise():
    assert config_from_dict(BASE).server.precision == "auto"
    assert config_from_dict({**BASE, "protocol": "official"}).server.precision == "fp32"
    assert config_from_dict({**BASE, "protocol": "official", "precision": "bf16"}).server.precision == "bf16"


def test_a_bad_protocol_is_one_sentence():
    with pytest.raises(UserError, match="protocol must be one of harness, official, got 'paper'"):
        config_from_dict({**BASE, "protocol": "paper"})


def test_imagenet_runs_as_the_official_imagenet_scripts():
    paper = load_config(ROOT / "configs" / "paper_rn50.yaml")
    imagenet = {c.method: c for c in expand(paper) if c.dataset == "imagenet" and c.shots == 16 and c.seed == 1}
    craft = make_config("craft", imagenet["craft"].hparams)
    assert (craft.projection_init, craft.prompt_from, craft.hidden) == ("uniform", "xbest", 512)
    assert imagenet["craft"].budget() == 4000 and imagenet["craft"].eval_datasets == ()
    others = make_config("craft", next(c for c in expand(paper) if c.dataset == "caltech101" and c.method == "craft").hparams)
    assert (others.projection_init, others.prompt_from) == ("normal", "mean")


def test_the_shift_table_is_trained_with_a_budget_of_2000():
    shift = load_config(ROOT / "configs" / "paper_shift.yaml")
    cells = expand(shift)
    assert {c.backbone for c in cells} == {"RN50", "RN101", "ViT-B-32", "ViT-B-16"}
    assert {c.dataset for c in cells} == {"imagenet"} and {c.shots for c in cells} == {16}
    assert {c.budget() for c in cells if c.method in ("bbt", "craft")} == {2000}
    assert all(set(c.eval_datasets) == {"imagenet_v2", "imagenet_sketch", "imagenet_a", "imagenet_r"} for c in cells)
    assert {make_config("craft", c.hparams).prompt_from for c in cells if c.method == "craft"} == {"xbest"}

"""``craft tune`` configs and search spaces: what a new user gets wrong is one sentence, before Ray."""

from __future__ import annotations

from pathlib import Path

import optuna
import pytest
import yaml

from benchmark.cli import main
from benchmark.errors import UserError
from craft.methods import METHODS, make_config
from tuning.config import parse_config
from tuning.space import DEFAULT_SPACES, default_space, parse_space
from tuning.studies import plan_studies

BASE = {
    "methods": ["craft"],
    "datasets": ["digits_rotate"],
    "shots": [4],
    "backbones": {"craft-tiny": "builtin"},
    "hparams": {"craft": {"*": {"budget": 400}}},
}


def write(tmp_path: Path, **overrides) -> Path:
    raw = {**BASE, "out": str(tmp_path / "out"), **overrides}
    path = tmp_path / "search.yaml"
    path.write_text(yaml.safe_dump(raw))
    return path


def space_with(**params) -> dict:
    return {"craft": params}


NEW_USER_MISTAKES = [
    ({"space": space_with(sigma={"type": "float", "low": 2.0, "high": 0.1})},
     "space.craft.sigma: low (2.0) must be below high (0.1)"),
    ({"space": space_with(lr={"type": "float", "low": 0.0, "high": 0.1, "log": True})},
     "space.craft.lr: a log-scale range must be above 0, got low=0.0"),
    ({"space": space_with(temperature={"type": "float", "low": 0.1, "high": 1.0})},
     "space.craft.temperature: not a hyperparameter of craft; CraFTConfig accepts: batch_size, bound"),
    ({"storage": "/no/such/folder/optuna.journal"},
     "storage journal file /no/such/folder/optuna.journal is in folder /no/such/folder, which does not exist"),
]


@pytest.mark.parametrize("overrides, message", NEW_USER_MISTAKES)
def test_new_user_mistakes_give_one_sentence_before_ray(tmp_path, capsys, overrides, message) -> None:
    import ray

    path = write(tmp_path, **overrides)
    assert main(["tune", str(path)]) == 2
    err = capsys.readouterr().err.strip()
    assert message in err and str(path) in err
    assert len(err.splitlines()) == 1 and err.startswith("craft tune: error: ")
    assert not ray.is_initialized()
    assert not (tmp_path / "out").exists()  # nothing was written


@pytest.mark.parametrize("spec, message", [
    ({"type": "int", "low": 1, "high": 4.5}, "an int parameter needs whole numbers"),
    ({"type": "categorical", "choices": []}, "choices must be a non-empty list"),
    ({"type": "uniform", "low": 0, "high": 1}, "type must be one of float, int, categorical"),
    ({"type": "float", "low": 0.1, "high": 1, "when": {"std": 1}}, "'when' refers to 'std', which is not declared before it"),
    ({"type": "float", "low": 0.1, "high": 1, "scale": "log"}, "unknown key(s) scale"),
    ({"type": "float", "low": 0.1, "high": 1, "log": True, "step": 0.1}, "step and log cannot be combined"),
])
def test_bad_parameter_specs_are_named(spec, message) -> None:
    with pytest.raises(UserError, match=None) as info:
        parse_space("craft", {"sigma": spec}, "space.craft")
    assert message in str(info.value) and "space.craft.sigma" in str(info.value)


@pytest.mark.parametrize("name", ["budget", "eval_every", "popsize"])
def test_reserved_parameters_cannot_be_searched(name) -> None:
    with pytest.raises(UserError, match=f"space.craft.{name} cannot be searched"):
        parse_space("craft", {name: {"type": "int", "low": 10, "high": 20}}, "space.craft")


def test_fixed_and_searched_at_once_is_rejected(tmp_path) -> None:
    raw = {**BASE, "hparams": {"craft": {"*": {"budget": 400, "sigma": 0.5}}},
           "space": space_with(sigma={"type": "float", "low": 0.1, "high": 1.0})}
    with pytest.raises(UserError, match="space.craft.sigma is both fixed under hparams and searched"):
        parse_config(raw, "x.yaml", check_data=False)


def test_unknown_top_level_and_method_keys(tmp_path) -> None:
    with pytest.raises(UserError, match="unknown key\\(s\\) trails"):
        parse_config({**BASE, "trails": 30}, "x.yaml", check_data=False)
    with pytest.raises(UserError, match="has no hyperparameters to search"):
        parse_config({**BASE, "methods": ["zero_shot_clip"]}, "x.yaml", check_data=False)
    with pytest.raises(UserError, match="x.yaml: hparams.craft.\\*: unknown craft hyperparameter 'sigm' \\(did you mean 'sigma'"):
        parse_config({**BASE, "hparams": {"craft": {"*": {"sigm": 1}}}}, "x.yaml", check_data=False)
    with pytest.raises(UserError, match="hparams.craft.\\*.budget must be an integer"):
        parse_config({**BASE, "hparams": {"craft": {"*": {"budget": "400"}}}}, "x.yaml", check_data=False)


def test_conditional_parameters_are_sampled_only_when_their_condition_holds() -> None:
    space = parse_space("craft", {
        "bound": {"type": "categorical", "choices": [0.0, 5.0]},
        "sigma": {"type": "float", "low": 0.01, "high": 1.0, "log": True, "when": {"bound": 5.0}},
        "n": {"type": "int", "low": 1, "high": 8, "when": {"sigma": {"gt": 0.1}}},
    }, "space.craft")
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=0))
    seen = []
    for _ in range(60):
        trial = study.ask()
        params = space.sample(trial)
        seen.append(params)
        study.tell(trial, 0.0)
        assert ("sigma" in params) == (params["bound"] == 5.0)
        assert ("n" in params) == (params.get("sigma", 0) > 0.1)
        make_config("craft", params)  # every sample is a valid config
    assert any("n" in p for p in seen) and any("sigma" not in p for p in seen)


def test_default_spaces_cover_the_issue_and_validate_for_registered_methods() -> None:
    craft = default_space("craft")
    assert {"sigma", "std", "bound", "lr", "lambda_i", "lambda_o", "n"} <= set(craft.names)
    for method in DEFAULT_SPACES:
        if method in METHODS:
            space = default_space(method)
            assert space.names == list(DEFAULT_SPACES[method])
    if "cbbt" in METHODS:
        assert {"mu", "q", "lr"} <= set(default_space("cbbt").names)


def test_project_keeps_in_range_values_and_the_space_own_types() -> None:
    space = default_space("craft")
    point = space.project({"sigma": 0.02, "std": 1, "bound": 5, "lambda_i": 0.0, "n": 4.0, "batch_size": 64})
    assert point == {"sigma": 0.02, "std": 1.0, "bound": 5.0, "n": 4}
    assert type(point["bound"]) is float and type(point["n"]) is int  # the categorical's own choice


def test_one_study_per_cell_unless_pooled_and_names_change_with_the_space() -> None:
    raw = {**BASE, "datasets": ["digits_rotate", "digits_invert"], "shots": [4, 16]}
    studies = plan_studies(parse_config(raw, "x.yaml", check_data=False))
    assert len(studies) == 4 and len({s.name for s in studies}) == 4
    pooled = plan_studies(parse_config({**raw, "pool": ["dataset", "shots"]}, "x.yaml", check_data=False))
    assert len(pooled) == 1 and len(pooled[0].targets) == 4
    assert "digits_invert+digits_rotate" in pooled[0].name and "4+16shot" in pooled[0].name
    again = plan_studies(parse_config({**raw, "trials": 7, "sampler": "gp"}, "x.yaml", check_data=False))
    assert [s.name for s in again] == [s.name for s in studies]  # trials and sampler are not identity
    narrower = {**raw, "space": space_with(sigma={"type": "float", "low": 0.1, "high": 1.0, "log": True})}
    assert plan_studies(parse_config(narrower, "x.yaml", check_data=False))[0].name != studies[0].name


@pytest.mark.parametrize("budget, popsize, pruning, expected, every", [
    (400, 40, {"grace_fraction": 0.25, "reduction_factor": 2}, (120, 240, 400), 3),  # 10 generations
    (1600, 40, {"grace_fraction": 0.25, "reduction_factor": 2}, (400, 800, 1600), 10),
    (2000, 40, {"grace_fraction": 0.1, "reduction_factor": 3}, (200, 600, 1800, 2000), 5),
    (2000, 40, False, (2000,), 50),
])
def test_milestones_land_on_generations(budget, popsize, pruning, expected, every) -> None:
    raw = {**BASE, "hparams": {"craft": {"*": {"budget": budget, "popsize": popsize}}}, "pruning": pruning}
    m = plan_studies(parse_config(raw, "x.yaml", check_data=False))[0].milestones
    assert m.queries == expected and m.eval_every == every
    assert all(q % (every * popsize) == 0 or q == m.budget for q in m.queries)
    # ASHA's rungs (grace * rf**k) are milestones, so every rung is reported exactly
    if pruning:
        rf = pruning["reduction_factor"]
        assert all(m.grace * rf**k in m.queries for k in range(len(m.queries) - 1))


@pytest.mark.parametrize("change, message", [
    ({"datasets": ["imagenet_v2"]}, "x.yaml: datasets[0]: imagenet_v2 is a test set only (no training images)"),
    ({"backbones": {"RN51": "openai"}}, "x.yaml: backbones: unknown backbone 'RN51' (did you mean 'RN50'?)"),
    ({"backbones": ["RN50:builtin"]}, "x.yaml: backbones: weights 'builtin' exist only for craft-tiny, not RN50"),
    ({"methods": ["crafty"]}, "x.yaml: methods: unknown method 'crafty' (did you mean 'craft'?)"),
    ({"shots": [0]}, "x.yaml: shots must all be >= 1"),
])
def test_the_grid_is_checked_as_craft_bench_checks_it(change: dict, message: str) -> None:
    """benchmark.sweep.grid reads a search's grid: the same sentence as for a sweep config."""
    with pytest.raises(UserError) as err:
        parse_config({**BASE, **change}, "x.yaml", check_data=False)
    assert str(err.value).startswith(message), str(err.value)


def test_the_grid_spells_backbones_as_open_clip() -> None:
    cfg = parse_config({**BASE, "backbones": {"ViT-B/32": "openai"}}, "x.yaml", check_data=False)
    assert cfg.backbones == {"ViT-B-32": "openai"}

"""Sweep configs: includes and overrides, unknown keys named with file and key path, safe YAML."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from benchmark.datasets.registry import list_datasets
from benchmark.errors import UserError
from benchmark.sweep.config import config_from_dict, load_config, shipped_configs
from benchmark.sweep.plan import expand
from craft.methods import make_config

BASE = {"out": "results/x", "methods": ["craft"], "datasets": ["dtd", "eurosat"], "shots": [16], "seeds": [1],
        "backbones": ["RN50:openai"]}


def write(path: Path, data: dict | str) -> Path:
    path.write_text(data if isinstance(data, str) else yaml.safe_dump(data))
    return path


def test_official_craft_defaults_cover_coop11_and_build_configs() -> None:
    assert "official_craft" in shipped_configs()
    no_datasets = {k: v for k, v in BASE.items() if k != "datasets"}
    cfg = config_from_dict({**no_datasets, "include": ["official_craft"], "suite": "coop11"})
    coop11 = [s.key for s in list_datasets("coop11")]
    assert list(cfg.datasets) == coop11
    assert sorted(cfg.hparams["craft"]) == sorted(coop11)
    for ds in coop11:
        made = make_config("craft", cfg.hparams_for("craft", ds))
        assert made.popsize == 40 and made.intrinsic_dim == 512 and made.budget is None
    assert cfg.hparams_for("craft", "dtd")["sigma"] == 0.02 and cfg.hparams_for("craft", "caltech101")["sigma"] == 1.0
    assert cfg.hparams_for("craft", "imagenet")["hidden"] == 512


def test_this_file_overrides_its_includes_key_by_key(tmp_path: Path) -> None:
    (tmp_path / "sub").mkdir()
    base = write(tmp_path / "sub" / "base.yaml", {"include": ["official_craft"], "seeds": [1, 2, 3],
                                                  "hparams": {"craft": {"*": {"popsize": 20}}}})
    top = write(tmp_path / "top.yaml", {**BASE, "include": ["sub/base.yaml"], "seeds": [7],
                                        "hparams": {"craft": {"dtd": {"sigma": 0.5}}}})
    cfg = load_config(top)
    assert cfg.seeds == (7,)  # lists replace
    dtd = cfg.hparams_for("craft", "dtd")
    assert dtd["sigma"] == 0.5 and dtd["std"] == 1.0 and dtd["popsize"] == 40  # official dtd beats '*'
    assert cfg.hparams_for("craft", "eurosat")["sigma"] == 0.02
    assert cfg.includes[-1] == str(base)


def test_precision_defaults_to_auto_and_is_read() -> None:
    assert config_from_dict(BASE).server.precision == "auto"
    assert config_from_dict({**BASE, "precision": "fp32"}).server.precision == "fp32"


def test_compile_defaults_to_false_and_is_read() -> None:
    assert config_from_dict(BASE).server.compile is False
    assert config_from_dict({**BASE, "compile": True}).server.compile is True
    assert config_from_dict({**BASE, "compile": "reduce-overhead"}).server.compile == "reduce-overhead"
    assert config_from_dict(BASE).server.attention == "auto"
    assert config_from_dict({**BASE, "attention": "efficient"}).server.attention == "efficient"


def test_datasets_and_suite_replace_each_other_across_includes(tmp_path: Path) -> None:
    write(tmp_path / "base.yaml", {"suite": "builtin"})
    cfg = load_config(write(tmp_path / "top.yaml", {**BASE, "include": ["base.yaml"]}))
    assert cfg.datasets == ("dtd", "eurosat")
    both = {k: v for k, v in BASE.items() if k != "datasets"}
    write(tmp_path / "base2.yaml", {"datasets": ["dtd"]})
    cfg = load_config(write(tmp_path / "top2.yaml", {**both, "include": ["base2.yaml"], "suite": "builtin"}))
    assert cfg.datasets == tuple(s.key for s in list_datasets("builtin"))


@pytest.mark.parametrize(
    "change, words",
    [
        ({"seed": [1]}, ["unknown key 'seed'", "did you mean 'seeds'"]),
        ({"methods": ["craft", "crafty"]}, ["methods", "unknown method 'crafty'", "did you mean 'craft'"]),
        ({"datasets": ["dtd", "dtdd"]}, ["datasets[1]", "unknown dataset 'dtdd'"]),
        ({"hparams": {"craft": {"dtd": {"sigmaa": 1}}}}, ["hparams.craft.dtd", "unknown craft hyperparameter 'sigmaa'", "did you mean 'sigma'"]),
        ({"hparams": {"craftt": {"*": {}}}}, ["hparams", "unknown method 'craftt'"]),
        ({"hparams": {"craft": {"dtdd": {"sigma": 1}}}}, ["hparams.craft.dtdd", "unknown dataset 'dtdd'"]),
        ({"hparams": {"craft": {"*": {"popsize": "forty"}}}}, ["hparams.craft.*.popsize must be an integer", "'forty'"]),
        ({"hparams": {"bbt": {"*": {"budget": 1.5}}}}, ["hparams.bbt.*.budget must be an integer or null"]),
        ({"hparams": {"craft": {"dtd": {"sigma": -1}}}}, ["hparams.craft.dtd", "invalid hyperparameter value(s): sigma=-1"]),
        ({"hparams": {"cbbt": {"*": {"q": 0}}}}, ["hparams.cbbt.*", "q=0"]),
        ({"hparams": {"coop": {"*": {"momentum": 1.0}}}}, ["hparams.coop.*", "momentum=1.0"]),
        ({"shots": [0, 16]}, ["shots must all be >= 1"]),
        ({"backbones": ["RN50"]}, ["backbones entry 'RN50' must be name:weights"]),
        ({"runs_per_server": 0}, ["runs_per_server must be an integer >= 1"]),
        ({"precision": "fp16"}, ["precision must be one of auto, bf16, fp32", "'fp16'"]),
        ({"compile": "yes"}, ["compile must be true, false or a torch.compile mode", "reduce-overhead", "'yes'"]),
        ({"compile": 1}, ["compile must be true, false or a torch.compile mode", "got 1"]),
        ({"attention": "fastest"}, ["attention must be one of auto, math, efficient, cudnn, flash", "'fastest'"]),
        ({"eval_datasets": {"dtd": ["imagenet_a"]}}, ["eval_datasets.dtd[0]", "not scored in dtd's label space"]),
        ({"include": ["official_craf"]}, ["include 'official_craf'", "official_craft"]),
    ],
)
def test_bad_keys_and_values_name_the_file_and_key_path(tmp_path: Path, change: dict, words: list[str]) -> None:
    path = write(tmp_path / "sweep.yaml", {**BASE, **change})
    with pytest.raises(UserError) as err:
        load_config(path)
    message = str(err.value)
    assert message.startswith(str(path)), message
    for w in words:
        assert w in message, message


def test_an_error_inside_an_include_names_the_included_file(tmp_path: Path) -> None:
    inc = write(tmp_path / "tuned.yaml", {"hparams": {"craft": {"dtd": {"wieght": 0.1}}}})
    top = write(tmp_path / "top.yaml", {**BASE, "include": ["tuned.yaml"]})
    with pytest.raises(UserError, match=rf"^{inc}: hparams.craft.dtd: unknown craft hyperparameter 'wieght'"):
        load_config(top)


def test_missing_keys_and_include_cycles_are_reported(tmp_path: Path) -> None:
    no_shots = {k: v for k, v in BASE.items() if k != "shots"}
    with pytest.raises(UserError, match="missing key 'shots'"):
        load_config(write(tmp_path / "a.yaml", no_shots))
    write(tmp_path / "b.yaml", {"include": ["c.yaml"]})
    write(tmp_path / "c.yaml", {"include": ["b.yaml"]})
    with pytest.raises(UserError, match="include cycle"):
        load_config(write(tmp_path / "d.yaml", {**BASE, "include": ["b.yaml"]}))


def test_yaml_is_read_with_the_safe_loader(tmp_path: Path) -> None:
    marker = tmp_path / "executed"
    path = write(tmp_path / "evil.yaml", f"out: !!python/object/apply:os.system ['touch {marker}']\n")
    with pytest.raises(UserError, match="not valid YAML"):
        load_config(path)
    assert not marker.exists()


def test_integer_and_float_spellings_make_the_same_cell(tmp_path: Path) -> None:
    one = config_from_dict({**BASE, "hparams": {"craft": {"*": {"sigma": 1, "bound": 5}}}})
    other = config_from_dict({**BASE, "hparams": {"craft": {"*": {"sigma": 1.0, "bound": 5.0}}}})
    assert [c.cell_id for c in expand(one)] == [c.cell_id for c in expand(other)]
    changed = config_from_dict({**BASE, "hparams": {"craft": {"*": {"sigma": 0.5}}}})
    assert not {c.cell_id for c in expand(one)} & {c.cell_id for c in expand(changed)}


def test_example_configs_load() -> None:
    root = Path(__file__).resolve().parents[1]
    demo = load_config(root / "configs" / "demo.yaml")
    assert demo.backbones == (("craft-tiny", "builtin"),) and len(demo.datasets) == 4
    from benchmark.sweep.demo import demo_config

    made = demo_config(demo.out)  # craft demo's own config is the file's
    assert [c.cell_id for c in expand(made)] == [c.cell_id for c in expand(demo)] and made.server == demo.server
    assert demo.server.runs_per_server == 1
    paper = load_config(root / "configs" / "paper_rn50.yaml")
    assert paper.backbones == (("RN50", "openai"),) and paper.shots == (1, 2, 4, 8, 16)
    assert paper.hparams_for("craft", "oxford_pets")["batch_size"] == 64


@pytest.mark.parametrize("change, words", [
    ({"backbones": ["RN51:openai"]}, ["backbones: unknown backbone 'RN51' (did you mean 'RN50'?)", "open_clip.list_models()"]),
    ({"backbones": ["RN50:builtin"]}, ["backbones: weights 'builtin' exist only for craft-tiny, not RN50"]),
    ({"backbones": ["ViT-B/32:openai", "ViT-B-32:openai"]}, ["backbones lists", "with a repeat"]),
    ({"datasets": ["imagenet_a"]}, ["datasets[0]: imagenet_a is a test set only", "eval_datasets: {imagenet: [imagenet_a]}"]),
])
def test_the_grid_refuses_backbones_and_test_sets_when_the_config_is_read(tmp_path: Path, change: dict, words: list[str]) -> None:
    """benchmark.sweep.grid: one sentence naming the file and key, before any data or Ray."""
    path = write(tmp_path / "sweep.yaml", {**BASE, **change})
    with pytest.raises(UserError) as err:
        load_config(path)
    assert str(err.value).startswith(f"{path}: ") and "\n" not in str(err.value)
    for w in words:
        assert w in str(err.value), str(err.value)


def test_backbones_in_the_papers_spelling_are_open_clips() -> None:
    cfg = config_from_dict({**BASE, "backbones": {"ViT-B/32": "openai", "RN50-quickgelu": "openai"}})
    assert cfg.backbones == (("ViT-B-32", "openai"), ("RN50-quickgelu", "openai"))
    assert {c.backbone for c in expand(cfg)} == {"ViT-B-32", "RN50-quickgelu"}


def test_max_sequences_reaches_the_engine_through_the_server_options() -> None:
    """A server option is a field of ServerOptions and a keyword of the engine, nothing between."""
    from benchmark.serve.options import ServerOptions
    from benchmark.serve.server import ModelServer

    assert config_from_dict(BASE).server.max_sequences is None
    options = config_from_dict({**BASE, "max_sequences": 7}).server
    assert options.max_sequences == 7
    assert ModelServer("craft-tiny", "builtin", options, cache_dir="").engine.chunk_sequences(20) == 7
    assert ModelServer("craft-tiny", "builtin", ServerOptions(), cache_dir="").engine.chunk_sequences(20) > 7
    for bad in (0, -1, 2**31, "many", True):
        with pytest.raises(UserError, match="max_sequences must be an integer >= 1"):
            config_from_dict({**BASE, "max_sequences": bad})

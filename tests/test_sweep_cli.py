"""``craft bench`` as a new user meets it, and the cluster launcher config."""

from __future__ import annotations

import copy
import socket
from pathlib import Path

import pytest
import yaml

from benchmark.cli import main

ROOT = Path(__file__).resolve().parents[1]


def sweep(tmp_path: Path, **change) -> tuple[Path, Path]:
    out = tmp_path / "out"
    cfg = {"out": str(out), "methods": ["zero_shot_clip", "craft"], "datasets": ["digits_rotate"], "shots": [2],
           "seeds": [1], "backbones": ["craft-tiny:builtin"], **change}
    path = tmp_path / "sweep.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return path, out


def one_sentence_error(capsys: pytest.CaptureFixture, argv: list[str]) -> str:
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("craft bench: error: ") and "\n" not in err and "Traceback" not in err, err
    return err


def test_help_lists_the_options(capsys: pytest.CaptureFixture) -> None:
    with pytest.raises(SystemExit) as done:
        main(["bench", "--help"])
    assert done.value.code == 0
    text = capsys.readouterr().out
    for flag in ("config", "--dry-run", "--address", "--rerun-failed", "--gpus", "--dashboard"):
        assert flag in text


def test_a_typo_in_a_key_is_one_sentence_and_writes_nothing(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    path, out = sweep(tmp_path, hparams={"craft": {"*": {"popsise": 20}}})
    err = one_sentence_error(capsys, ["bench", str(path)])
    assert f"{path}: hparams.craft.*: unknown craft hyperparameter 'popsise' (did you mean 'popsize'?)" in err
    assert not out.exists()


def test_a_missing_data_root_is_one_sentence_and_writes_nothing(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    path, out = sweep(tmp_path, root=str(tmp_path / "no-data"))
    err = one_sentence_error(capsys, ["bench", str(path)])
    assert f"root {tmp_path / 'no-data'} does not exist" in err
    assert not out.exists()


def test_an_address_with_no_cluster_is_one_sentence_and_writes_nothing(tmp_path: Path, capsys, monkeypatch) -> None:
    monkeypatch.delenv("RAY_ADDRESS", raising=False)
    with socket.socket() as s:  # a port nothing listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    path, out = sweep(tmp_path)
    err = one_sentence_error(capsys, ["bench", str(path), "--address", f"127.0.0.1:{port}"])
    assert f"no Ray cluster answers at 127.0.0.1:{port}" in err
    assert not out.exists()


def test_dry_run_prints_the_plan_and_writes_nothing(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    path, out = sweep(tmp_path, hparams={"craft": {"*": {"budget": 400}}})
    assert main(["bench", str(path), "--dry-run"]) == 0
    text = capsys.readouterr().out
    assert "2 cells: 0 done, 0 failed, 2 to run; estimated queries to run: 400 of 400" in text
    assert not out.exists()


def test_cluster_yaml_passes_rays_own_validation() -> None:
    from ray.autoscaler._private.util import prepare_config, validate_config

    config = yaml.safe_load((ROOT / "cluster.yaml").read_text())
    validate_config(prepare_config(copy.deepcopy(config)))
    types = config["available_node_types"]
    gpu = [t for t in types.values() if t.get("resources", {}).get("GPU", 0) > 0]
    assert gpu and all(isinstance(t["resources"]["GPU"], int) and t["max_workers"] > t.get("min_workers", 0) for t in gpu)
    assert any("pip install" in c and "craft-bench" in c for c in config["setup_commands"])
    starts = " ".join(config["head_start_ray_commands"] + config["worker_start_ray_commands"])
    assert starts.count("RAY_AUTH_MODE=token") == 2 and "--dashboard-host=127.0.0.1" in starts
    broken = copy.deepcopy(config)
    for t in broken["available_node_types"].values():
        if t["resources"].get("GPU"):
            t["resources"]["GPU"] = 0.5
    with pytest.raises(Exception, match="integer"):
        validate_config(prepare_config(broken))

"""What a cluster user types: ``--set``/``--out``/``--root`` overrides, a relative ``out`` refused inside a
Ray job, and a plan with its GPU-hours estimate without data or weights (issue 21)."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from benchmark.cli import main
from benchmark.sweep.cli_options import check_out_outside_job, in_ray_job
from benchmark.sweep.config import load_config
from benchmark.config_yaml import parse_overrides
from benchmark.errors import UserError

ROOT = Path(__file__).resolve().parents[1]


def sweep(tmp_path: Path, **change) -> Path:
    cfg = {"out": str(tmp_path / "out"), "methods": ["zero_shot_clip", "craft"], "datasets": ["digits_rotate"],
           "shots": [2], "seeds": [1], "backbones": ["craft-tiny:builtin"], **change}
    path = tmp_path / "sweep.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return path


def error_of(capsys: pytest.CaptureFixture, argv: list[str]) -> str:
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith(f"craft {argv[0]}: error: ") and "\n" not in err and "Traceback" not in err, err
    return err


def test_overrides_are_yaml_values_laid_over_the_file(tmp_path: Path) -> None:
    path = sweep(tmp_path)
    over = parse_overrides(["seeds=[1, 2]", "hparams={craft: {'*': {budget: 400}}}", "root=null"], out="s3://b/x")
    cfg = load_config(path, over)
    assert cfg.seeds == (1, 2) and cfg.out == "s3://b/x" and cfg.root is None
    assert cfg.hparams["craft"]["*"]["budget"] == 400
    # suite replaces the file's datasets, as an including file's would
    assert len(load_config(path, {"suite": "builtin"}).datasets) == 4


@pytest.mark.parametrize("argv, expected", [
    (["--set", "outt=/x"], "--set: unknown key 'outt' (did you mean 'out'?)"),
    (["--set", "seeds=[-1]"], "--set: seeds must all be >= 0"),
    (["--set", "seeds"], "--set 'seeds' must be KEY=VALUE"),
    (["--set", "shots=[1"], "--set shots: the value '[1' is not valid YAML"),
    (["--out", "/a", "--set", "out=/b"], "--out and --set out=... both given"),
    (["--set", "include=x.yaml"], "includes belong in the config file"),
])
def test_a_bad_override_is_one_sentence_and_writes_nothing(tmp_path: Path, capsys, argv, expected) -> None:
    path = sweep(tmp_path)
    assert expected in error_of(capsys, ["bench", str(path), *argv])
    assert not (tmp_path / "out").exists()


def test_tune_takes_the_same_overrides(tmp_path: Path, capsys) -> None:
    src = yaml.safe_load((ROOT / "configs" / "tune_builtin.yaml").read_text())
    path = tmp_path / "t.yaml"
    path.write_text(yaml.safe_dump(src))
    assert "--set: unknown key 'trails' (did you mean 'trials'?)" in error_of(capsys, ["tune", str(path), "--set", "trails=3"])
    from tuning.config import load_search_config

    out = tmp_path / "tuned"
    cfg = load_search_config(str(path), check_data=False, overrides=parse_overrides(["trials=3"], out=str(out)))
    assert (cfg.trials, cfg.out, cfg.storage) == (3, str(out), f"{out}/optuna.journal")


def test_job_detection() -> None:
    assert in_ray_job("/tmp/ray/session_x/runtime_resources/working_dir_files/_ray_pkg_ab", {})
    assert in_ray_job("/home/u", {"RAY_JOB_CONFIG_JSON_ENV_VAR": "{}"})
    assert not in_ray_job("/home/u", {})
    with pytest.raises(UserError, match="relative.*--out /shared/results/x"):
        check_out_outside_job("results/x", False, cwd="/home/u", env={"RAY_JOB_SUBMISSION_ID": "raysubmit_1"})
    for out in ("/shared/x", "s3://b/x"):
        check_out_outside_job(out, False, cwd="/home/u", env={"RAY_JOB_SUBMISSION_ID": "raysubmit_1"})
    check_out_outside_job("results/x", True, cwd="/home/u", env={"RAY_JOB_SUBMISSION_ID": "raysubmit_1"})
    check_out_outside_job("results/x", False, cwd="/home/u", env={})


def test_a_relative_out_under_a_job_is_refused_before_anything(tmp_path: Path, capsys, monkeypatch) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("RAY_JOB_SUBMISSION_ID", "raysubmit_test")
    path = sweep(tmp_path, out="results/x")
    err = error_of(capsys, ["bench", str(path)])
    assert "out 'results/x' is relative" in err and "--set out=s3://" in err
    assert not (tmp_path / "results").exists()
    assert main(["bench", str(path), "--dry-run", "--allow-relative-out"]) == 0
    assert main(["bench", str(path), "--dry-run", "--out", str(tmp_path / "abs")]) == 0


def test_the_paper_plan_without_data_or_weights(capsys, monkeypatch, tmp_path: Path) -> None:
    """363 cells of configs/paper_rn50.yaml (root /data/coop absent here) with sequences and GPU-hours."""
    monkeypatch.setenv("HF_HOME", str(tmp_path / "no-hf"))  # no weights anywhere
    assert main(["bench", str(ROOT / "configs" / "paper_rn50.yaml"), "--dry-run", "--no-data-check", "--gpu", "H100",
                 "--out", str(tmp_path / "o")]) == 0
    text = capsys.readouterr().out
    assert "363 cells: 0 done, 0 failed, 363 to run; estimated queries to run: 1,668,000" in text
    # each query scores every class: imagenet's BBT cells 54,000 queries x 1,000 classes
    assert "text sequences to run: 293,796,000; estimated 0.49 GPU-hours on one H100 (an estimate: 168,197" in text
    assert "RN50:openai  bbt             imagenet           15     0       0      15          54,000        54,000,000                 0" in text
    # CraFT's refinement module encodes a fresh view of the training set each generation: on ImageNet
    # 50/100/100/100/100 generations at 1/2/4/8/16 shots x 1,000 classes, (50 + 200 + 400 + 800 + 1,600)
    # thousand images a seed, 9,150,000 for three
    assert "RN50:openai  craft           imagenet           15     0       0      15          54,000        54,000,000         9,150,000" in text
    assert "images to encode: 28,622,850 (fresh augmented views" in text
    assert not (tmp_path / "o").exists()


def test_no_data_check_needs_dry_run_and_a_measured_gpu(tmp_path: Path, capsys) -> None:
    path = sweep(tmp_path)
    assert "--no-data-check only previews" in error_of(capsys, ["bench", str(path), "--no-data-check"])
    assert "--gpu 'tpu': no craft perf measurement" in error_of(capsys, ["bench", str(path), "--dry-run", "--gpu", "tpu"])


def test_running_cells_stream_their_logs_and_print_their_evaluations(tmp_path: Path, monkeypatch, capsys) -> None:
    """The driver's side of the progress sink: each drained line lands in the cell's log at once; an
    evaluation line is printed, at most once per ``every`` seconds per cell."""
    import types

    import ray

    from benchmark.results.store import log_path
    from benchmark.sweep.runner import LiveLogs, Progress

    batches = [[("c1", "2026-12-05 05:00:00 cell craft/x"), ("c1", "2026-12-05 05:00:01 eval generation=10 queries=400 top1_val=12.5")],
               [("c1", "2026-12-05 05:00:02 eval generation=20 queries=800 top1_val=20")]]
    sink = types.SimpleNamespace(drain=types.SimpleNamespace(remote=lambda: batches.pop(0) if batches else []))
    monkeypatch.setattr(ray, "get", lambda ref, timeout=None: ref)
    monkeypatch.setattr(ray, "wait", lambda refs, timeout=None: (refs, []))
    cell = types.SimpleNamespace(method="craft", dataset="dtd", cell_id="c1", label=lambda: "craft/dtd/1shot/seed1/RN50")
    logfile = Path(log_path(str(tmp_path), "craft", "dtd", "c1"))
    live = LiveLogs(str(tmp_path), sink, 3600.0, Progress(1, False))
    live.update({"c1": cell})  # sends the first drain
    live._drained = 0.0
    live.update({"c1": cell})  # reads it, sends the next
    assert logfile.read_text().count("\n") == 2
    live._drained = 0.0
    live.update({"c1": cell})
    assert "generation=20" in logfile.read_text()
    err = capsys.readouterr().err  # the craft logger's own stderr handler
    said = [ln for ln in err.splitlines() if "running " in ln]
    assert len(said) == 1 and said[0].endswith("running craft/dtd/1shot/seed1/RN50: generation=10 queries=400 top1_val=12.5")


def test_workers_record_the_drivers_commit(monkeypatch) -> None:
    from benchmark.results import provenance
    from benchmark.serve.ray_runtime import _runtime_env

    monkeypatch.setenv("CRAFT_CODE_VERSION", "abc123def456")
    provenance.code_version.cache_clear()
    try:
        assert provenance.code_version() == "abc123def456"
        assert _runtime_env()["env_vars"]["CRAFT_CODE_VERSION"] == "abc123def456"
    finally:
        provenance.code_version.cache_clear()

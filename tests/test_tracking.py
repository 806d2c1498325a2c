"""Experiment tracking against the real client libraries, offline: a sweep with ``--track mlflow`` read back
with ``mlflow.search_runs``, ``craft export wandb`` read back from W&B's offline run files, bad ``--track``
values refused before anything runs, and ``craft tune``'s Ray Tune callbacks pointed at the same places."""

from __future__ import annotations

import json
import struct
from pathlib import Path

import pytest
import torch
import yaml
from test_report_plots import trace
from test_report_tables import row

from benchmark.cli import main
from benchmark.results.store import write_cell


def sweep_config(tmp_path: Path) -> Path:
    cfg = {"out": str(tmp_path / "out"), "methods": ["zero_shot_clip", "bbt"], "datasets": ["digits_rotate"],
           "shots": [2], "seeds": [1], "backbones": ["craft-tiny:builtin"],
           "hparams": {"bbt": {"*": {"budget": 80, "intrinsic_dim": 16, "popsize": 8}}}}
    path = tmp_path / "sweep.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return path


def small_folder(out: Path) -> Path:
    """Two cells written by the real store: CraFT with a five-generation trace, and a failed BBT."""
    write_cell(str(out), [row("craft", "digits_noise", 16, 1, trace=trace("craft", "digits_noise", 16, 1),
                              hparams={"budget": 400, "sigma": 0.5}, queries=400, device="cpu", code_version="v1-test",
                              config_hash="0123456789abcdef")])
    write_cell(str(out), [{**row("bbt", "digits_noise", 16, 1), "status": "failed", "top1_test": None,
                           "error": "Traceback (most recent call last):\nRuntimeError: server lost"}])
    return out


@pytest.mark.parametrize("value, expected", [
    ("neptune", "--track neptune: expected mlflow[:URI] or wandb[:PROJECT]"),
    ("wandb:team/project", "a W&B project is a name without '/'"),
])
def test_a_bad_track_value_is_one_sentence_before_anything_runs(tmp_path: Path, capsys, value: str, expected: str) -> None:
    assert main(["bench", str(sweep_config(tmp_path)), "--track", value]) == 2
    err = capsys.readouterr().err
    assert expected in err and err.count("\n") == 1
    assert not (tmp_path / "out").exists()


def test_a_missing_client_library_names_the_extra(tmp_path: Path, capsys, monkeypatch: pytest.MonkeyPatch) -> None:
    import importlib.util

    find_spec = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "wandb" else find_spec(name, *a))
    assert main(["tune", str(tmp_path / "absent.yaml"), "--track", "wandb"]) == 2
    assert "--track wandb needs the wandb package, not installed here: pip install 'craft-bench[track]'" in capsys.readouterr().err


@pytest.mark.slow  # a real sweep on Ray: 20 s on an idle 2-core machine; the export test below is the fast check
def test_a_sweep_with_track_mlflow_logs_each_cell_as_a_run(tmp_path: Path) -> None:
    """Config as params, final metrics, the trace as steps, provenance as tags; a second export adds nothing.
    (The built-in suite comes from the session's CRAFT_BENCH_CACHE, as the other sweep tests share it.)"""
    mlflow = pytest.importorskip("mlflow")
    store = tmp_path / "mlruns"
    assert main(["bench", str(sweep_config(tmp_path)), "--track", f"mlflow:{store}", "--num-cpus", "1", "--no-progress"]) == 0
    mlflow.set_tracking_uri(f"file://{store}")
    runs = mlflow.search_runs(experiment_names=["out"]).sort_values("tags.mlflow.runName").reset_index(drop=True)
    assert list(runs["tags.mlflow.runName"]) == ["bbt/digits_rotate/2shot/seed1/craft-tiny",
                                                 "zero_shot_clip/digits_rotate/2shot/seed1/craft-tiny"]
    assert list(runs["status"]) == ["FINISHED", "FINISHED"]
    bbt = runs.iloc[0]
    assert bbt["params.method"] == "bbt" and bbt["params.hparams.budget"] == "80" and bbt["params.shots"] == "2"
    assert 0 <= bbt["metrics.top1_test"] <= 100 and 0 < bbt["metrics.queries"] <= 80
    assert bbt["tags.status"] == "ok" and bbt["tags.device"] == f"cpu ({torch.backends.cpu.get_cpu_capability()})" and len(bbt["tags.config_hash"]) == 16
    assert bbt["tags.code_version"] and bbt["tags.results"] == str(tmp_path / "out")
    steps = mlflow.MlflowClient().get_metric_history(bbt["run_id"], "trace.queries")
    queries = [m.value for m in sorted(steps, key=lambda m: m.step)]
    assert len(queries) >= 2 and queries == sorted(queries) and queries[-1] == bbt["metrics.queries"]
    assert main(["export", f"mlflow:{store}", str(tmp_path / "out")]) == 0  # already there: nothing new
    assert len(mlflow.search_runs(experiment_names=["out"])) == 2


def test_export_mlflow_logs_a_folder_into_a_file_store(tmp_path: Path, capsys) -> None:
    """What the MLflow UI lists: a run per cell named by its label, params, final metrics, trace steps, tags;
    a failed cell's run FAILED with its error's last line; an export run twice adds nothing."""
    mlflow = pytest.importorskip("mlflow")
    out = small_folder(tmp_path / "results")
    assert main(["export", "mlflow", str(out)]) == 0
    assert f"logged 2 cell(s), 0 already there, to MLflow experiment 'results' at file://{out}/_mlruns" in capsys.readouterr().out
    mlflow.set_tracking_uri(f"file://{out}/_mlruns")
    runs = mlflow.search_runs(experiment_names=["results"]).sort_values("tags.mlflow.runName").reset_index(drop=True)
    assert list(runs["tags.mlflow.runName"]) == ["bbt/digits_noise/16shot/seed1/craft-tiny",
                                                 "craft/digits_noise/16shot/seed1/craft-tiny"]
    failed, craft = runs.iloc[0], runs.iloc[1]
    assert (failed["status"], failed["tags.error"]) == ("FAILED", "RuntimeError: server lost")
    assert craft["status"] == "FINISHED" and craft["params.hparams.sigma"] == "0.5" and craft["params.seed"] == "1"
    assert craft["metrics.top1_test"] == row("craft", "digits_noise", 16, 1)["top1_test"] and craft["metrics.queries"] == 400
    assert (craft["tags.code_version"], craft["tags.device"], craft["tags.config_hash"]) == ("v1-test", "cpu", "0123456789abcdef")
    history = mlflow.MlflowClient().get_metric_history(craft["run_id"], "trace.top1_test")
    assert sorted((m.step, m.value) for m in history) == [(t["generation"], t["top1_test"])
                                                          for t in trace("craft", "digits_noise", 16, 1) if t["top1_test"]]
    assert main(["export", "mlflow", str(out)]) == 0
    assert "logged 0 cell(s), 2 already there" in capsys.readouterr().out
    assert len(mlflow.search_runs(experiment_names=["results"])) == 2


def records(path: Path) -> list:
    """The protobuf records of a W&B offline ``.wandb`` file (a LevelDB-style log of 32 KiB blocks after a
    7-byte header; each record is split into chunks with a 7-byte header: crc, length, kind)."""
    from wandb.proto import wandb_internal_pb2 as pb

    data = path.read_bytes()
    assert data[:4] == b":W&B"
    pos, found, pending = 7, [], b""
    while pos + 7 <= len(data):
        if 32768 - pos % 32768 < 7:  # a block's tail too short for a header is padding
            pos += 32768 - pos % 32768
            continue
        _, length, kind = struct.unpack("<IHB", data[pos:pos + 7])
        if kind == 0:
            break
        pending += data[pos + 7:pos + 7 + length]
        pos += 7 + length
        if kind in (1, 4):  # a whole record, or the last chunk of one
            record = pb.Record()
            record.ParseFromString(pending)
            found.append(record)
            pending = b""
    return found


def test_export_wandb_writes_offline_runs_that_read_back(tmp_path: Path, capsys) -> None:
    pytest.importorskip("wandb")
    out = small_folder(tmp_path / "results")
    assert main(["export", "wandb:ablation", str(out)]) == 0
    assert "logged 2 cell(s), 0 already there" in capsys.readouterr().out
    files = sorted((out / "_wandb" / "wandb").glob("offline-run-*/*.wandb"))
    assert [f.name for f in files] == ["run-bbt-craft-tiny-digits_noise-16-1-failed.wandb",
                                       "run-craft-craft-tiny-digits_noise-16-1-ok.wandb"]
    recs = records(files[1])
    kinds = [r.WhichOneof("record_type") for r in recs]
    assert "run" in kinds, (kinds, files[1].stat().st_size)
    run = next(r.run for r in recs if r.WhichOneof("record_type") == "run")
    config = {u.key: json.loads(u.value_json) for u in run.config.update}
    assert (run.project, run.display_name, run.run_group) == ("ablation", "craft/digits_noise/16shot/seed1/craft-tiny", "results")
    assert config["method"] == "craft" and config["hparams.sigma"] == 0.5
    assert config["provenance"]["code_version"] == "v1-test" and "status=ok" in run.tags
    history = [{i.nested_key[0] if i.nested_key else i.key: json.loads(i.value_json) for i in r.history.item}
               for r in recs if r.WhichOneof("record_type") == "history"]
    assert [h["_step"] for h in history] == [0, 1, 2, 3, 4]
    assert [h["trace.queries"] for h in history] == [40, 80, 120, 160, 200]
    summary = {(u.nested_key[0] if u.nested_key else u.key): u.value_json
               for r in recs if r.WhichOneof("record_type") == "summary" for u in r.summary.update}
    assert float(summary["top1_test"]) == row("craft", "digits_noise", 16, 1)["top1_test"]
    exits = [r.exit.exit_code for r in records(files[0]) if r.WhichOneof("record_type") == "exit"]
    assert exits == [1]  # the failed cell's run is marked failed
    assert main(["export", "wandb:ablation", str(out)]) == 0
    assert "logged 0 cell(s), 2 already there" in capsys.readouterr().out


def test_tune_trials_use_rays_own_callbacks_in_the_same_places(tmp_path: Path) -> None:
    pytest.importorskip("mlflow")
    from ray.air.integrations.mlflow import MLflowLoggerCallback

    from benchmark.track.trackers import TrackSpec
    from tuning.tracking import trial_callbacks

    (callback,) = trial_callbacks([TrackSpec("mlflow")], str(tmp_path / "tuned"), "craft/digits_rotate/2shot")
    assert isinstance(callback, MLflowLoggerCallback)
    assert callback.tracking_uri == f"file://{tmp_path}/tuned/_mlruns"
    assert callback.experiment_name == "tuned-trials" and callback.tags == {"study": "craft/digits_rotate/2shot"}
    pytest.importorskip("wandb")
    from ray.air.integrations.wandb import WandbLoggerCallback

    (callback,) = trial_callbacks([TrackSpec("wandb", "search")], str(tmp_path / "tuned"), "craft/digits_rotate/2shot")
    assert isinstance(callback, WandbLoggerCallback) and callback.project == "search"
    assert callback.kwargs == {"mode": "offline", "dir": f"{tmp_path}/tuned/_wandb", "tags": ["craft/digits_rotate/2shot"]}


def test_a_tracking_error_is_a_warning_and_the_sweep_goes_on(monkeypatch: pytest.MonkeyPatch) -> None:
    """The rows are stored before tracking, so a tracking server down costs only the run, which export logs later."""
    from benchmark.sweep import runner

    warned: list[str] = []
    monkeypatch.setattr(runner.log, "warning", lambda message, *args: warned.append(message % args))

    class Cell:
        def label(self) -> str:
            return "craft/dtd/16shot/seed1/RN50"

    def down(rows: list[dict]) -> None:
        raise ConnectionError("tracking server refused the connection\nmore detail")

    runner._tell(down, [row("craft", "dtd", 16, 1)], Cell())
    assert warned == ["warning: cell craft/dtd/16shot/seed1/RN50 stored but not tracked: ConnectionError: "
                               "tracking server refused the connection (craft export logs a folder later)"]

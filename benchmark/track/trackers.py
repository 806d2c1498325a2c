"""One finished cell's result rows as one tracked run, in MLflow or Weights & Biases, offline by default.

A cell becomes a run named by its label (``craft/digits_noise/16shot/seed1/craft-tiny``): what was run
and its hyperparameters as params (``hparams.KEY``), the final metrics (accuracies, queries, cost; an
extra ``top1_test.<eval_dataset>`` per other test set), the per-generation ``trace`` as steps
(``trace.fitness``... at step = generation, ``trace.queries`` for plotting against queries), and the
provenance (cell id, status, code version, device, versions, server options, config hash) as tags.

It works from the rows as written (:mod:`benchmark.results.schema`), so the sweep driver logs each
cell when it stores it (workers need no client library) and ``craft export`` logs a folder already
run with the same code. Default places, inside the results folder under names Parquet readers skip:
MLflow's file store ``<out>/_mlruns`` (``MLFLOW_ALLOW_FILE_STORE=true`` is set for it: MLflow 3 refuses its file
store otherwise; give ``sqlite:///PATH`` for a database), W&B's offline runs under ``<out>/_wandb`` (``wandb sync`` uploads
them; ``WANDB_MODE=online`` logs live). The client libraries are optional (``pip install
'craft-bench[track]'``) and imported only when a tracker starts.
"""

from __future__ import annotations

import datetime as dt
import glob
import importlib.util
import json
import math
import os
from dataclasses import dataclass
from typing import Any

from benchmark.errors import UserError

KINDS = ("mlflow", "wandb")
EXTRA = "pip install 'craft-bench[track]'"
WHAT = ("method", "dataset", "backbone", "weights", "shots", "seed", "budget", "protocol", "train_aug", "precision")
METRICS = ("top1_val", "top1_test", "queries", "unbudgeted_queries", "text_sequences", "images_encoded", "model_calls",
           "learned_params", "learned_bytes", "wall_s", "gpu_s", "peak_mem_mb", "shots_used")
PROVENANCE = ("cell_id", "status", "code_version", "host", "started_at", "finished_at", "computed_in", "compile",
              "attention", "colocate", "device", "cuda_version", "python_version", "torch_version", "open_clip_version",
              "config_hash")
TRACE = ("queries", "fitness", "train_loss", "top1_val", "top1_test")
DEFAULT_PROJECT = "craft-bench"
MLFLOW_DIR, WANDB_DIR = "_mlruns", "_wandb"


@dataclass(frozen=True)
class TrackSpec:
    """A parsed ``--track`` value: ``kind`` (mlflow or wandb) and its ``target`` (MLflow URI, W&B project; None: default)."""

    kind: str
    target: str | None = None


def parse_track(value: str, flag: str = "--track") -> TrackSpec:
    """``mlflow[:URI]`` or ``wandb[:PROJECT]`` as a :class:`TrackSpec`; UserError naming the flag for anything else,
    or when the client library is not installed (checked without importing it)."""
    kind, _, target = value.partition(":")
    if kind not in KINDS:
        raise UserError(f"{flag} {value}: expected mlflow[:URI] or wandb[:PROJECT]")
    if kind == "wandb" and target and ("/" in target or len(target) > 128):
        raise UserError(f"{flag} {value}: a W&B project is a name without '/' (at most 128 characters)")
    if importlib.util.find_spec(kind) is None:
        raise UserError(f"{flag} {kind} needs the {kind} package, not installed here: {EXTRA}")
    return TrackSpec(kind, target or None)


def mlflow_uri(target: str | None, out: str) -> str:
    """The MLflow tracking URI: ``target`` as given when it is a URI, a local folder as a ``file://`` store,
    by default ``<out>/_mlruns``."""
    if target and "://" in target:
        return target
    return "file://" + os.path.abspath(target or os.path.join(out, MLFLOW_DIR))


def experiment_name(out: str) -> str:
    """The experiment (MLflow) or group (W&B) of a results folder: ``MLFLOW_EXPERIMENT_NAME``, else its name."""
    return os.environ.get("MLFLOW_EXPERIMENT_NAME") or os.path.basename(os.path.abspath(out).rstrip("/")) or "results"


def run_name(row: dict[str, Any]) -> str:
    return f"{row['method']}/{row['dataset']}/{row['shots']}shot/seed{row['seed']}/{row['backbone']}"


def _json(value: Any) -> Any:
    if isinstance(value, str):
        try:
            return json.loads(value)
        except ValueError:
            return value
    return value


def _flat(prefix: str, value: Any, out: dict[str, Any]) -> dict[str, Any]:
    if isinstance(value, dict):
        for k, v in sorted(value.items()):
            _flat(f"{prefix}.{k}", v, out)
    else:
        out[prefix] = value
    return out


def _number(value: Any) -> float | None:
    if isinstance(value, bool) or value is None:
        return None
    try:
        x = float(value)
    except (TypeError, ValueError):
        return None
    return x if math.isfinite(x) else None


def params_of(row: dict[str, Any]) -> dict[str, Any]:
    """What was run: the cell's keys, then every hyperparameter as ``hparams.KEY`` (nested keys dotted)."""
    params = {k: row.get(k) for k in WHAT if row.get(k) is not None}
    hparams = _json(row.get("hparams"))
    if isinstance(hparams, dict):
        _flat("hparams", hparams, params)
    return params


def metrics_of(rows: list[dict[str, Any]]) -> dict[str, float]:
    """The final metrics of a cell (its own row), plus ``top1_test.<eval_dataset>`` for each other test set."""
    own = rows[0]
    metrics = {k: x for k in METRICS if (x := _number(own.get(k))) is not None}
    for r in rows[1:]:
        if (x := _number(r.get("top1_test"))) is not None:
            metrics[f"top1_test.{r['eval_dataset']}"] = x
    return metrics


def trace_of(row: dict[str, Any]) -> list[tuple[int, dict[str, float]]]:
    """The per-generation trace as (step, metrics): step is the generation, each value ``trace.<field>``."""
    steps = []
    for i, t in enumerate(row.get("trace") or []):
        step = t.get("generation")
        values = {f"trace.{k}": x for k in TRACE if (x := _number(t.get(k))) is not None}
        if values:
            steps.append((int(step) if step is not None else i, values))
    return steps


def tags_of(row: dict[str, Any], out: str) -> dict[str, str]:
    """The provenance as string tags (absent columns left out), the failure's last line, and the results folder."""
    tags = {k: _text(row.get(k)) for k in PROVENANCE if row.get(k) is not None}
    if row.get("status") != "ok" and row.get("error"):
        lines = [line for line in str(row["error"]).splitlines() if line.strip()]
        tags["error"] = lines[-1].strip()[:500] if lines else ""
    tags["results"] = os.path.abspath(out) if "://" not in out else out
    return tags


def _text(value: Any) -> str:
    if isinstance(value, dt.datetime):
        return value.astimezone(dt.timezone.utc).isoformat()
    return str(value).lower() if isinstance(value, bool) else str(value)


def _millis(value: Any) -> int | None:
    if isinstance(value, dt.datetime):
        if value.tzinfo is None:
            value = value.replace(tzinfo=dt.timezone.utc)
        return int(value.timestamp() * 1000)
    return None


class Tracker:
    """Logs cells (each a list of result rows, the cell's own row first) to one tracking backend."""

    kind = ""

    def log_cell(self, rows: list[dict[str, Any]]) -> bool:
        """Log one cell as one run; False when it was already logged (same cell id and status)."""
        raise NotImplementedError

    def close(self) -> None:
        """Finish whatever is open."""

    def where(self) -> str:
        """Where the runs went, for a closing line."""
        raise NotImplementedError


class MLflowTracker(Tracker):
    """One MLflow run per cell, through ``MlflowClient`` (no global active run), in experiment :func:`experiment_name`."""

    kind = "mlflow"

    def __init__(self, target: str | None, out: str) -> None:
        import warnings

        from mlflow.tracking import MlflowClient

        self.out, self.uri = out, mlflow_uri(target, out)
        if self.uri.startswith("file:"):  # MLflow 3 refuses its file store (the offline one) unless told
            os.environ.setdefault("MLFLOW_ALLOW_FILE_STORE", "true")
        self.client = MlflowClient(tracking_uri=self.uri)
        name = experiment_name(out)
        with warnings.catch_warnings():  # MLflow 3 warns that its file store will be retired; it is the offline one
            warnings.simplefilter("ignore", FutureWarning)
            found = self.client.get_experiment_by_name(name)
            self.experiment_id = found.experiment_id if found else self.client.create_experiment(name)
        self._logged = self._already_logged()

    def _already_logged(self) -> set[tuple[str, str]]:
        runs, token = set(), None
        while True:
            page = self.client.search_runs([self.experiment_id], max_results=1000, page_token=token)
            runs |= {(r.data.tags.get("cell_id"), r.data.tags.get("status")) for r in page}
            token = page.token
            if not token:
                return runs

    def log_cell(self, rows: list[dict[str, Any]]) -> bool:
        from mlflow.entities import Metric, Param, RunTag

        row = rows[0]
        key = (row.get("cell_id"), row.get("status"))
        if key in self._logged:
            return False
        start, end = _millis(row.get("started_at")), _millis(row.get("finished_at"))
        when = end or start or 0
        run = self.client.create_run(self.experiment_id, start_time=start, run_name=run_name(row),
                                     tags={"craft.method": str(row.get("method"))})
        run_id = run.info.run_id
        params = [Param(k, str(v)[:6000]) for k, v in params_of(row).items()]
        tags = [RunTag(k, v) for k, v in tags_of(row, self.out).items()]
        metrics = [Metric(k, v, when, 0) for k, v in metrics_of(rows).items()]
        metrics += [Metric(k, v, when, step) for step, values in trace_of(row) for k, v in values.items()]
        for i in range(0, max(len(metrics), 1), 1000):  # log_batch takes at most 1000 metrics
            self.client.log_batch(run_id, metrics=metrics[i:i + 1000], params=params if i == 0 else [],
                                  tags=tags if i == 0 else [])
        self.client.set_terminated(run_id, "FINISHED" if row.get("status") == "ok" else "FAILED", end_time=end)
        self._logged.add(key)
        return True

    def where(self) -> str:
        return f"MLflow experiment {experiment_name(self.out)!r} at {self.uri} (MLFLOW_ALLOW_FILE_STORE=true mlflow ui --backend-store-uri {self.uri})"


class WandbTracker(Tracker):
    """One W&B run per cell (id: its cell id and status), offline under ``<out>/_wandb`` unless ``WANDB_MODE`` says
    otherwise; group: the results folder's name, job type: the method."""

    kind = "wandb"

    def __init__(self, target: str | None, out: str) -> None:
        import wandb

        self.wandb = wandb
        self.out, self.project = out, target or DEFAULT_PROJECT
        self.dir = os.path.abspath(os.path.join(out, WANDB_DIR))
        self.mode = os.environ.get("WANDB_MODE") or "offline"
        # The run is the cell's rows: no console capture, system metrics, code, git or machine scan.
        self._settings = wandb.Settings(silent=True, console="off", x_disable_stats=True, x_disable_meta=True,
                                        x_disable_machine_info=True, save_code=False, disable_git=True,
                                        disable_job_creation=True)
        os.makedirs(self.dir, exist_ok=True)

    def run_id(self, row: dict[str, Any]) -> str:
        return f"{row.get('cell_id')}-{'ok' if row.get('status') == 'ok' else 'failed'}"

    def logged(self, run_id: str) -> bool:
        return bool(glob.glob(os.path.join(self.dir, "wandb", f"*-{glob.escape(run_id)}")))

    def log_cell(self, rows: list[dict[str, Any]]) -> bool:
        row = rows[0]
        run_id = self.run_id(row)
        if self.mode == "offline" and self.logged(run_id):
            return False
        tags = tags_of(row, self.out)
        config = {**params_of(row), "provenance": tags}
        labels = [f"{k}={tags[k]}"[:64] for k in ("status", "device", "computed_in", "config_hash") if k in tags]
        run = self.wandb.init(project=self.project, dir=self.dir, mode=self.mode, id=run_id, name=run_name(row),
                              group=experiment_name(self.out), job_type=str(row.get("method")), config=config,
                              tags=labels, reinit="create_new", settings=self._settings)
        try:
            for step, values in trace_of(row):
                run.log(values, step=step)
            run.summary.update(metrics_of(rows))
        finally:
            run.finish(exit_code=0 if row.get("status") == "ok" else 1)
        return True

    def close(self) -> None:
        """Stop W&B's service process: it writes the last records of the offline run files as it stops."""
        self.wandb.teardown()

    def where(self) -> str:
        if self.mode == "offline":
            return f"W&B offline runs of project {self.project!r} under {self.dir}/wandb (upload: wandb sync {self.dir}/wandb/offline-run-*)"
        return f"W&B project {self.project!r} ({self.mode})"


def open_tracker(spec: TrackSpec, out: str) -> Tracker:
    """The tracker ``spec`` names, logging the cells of results folder ``out``."""
    return MLflowTracker(spec.target, out) if spec.kind == "mlflow" else WandbTracker(spec.target, out)


def folder_cells(out: str) -> list[list[dict[str, Any]]]:
    """Each cell under results folder ``out`` whose file verifies, as its rows (the cell's own row first); a
    failure record a later success superseded is left out (:func:`benchmark.results.store.scan_cells`)."""
    import pyarrow.parquet as pq

    from benchmark.results.store import list_files, parse_cell_file, resolve, scan_cells

    fs, _ = resolve(out)
    status, damaged = scan_cells(out)
    cells = []
    for f in sorted(list_files(out), key=lambda f: f.path):
        kind = parse_cell_file(f.base_name)
        if kind is None or f.path in damaged or status.get(kind[0]) != kind[1]:
            continue
        with fs.open_input_file(f.path) as stream:
            rows = pq.read_table(stream).to_pylist()
        own = [r for r in rows if r.get("eval_dataset") in (None, r.get("dataset"))][:1]
        cells.append(own + [r for r in rows if r not in own])
    return cells


def export_folder(spec: TrackSpec, out: str) -> tuple[int, int, str]:
    """Log every cell of ``out`` not logged before: (logged now, skipped as already there, where they went)."""
    tracker = open_tracker(spec, out)
    logged = skipped = 0
    try:
        for rows in folder_cells(out):
            if tracker.log_cell(rows):
                logged += 1
            else:
                skipped += 1
    finally:
        tracker.close()
    return logged, skipped, tracker.where()

"""Run one cell against a model server and turn its result into schema rows."""

from __future__ import annotations

import datetime as dt
import socket
from typing import Any, Callable

import torch
from threadpoolctl import threadpool_limits

from benchmark.datasets.registry import train_aug_of
from benchmark.memory import process_peak_rss_mb
from benchmark.results.provenance import code_version, package_versions, runtime_versions
from benchmark.serve.client import RemoteBackend
from benchmark.sweep.cell import Cell
from benchmark.datasets.task_spec import TaskSpec
from craft.blackbox import MeteredBlackBox
from craft.methods import RunResult, Task, get_method
from craft.methods.base import SERVER, run_image_budget


def task_spec(cell: Cell, eval_test: bool = True) -> TaskSpec:
    return TaskSpec(cell.dataset, cell.shots, cell.seed, cell.root, tuple(cell.eval_datasets), eval_test, cell.train_aug)


def run_cell(
    cell: Cell, server: Any, eval_test: bool = True, on_eval: Callable[[dict[str, float]], None] | None = None,
    colocate: bool = False,
) -> list[dict[str, Any]]:
    """Run ``cell`` with ``server`` (Ray actor handle or local ModelServer); one row per eval set.

    ``on_eval`` gets each evaluated trace row (a search reports and prunes with it; a run on the
    server reports them when it ends). ``colocate``: CraFT and BBT run in the server's process,
    their logits on its device (:mod:`benchmark.serve.colocate`).
    """
    started = dt.datetime.now(dt.timezone.utc)
    method = get_method(cell.method)
    backend = RemoteBackend(server, task_spec(cell, eval_test))
    prep = backend.prepared
    labels = {k: torch.as_tensor(v) for k, v in prep["labels"].items()}
    image_budget = run_image_budget(method, cell.config, cell.budget(), len(labels["train"]), cell.dataset)
    box = MeteredBlackBox(backend, cell.budget(), image_budget)
    eval_splits = tuple(s for s in labels if s != "train")
    task = Task(cell.dataset, prep["classnames"], prep["template"], labels, cell.shots, eval_splits, prep["class_subsets"],
                on_eval, cell.backbone)
    whitebox_peak_mb = None
    on_server = colocate and method.colocatable
    if method.runs_on == SERVER or on_server:
        # beside the model: a white-box reference needs it; a colocated run has its logits on its device
        out = backend.run_here(cell.method, cell.hparams, cell.seed, box.budget, eval_splits)
        result, whitebox_peak_mb = RunResult(**out["result"]), out["peak_mem_mb"]
        for row in result.trace:  # evaluations ran remotely: report them now, in order
            if task.on_eval is not None and any(k.startswith("top1_") for k in row):
                task.on_eval(row)
    else:
        # One BLAS thread: CMA-ES's eigendecompositions crawl when two OpenBLAS threads fight other runs.
        with threadpool_limits(1):
            result = method.run(box, task, cell.config, cell.seed)
    server_cost = backend.release()
    return result_rows(cell, result, box.budget, started, backend.images_encoded, server_cost,
                       whitebox_peak_mb or server_cost.get("peak_mem_mb") or process_peak_rss_mb(),
                       shots_used(labels["train"]), image_budget)


def shots_used(train_labels: torch.Tensor) -> int:
    """The fewest training images of any class: the shots a cell really had where a class has fewer than asked."""
    counts = torch.bincount(train_labels.long())
    counts = counts[counts > 0]
    return int(counts.min()) if counts.numel() else 0


def result_rows(
    cell: Cell, result: RunResult, budget: int, started: dt.datetime, server_images: int,
    server_cost: dict[str, Any], peak_mem_mb: float | None, shots_had: int | None = None,
    image_budget: int | None = None,
) -> list[dict[str, Any]]:
    """A finished run's schema rows: one for its dataset, one per extra eval dataset."""
    usage = result.usage
    base = {
        "cell_id": cell.cell_id,
        "status": "ok",
        "method": cell.method,
        "dataset": cell.dataset,
        "backbone": cell.backbone,
        "weights": cell.weights,
        "shots": cell.shots,
        "seed": cell.seed,
        "hparams": result.hparams,
        "protocol": cell.protocol,
        "train_aug": train_aug_of(cell.dataset, cell.train_aug),
        "shots_used": shots_had,
        "budget": budget,
        "queries": usage["queries"],
        "unbudgeted_queries": usage["unbudgeted_queries"],
        "text_sequences": usage["text_sequences"],
        "images_encoded": usage["images_encoded"] + server_images,
        "model_calls": usage["calls"],
        "query_images": usage.get("query_images", 0),
        "image_budget": image_budget,
        "top1_val": result.metrics.get("top1_val"),
        "learned_params": result.learned_params,
        "learned_bytes": result.learned_bytes,
        "wall_s": result.wall_s,
        "gpu_s": server_cost.get("gpu_s"),
        "peak_mem_mb": peak_mem_mb,
        "trace": result.trace,
        "code_version": code_version(),
        "packages": package_versions(),
        **runtime_versions(),
        **{k: server_cost.get(k) for k in ("device", "cuda_version", "computed_in")},
        "host": socket.gethostname(),
        "started_at": started,
        "finished_at": dt.datetime.now(dt.timezone.utc),
    }
    rows = [{**base, "eval_dataset": cell.dataset, "top1_test": result.metrics.get("top1_test")}]
    for key in cell.eval_datasets:
        rows.append({**base, "eval_dataset": key, "top1_test": result.metrics.get(f"top1_test:{key}"), "trace": None})
    return rows


def failed_row(cell: Cell, error: str) -> dict[str, Any]:
    """The row a failed cell leaves, so that ``--rerun-failed`` finds it."""
    now = dt.datetime.now(dt.timezone.utc)
    return {
        "cell_id": cell.cell_id, "status": "failed", "error": error[-4000:], "method": cell.method,
        "dataset": cell.dataset, "eval_dataset": cell.dataset, "backbone": cell.backbone,
        "weights": cell.weights, "shots": cell.shots, "seed": cell.seed, "hparams": cell.full_hparams(),
        "protocol": cell.protocol, "budget": cell.budget(), "code_version": code_version(), **runtime_versions(),
        "host": socket.gethostname(),
        "started_at": now, "finished_at": now,
    }

"""Running cells on Ray: model server actors hold the model, CPU-only tasks run the methods.

One server actor per (backbone, weights) and GPU (one CPU server where the cluster has no
GPU); each serves several runs at once (threads). A run reserves CPU only: the GPU is
counted once, by its server. The driver writes each finished cell to its own Parquet file.
"""

from __future__ import annotations

import os
import time
import traceback
from collections import defaultdict
from dataclasses import dataclass, field
from typing import Any

from benchmark.results_io import cell_status, clean_temporaries, write_cell
from benchmark.sweep.cell import Cell

WORKER_ENV = {"OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "OPENBLAS_NUM_THREADS": "1", "TOKENIZERS_PARALLELISM": "false"}


@dataclass
class SweepSummary:
    done: int = 0
    failed: int = 0
    skipped: int = 0
    queries: int = 0
    wall_s: float = 0.0
    failures: list[str] = field(default_factory=list)


def init_ray(address: str | None = None, num_cpus: int | None = None, num_gpus: int | None = None) -> None:
    """Connect to ``address`` (or ``RAY_ADDRESS``), else start a local runtime with explicit resources."""
    import ray

    if ray.is_initialized():
        return
    address = address or os.environ.get("RAY_ADDRESS")
    runtime_env = {"env_vars": WORKER_ENV}
    if address:
        ray.init(address=address, runtime_env=runtime_env, log_to_driver=False)
    else:
        ray.init(
            num_cpus=num_cpus or os.cpu_count() or 1, num_gpus=num_gpus, include_dashboard=False,
            runtime_env=runtime_env, log_to_driver=False,
        )


def _run_cell_task(cell: Cell, server: Any, eval_test: bool) -> list[dict[str, Any]]:
    from benchmark.sweep.run_cell import failed_row, run_cell

    try:
        return run_cell(cell, server, eval_test)
    except Exception:  # a failed cell is recorded, not lost; process deaths are retried by Ray
        return [failed_row(cell, traceback.format_exc())]


def start_servers(cells: list[Cell], runs_per_server: int, mode: str = "fast", cache_dir: str | None = None) -> dict[tuple[str, str], list[Any]]:
    """One server actor per GPU for each (backbone, weights); spread over nodes."""
    import ray

    from benchmark.server import ModelServer

    gpus = int(ray.cluster_resources().get("GPU", 0))
    keys = sorted({(c.backbone, c.weights) for c in cells})
    per_key = max(1, gpus // max(1, len(keys))) if gpus else 1
    actor_cls = ray.remote(ModelServer)
    servers: dict[tuple[str, str], list[Any]] = {}
    for backbone, weights in keys:
        servers[(backbone, weights)] = [
            actor_cls.options(
                num_gpus=1 if gpus else 0, num_cpus=0, max_concurrency=runs_per_server + 2,
                max_restarts=-1, max_task_retries=3, scheduling_strategy="SPREAD",
            ).remote(backbone, weights, mode=mode, cache_dir=cache_dir)
            for _ in range(per_key)
        ]
    # Fail fast on a server that cannot start (weights missing, unknown backbone).
    ray.get([s.ping.remote() for group in servers.values() for s in group])
    return servers


def run_sweep(
    cells: list[Cell],
    out: str,
    *,
    address: str | None = None,
    num_cpus: int | None = None,
    runs_per_server: int = 4,
    rerun_failed: bool = False,
    progress: bool = True,
    eval_test: bool = True,
    cache_dir: str | None = None,
) -> SweepSummary:
    """Run every cell not yet done under ``out``; write each as it finishes."""
    import ray

    summary = SweepSummary()
    start = time.perf_counter()
    clean_temporaries(out)
    status = cell_status(out)
    todo = []
    for c in cells:
        s = status.get(c.cell_id)
        if s == "ok" or (s == "failed" and not rerun_failed):
            summary.skipped += 1
        else:
            todo.append(c)
    if not todo:
        summary.wall_s = time.perf_counter() - start
        return summary

    init_ray(address, num_cpus)
    servers = start_servers(todo, runs_per_server, cache_dir=cache_dir)
    remote_run = ray.remote(num_cpus=1, max_retries=3, retry_exceptions=False)(_run_cell_task)
    bar = _progress(len(todo), progress)
    pending: dict[Any, Cell] = {}
    queue = list(todo)
    turn: dict[tuple[str, str], int] = defaultdict(int)
    capacity = sum(len(g) for g in servers.values()) * runs_per_server
    while queue or pending:
        while queue and len(pending) < capacity:
            cell = queue.pop(0)
            group = servers[(cell.backbone, cell.weights)]
            server = group[turn[(cell.backbone, cell.weights)] % len(group)]
            turn[(cell.backbone, cell.weights)] += 1
            pending[remote_run.remote(cell, server, eval_test)] = cell
        ready, _ = ray.wait(list(pending), num_returns=1)
        for ref in ready:
            cell = pending.pop(ref)
            try:
                rows = ray.get(ref)
            except Exception as exc:  # the task died more often than retried
                from benchmark.sweep.run_cell import failed_row

                rows = [failed_row(cell, f"{type(exc).__name__}: {exc}")]
            write_cell(out, rows)
            if rows[0]["status"] == "ok":
                summary.done += 1
                summary.queries += int(rows[0]["queries"] or 0)
            else:
                summary.failed += 1
                summary.failures.append(f"{cell.label()}: {rows[0]['error'].strip().splitlines()[-1]}")
            elapsed = time.perf_counter() - start
            bar.set_postfix(running=len(pending), failed=summary.failed, qps=f"{summary.queries / elapsed:.0f}")
            bar.update(1)
    bar.close()
    summary.wall_s = time.perf_counter() - start
    return summary


def _progress(total: int, enabled: bool):
    from tqdm import tqdm

    return tqdm(total=total, unit="run", desc="runs", disable=not enabled, dynamic_ncols=True)

"""``craft perf --server-runs``: concurrent CraFT runs, each its own process, against one model server.

This is how ``craft bench`` serves runs: a Ray actor holds the engine and merges the queries that
its runs send while a pass is running into one text-tower pass (:mod:`benchmark.serve.batching`, on a
GPU); each run is a Ray task on one CPU with its own CMA-ES, fitness and refinement module, and
receives logits on the host. A run's steps depend on each other, so one run leaves the GPU idle
while it computes; separate processes let one run's own work overlap another's pass (in one
process, ``measure_loop``'s runs interleave to the same end: :mod:`craft.interleave`).

The runs use the main dataset's paper-shapes task (generated images, encoded once by the
server) and start their loops together (a barrier after the task is prepared).
"""

from __future__ import annotations

import os
import statistics
import threading
import time
from typing import Any

import torch

from measurement.loops import _craft_config, _generations, _timed_box_cls, generation_figures
from benchmark.datasets.task_spec import TaskSpec


class _Barrier:
    """A Ray actor that releases its callers once ``parties`` of them wait (one thread each)."""

    def __init__(self, parties: int) -> None:
        self._barrier = threading.Barrier(parties)

    def wait(self) -> float:
        self._barrier.wait(timeout=120)  # a run that failed before it: the others stop waiting
        return time.perf_counter()


def _server_run(server: Any, spec: TaskSpec, barrier: Any, popsize: int, intrinsic_dim: int, total: int, seed: int) -> dict[str, Any]:
    """One CraFT run over ``server`` (a Ray task): every logits call's start, end, budgeted flag and sequences."""
    import ray
    from threadpoolctl import threadpool_limits

    from benchmark.serve.client import RemoteBackend
    from craft.methods import Task, get_method

    backend = RemoteBackend(server, spec)
    prep = backend.prepared
    labels = {k: torch.as_tensor(v) for k, v in prep["labels"].items()}
    task = Task(spec.dataset, prep["classnames"], prep["template"], labels, spec.shots, ("val",))
    box = _timed_box_cls()(backend, popsize * total)
    cfg = _craft_config(popsize, intrinsic_dim, len(task.classnames), total)
    import cma  # noqa: F401 - the methods import it at their start (about a second): before the barrier
    ray.get(barrier.wait.remote())
    with threadpool_limits(1):
        get_method("craft").run(box, task, cfg, seed=seed)
    backend.release()
    return {"calls": box.calls, "pid": os.getpid()}


def measure_server(
    backbone: str, weights: str, device: torch.device, dataset: str, runs: int, popsize: int, intrinsic_dim: int,
    generations: int, warmup: int, precision: str = "auto",
) -> dict[str, Any]:
    """``runs`` concurrent CraFT runs (Ray tasks) against one model server actor on ``device``.

    ``sequences_per_s`` is the sum of the runs' rates over their timed generations (after
    ``warmup``); ``overlap`` is the share of the mean run's timed span during which all runs
    were timing at once (near 1: the rates add up to a throughput the server sustained). Starts a
    local Ray runtime unless one is up, and leaves it up (``craft perf`` stops it).
    """
    import ray

    from benchmark.serve.options import ServerOptions
    from benchmark.serve.server import ModelServer
    from benchmark.serve.ray_runtime import init_ray

    gpu = device.type == "cuda"
    init_ray(None, num_cpus=max(runs + 1, os.cpu_count() or 1), num_gpus=torch.cuda.device_count() if gpu else 0)
    total = warmup + generations + 1  # the last generation also evaluates: it is not timed
    server = ray.remote(ModelServer).options(num_cpus=0, num_gpus=1 if gpu else 0, max_concurrency=2 * runs + 2).remote(
        backbone, weights, ServerOptions(), precision, cache_dir="", device=None if gpu else "cpu"
    )
    spec = TaskSpec(dataset, shots=16, seed=1, eval_test=False)
    try:
        lease = ray.get(server.prepare.remote(spec))["task_id"]  # images encoded once, before the clock
        before = ray.get(server.ping.remote())
        barrier = ray.remote(_Barrier).options(num_cpus=0, max_concurrency=runs + 1).remote(runs)
        task = ray.remote(num_cpus=1, max_retries=0)(_server_run)
        outs = ray.get([task.remote(server, spec, barrier, popsize, intrinsic_dim, total, i) for i in range(runs)])
        after = ray.get(server.ping.remote())
        ray.get(server.release.remote(lease))
    finally:
        ray.kill(server)
    per_run = [_generations(o["calls"], warmup, generations) for o in outs]
    spans = [rows[-1]["end"] - rows[0]["start"] for rows in per_run]
    common = min(rows[-1]["end"] for rows in per_run) - max(rows[0]["start"] for rows in per_run)
    out = {
        "runs": runs, "processes": len({o["pid"] for o in outs}), "user_device": "cpu",
        "timed_generations_per_run": generations, "warmup_generations": warmup,
        **generation_figures([r for rows in per_run for r in rows]),
        "generations_per_s": sum(len(rows) / s for rows, s in zip(per_run, spans)),
        "sequences_per_s": sum(sum(r["sequences"] for r in rows) / s for rows, s in zip(per_run, spans)),
        "overlap": max(0.0, common) / statistics.mean(spans),
    }
    if before.get("batched_passes") is not None:
        passes = after["batched_passes"] - before["batched_passes"]
        requests = after["batched_requests"] - before["batched_requests"]
        out |= {"batched_passes": passes, "batched_requests": requests}
    return out

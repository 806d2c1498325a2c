"""The server pool: model server actors on Ray, by (backbone, weights, precision).

Servers: one per GPU and key, each reserving ``1 / keys`` of a GPU, spread over the nodes (Ray's
SPREAD strategy); where the cluster has no GPU, per key one CPU server for every ``runs_per_server``
of its CPUs, or of the runs the caller has at once where fewer. The precision is bf16 autocast or
fp32 (:meth:`ServerOptions.precision_for`): under the default ``precision: auto`` on a GPU, methods
that need fp32 (CBBT) get fp32 servers and the others bf16 ones. A server that dies is restarted
by Ray (``max_restarts=-1``); its runs prepare their tasks again meanwhile.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any, NamedTuple

from benchmark.errors import UserError
from benchmark.serve.options import ServerOptions
from craft.methods import get_method

SERVER_START_TIMEOUT_S = 1800.0  # GPU nodes of an autoscaling cluster may take minutes to come up


class ServerKey(NamedTuple):
    """What makes two servers interchangeable: the model and the precision it computes in (``bf16`` or ``fp32``)."""

    backbone: str
    weights: str
    precision: str


@dataclass
class ServerPool:
    """Model server actors by :class:`ServerKey`, started with one :class:`ServerOptions`."""

    options: ServerOptions = field(default_factory=ServerOptions)
    gpu: bool = False
    groups: dict[ServerKey, list[Any]] = field(default_factory=dict)

    def key(self, backbone: str, weights: str, method: str) -> ServerKey:
        """The servers a ``method`` run on ``backbone:weights`` needs (its precision from the method's traits)."""
        return ServerKey(backbone, weights, self.options.precision_for(get_method(method).needs_fp32, self.gpu))

    def group(self, backbone: str, weights: str, method: str) -> list[Any]:
        """The servers for a ``method`` run on ``backbone:weights``."""
        return self.groups[self.key(backbone, weights, method)]


def server_count(keys: int, gpus: int, cpus: int = 1, runs_per_server: int = 1,
                 runs_at_once: int | None = None) -> tuple[int, float]:
    """Servers per key and the GPU share of each: one per GPU and key. Without GPUs, enough servers
    per key for a run on each of the ``cpus``, or for ``runs_at_once`` runs where fewer run at once
    (``runs_per_server`` each): a CPU server computes its runs' queries under one interpreter lock,
    so one server for all the CPUs' runs leaves CPUs idle while its runs wait on it."""
    if gpus <= 0:
        slots = cpus if runs_at_once is None else min(cpus, runs_at_once)
        return max(1, -(-slots // max(1, runs_per_server))), 0.0
    return gpus, 1.0 / keys


def start_servers(
    runs: Iterable[tuple[str, str, str]], options: ServerOptions, *, gpus: int | None = None, cache_dir: str | None = None,
    staged: dict[tuple[str, str], Any] | None = None, runs_at_once: int | None = None,
) -> ServerPool:
    """Start the servers that ``runs`` (``(backbone, weights, method)`` each) need, spread over GPUs and
    nodes, each serving ``options``; wait until they answer.

    ``gpus``: the GPUs to place servers on (default: those the cluster has now; more make an
    autoscaling cluster add GPU nodes). ``staged``: (backbone, weights) -> the driver's weights file
    (:func:`benchmark.serve.staging.stage`), which each server loads instead of looking on its node.
    ``runs_at_once``: the most runs the caller has in flight (a search's concurrent trials), which
    caps the CPU servers per key (default: one run per CPU, as a sweep).
    """
    import ray

    from benchmark.serve.server import ModelServer

    resources = ray.cluster_resources()
    gpus = int(resources.get("GPU", 0)) if gpus is None else gpus
    pool = ServerPool(options, gpus > 0)
    keys = sorted({pool.key(*run) for run in runs})
    per_key, share = server_count(len(keys), gpus, int(resources.get("CPU", 1)), options.runs_per_server, runs_at_once)
    actor_cls = ray.remote(ModelServer)
    # Threads: one query and one ping (RemoteBackend's liveness probe) per run, and spare.
    actor_options = dict(num_cpus=0, num_gpus=share, max_concurrency=2 * options.runs_per_server + 2, max_restarts=-1,
                         max_task_retries=0, scheduling_strategy="SPREAD")
    pool.groups.update({key: [] for key in keys})
    for _ in range(per_key):  # interleaved, so that each GPU tends to get one server of each key
        for key in keys:
            pool.groups[key].append(actor_cls.options(**actor_options).remote(
                key.backbone, key.weights, options, key.precision, cache_dir=cache_dir,
                staged=(staged or {}).get((key.backbone, key.weights))))
    for key, group in pool.groups.items():  # fail fast: weights missing, unknown backbone
        try:
            _wait([s.ping.remote() for s in group], f"the model servers of {key.backbone}:{key.weights}")
        except ray.exceptions.RayActorError as exc:
            stop_servers(pool)
            raise UserError(f"the model server for {key.backbone}:{key.weights} could not start: "
                            f"{_last_error_line(exc)}") from None
    return pool


def _last_error_line(exc: Exception) -> str:
    """The original error of a failed actor creation (the last line of its traceback), as one sentence."""
    lines = [ln.strip() for ln in str(getattr(exc, "error_msg", exc)).splitlines() if ln.strip()]
    last = lines[-1] if lines else type(exc).__name__
    return last.removeprefix("benchmark.errors.UserError: ")[:500]


def stop_servers(servers: ServerPool) -> None:
    """Kill the server actors and free their GPUs."""
    import ray

    for group in servers.groups.values():
        for handle in group:
            ray.kill(handle)


def _wait(refs: Any, what: str) -> Any:
    import ray

    try:
        return ray.get(refs, timeout=SERVER_START_TIMEOUT_S)
    except ray.exceptions.GetTimeoutError:
        raise UserError(f"waited {SERVER_START_TIMEOUT_S:.0f} s for {what}; the cluster cannot place them") from None

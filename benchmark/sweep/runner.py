"""Running cells on Ray: model server actors hold the model, CPU-only tasks run the methods.

Servers: one per GPU and (backbone, weights, arithmetic), each reserving ``1 / keys`` of a GPU,
spread over the nodes (Ray's SPREAD strategy; one CPU server per backbone where the cluster has
no GPU). The arithmetic is bf16 autocast or fp32 (:func:`arithmetic`): on a GPU under the default
``precision: auto``, CBBT's runs get fp32 servers and the other methods bf16 ones. A run reserves
one CPU and no GPU: the GPU is counted once, by its server (Ray would leave runs pending forever
if both reserved it). Each server takes ``runs_per_server`` runs at once.

Faults: a run whose process or node dies is run again by Ray (``max_retries``); a server that
dies is restarted by Ray (``max_restarts=-1``) and its runs prepare their tasks again
(features from the disk cache), or move to another server of their backbone meanwhile. The
driver writes each finished cell (log, then results) atomically, so a killed driver loses only
the cells in flight, and the same command run again does only what is missing.
"""

from __future__ import annotations

import contextlib
import json
import os
import socket
import sys
import time
import traceback
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

from benchmark.errors import UserError
from benchmark.model.feature_keys import FINGERPRINT_ENV
from benchmark.results.store import (
    parse_cell_file, check_location, check_writable, clean_temporaries, lock_results, move_aside, scan_cells, write_cell, write_log,
)
from benchmark.sweep.cell import Cell

WORKER_ENV = {"OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "OPENBLAS_NUM_THREADS": "1", "TOKENIZERS_PARALLELISM": "false"}
RUN_RETRIES = 3  # re-runs of a cell whose process or node died
SERVER_START_TIMEOUT_S = 1800.0  # GPU nodes of an autoscaling cluster may take minutes to come up


FP32_METHODS = frozenset({"cbbt"})  # difference prompts 0.001-0.02 apart: bf16 rounding swamps that


def arithmetic(method: str, precision: str, gpu: bool) -> str:
    """What a ``method`` run's server computes in: fp32 on CPUs; on GPUs the sweep's
    ``precision``, where ``auto`` is bf16 except for :data:`FP32_METHODS`. On ViT-B-16, bf16
    autocast took the cosine of CBBT's gradient estimate with the true gradient from 0.57 to 0.11
    (``python -m measurement.cbbt_precision --backbone ViT-B-16``)."""
    if not gpu:
        return "fp32"
    if precision == "auto":
        return "fp32" if method in FP32_METHODS else "bf16"
    return precision


@dataclass
class ServerPool:
    """Model server actors by (backbone, weights, arithmetic), and which of them serve a cell."""

    groups: dict[tuple[str, str, str], list[Any]]
    precision: str = "auto"
    gpu: bool = False

    def key(self, cell: Cell) -> tuple[str, str, str]:
        return (cell.backbone, cell.weights, arithmetic(cell.method, self.precision, self.gpu))

    def group(self, cell: Cell) -> list[Any]:
        """The servers for ``cell``: its backbone and weights, in its arithmetic."""
        return self.groups[self.key(cell)]


@dataclass
class SweepSummary:
    done: int = 0
    failed: int = 0
    skipped: int = 0
    queries: int = 0
    wall_s: float = 0.0
    failures: list[str] = field(default_factory=list)
    moved_aside: list[str] = field(default_factory=list)  # "path: why" of damaged files whose cells ran again


# ----------------------------------------------------------------------------- Ray


def _probe(address: str) -> None:
    """UserError unless something listens at ``host:port`` (ray.init would retry for minutes)."""
    if address in ("auto", "local"):
        return
    hostport = address.split("://", 1)[-1].rstrip("/")
    host, _, port = hostport.rpartition(":")
    if not host or not port.isdigit():
        raise UserError(f"Ray address {address!r} is not host:port (e.g. 10.0.0.5:6379) or ray://host:10001")
    try:
        with socket.create_connection((host, int(port)), timeout=5):
            pass
    except OSError as exc:
        raise UserError(
            f"no Ray cluster answers at {address} ({exc.strerror or exc}); start one (ray start --head, or ray up "
            "cluster.yaml), fix --address / RAY_ADDRESS, or leave both unset to run on this machine"
        ) from None


def _runtime_env() -> dict[str, Any]:
    """Worker environment variables, minus any a submitted job already sets (Ray refuses a conflict)."""
    from ray._private.runtime_env.constants import RAY_JOB_CONFIG_JSON_ENV_VAR

    job_env = {}
    if RAY_JOB_CONFIG_JSON_ENV_VAR in os.environ:
        job = json.loads(os.environ[RAY_JOB_CONFIG_JSON_ENV_VAR])
        job_env = (job.get("runtime_env") or {}).get("env_vars") or {}
    env = dict(WORKER_ENV)
    if os.environ.get(FINGERPRINT_ENV):  # the driver's choice of feature-cache keys holds on every node
        env[FINGERPRINT_ENV] = os.environ[FINGERPRINT_ENV]
    return {"env_vars": {k: v for k, v in env.items() if k not in job_env}}


def init_ray(
    address: str | None = None, num_cpus: int | None = None, num_gpus: int | None = None, *, dashboard: bool = False
) -> None:
    """Connect to ``address`` (or ``RAY_ADDRESS``), else start a local runtime with explicit resources.

    A local runtime keeps Ray's defaults for safety: token authentication on, and its dashboard
    (only with ``dashboard=True``) bound to 127.0.0.1.
    """
    import ray

    if ray.is_initialized():
        return
    address = address or os.environ.get("RAY_ADDRESS")
    try:
        if address:
            _probe(address)
            ray.init(address=address, runtime_env=_runtime_env(), log_to_driver=False)
        else:
            with _loopback_only():
                ray.init(
                    num_cpus=num_cpus or os.cpu_count() or 1, num_gpus=num_gpus, include_dashboard=dashboard,
                    dashboard_host="127.0.0.1", runtime_env=_runtime_env(), log_to_driver=False,
                )
            protect_auth_token()
            _reap_with_this_process()
    except UserError:
        raise
    except Exception as exc:  # noqa: BLE001 - Ray raises bare Exception (e.g. a raylet killed by a memory limit), OSError, ...
        try:  # whatever half-started is ended with us
            ray.shutdown()
        except Exception:  # noqa: BLE001 - already failing; the error below is the one to show
            pass
        where = f"the Ray cluster at {address}" if address else "a local Ray runtime"
        hint = ("; a cluster with token authentication needs RAY_AUTH_MODE=token and its token here "
                "(~/.ray/auth_token, RAY_AUTH_TOKEN or RAY_AUTH_TOKEN_PATH)") if address else ""
        verb = "connect to" if address else "start"
        hint = hint or ("; check free memory (a memory limit kills Ray's processes), free space and permissions under "
                        f"{os.environ.get('RAY_TMPDIR', '/tmp')}, or give fewer --num-cpus")
        raise UserError(f"could not {verb} {where}: {type(exc).__name__}: {' '.join(str(exc).split())[:300]}{hint}") from None


@contextlib.contextmanager
def _loopback_only() -> Iterator[None]:
    """Start a local runtime whose every server (GCS, raylet, agents, metrics) listens on loopback only.

    Ray takes the node's address from the network unless its ``RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER`` switch
    says this node is no cluster; then it uses 127.0.0.1 and binds nothing on other interfaces. The switch
    is read once at import in the driver (hence the constant) and by every process Ray starts (hence the
    environment); both are restored after start, so a later connection to a cluster is unaffected.
    """
    from ray._private import ray_constants

    name = ray_constants.ENABLE_RAY_CLUSTERS_ENV_VAR
    saved_env, saved_flag = os.environ.get(name), ray_constants.ENABLE_RAY_CLUSTER
    os.environ[name], ray_constants.ENABLE_RAY_CLUSTER = "0", False
    try:
        yield
    finally:
        ray_constants.ENABLE_RAY_CLUSTER = saved_flag
        if saved_env is None:
            os.environ.pop(name, None)
        else:
            os.environ[name] = saved_env


def _reap_with_this_process() -> None:
    """Start the watcher that ends this local runtime's processes when this process ends (:mod:`benchmark.serve.ray_reaper`)."""
    from ray._private import worker

    from benchmark.serve import ray_reaper

    node = worker._global_node
    if node is not None and sys.platform.startswith("linux"):
        import ray

        ray_reaper.start(node.get_session_dir_path(), os.path.dirname(os.path.abspath(ray.__file__)))


def protect_auth_token() -> str | None:
    """Make Ray's token file readable by its owner only (Ray writes ``~/.ray/auth_token`` 0644); return its path.

    The token authenticates every client of the local runtime: another user who reads it may run code here.
    """
    path = os.environ.get("RAY_AUTH_TOKEN_PATH") or os.path.expanduser("~/.ray/auth_token")
    try:
        info = os.stat(path)
        if info.st_uid == os.getuid() and info.st_mode & 0o077:
            os.chmod(path, 0o600)
    except OSError:  # no token file (authentication off, or the token given in RAY_AUTH_TOKEN)
        return None
    return path


def server_count(keys: int, gpus: int) -> tuple[int, float]:
    """Servers per key (backbone, weights, arithmetic) and the GPU share of each: one per GPU and key."""
    if gpus <= 0:
        return 1, 0.0
    return gpus, 1.0 / keys


def start_servers(
    cells: list[Cell],
    runs_per_server: int,
    mode: str = "fast",
    cache_dir: str | None = None,
    *,
    gpus: int | None = None,
    batching: bool | None = None,
    precision: str = "auto",
    compile: bool | str = False,
    attention: str = "auto",
) -> ServerPool:
    """Start the servers that ``cells`` need, spread over GPUs and nodes; wait until they answer.

    ``gpus``: the GPUs to place servers on (default: those the cluster has now; more make an
    autoscaling cluster add GPU nodes); ``precision``: the sweep's (``auto``, ``bf16``, ``fp32``;
    see :func:`arithmetic`); ``compile``: the servers' text tower under ``torch.compile``;
    ``attention``: the kernel its attention is held to (``ClipEngine(attention=...)``).
    """
    import ray

    from benchmark.serve.server import ModelServer

    gpus = int(ray.cluster_resources().get("GPU", 0)) if gpus is None else gpus
    pool = ServerPool({}, precision, gpus > 0)
    keys = sorted({pool.key(c) for c in cells})
    per_key, share = server_count(len(keys), gpus)
    actor_cls = ray.remote(ModelServer)
    # Threads: one query and one ping (RemoteBackend's liveness probe) per run, and spare.
    options = dict(num_cpus=0, num_gpus=share, max_concurrency=2 * runs_per_server + 2, max_restarts=-1,
                   max_task_retries=0, scheduling_strategy="SPREAD")
    pool.groups.update({key: [] for key in keys})
    for _ in range(per_key):  # interleaved, so that each GPU tends to get one server of each key
        for backbone, weights, arith in keys:
            pool.groups[(backbone, weights, arith)].append(
                actor_cls.options(**options).remote(
                    backbone, weights, mode=mode, compile=compile, cache_dir=cache_dir, batching=batching,
                    precision=arith, attention=attention,
                )
            )
    for (backbone, weights, _), group in pool.groups.items():  # fail fast: weights missing, unknown backbone
        try:
            _wait([s.ping.remote() for s in group], f"the model servers of {backbone}:{weights}")
        except ray.exceptions.RayActorError as exc:
            stop_servers(pool)
            raise UserError(f"the model server for {backbone}:{weights} could not start: {_last_error_line(exc)}") from None
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


# ----------------------------------------------------------------------------- one cell, on a worker


def _run_cell_task(cell: Cell, servers: list[Any], eval_test: bool, colocate: bool = False) -> dict[str, Any]:
    """Run one cell; return its rows and its log. A Python error is a failed cell, not a lost one."""
    from benchmark.sweep.run_cell import failed_row, run_cell

    lines: list[str] = []

    def log(text: str) -> None:
        lines.append(f"{time.strftime('%Y-%m-%d %H:%M:%S')} {text}")

    def on_eval(row: dict[str, float]) -> None:
        log("eval " + " ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}" for k, v in row.items()))

    log(f"cell {cell.label()} id {cell.cell_id} on {socket.gethostname()} pid {os.getpid()}")
    log(f"hparams {json.dumps(cell.full_hparams(), sort_keys=True)} budget {cell.budget()}")
    start = time.perf_counter()
    try:
        rows = run_cell(cell, servers, eval_test, on_eval=on_eval, colocate=colocate)
        r = rows[0]
        log(f"done in {time.perf_counter() - start:.1f} s: top1_val={r['top1_val']} top1_test={r['top1_test']} "
            f"queries={r['queries']} model_calls={r['model_calls']} gpu_s={r['gpu_s']}")
    except Exception:  # noqa: BLE001 - recorded in the cell's failure row and log
        tb = traceback.format_exc()
        log(f"failed after {time.perf_counter() - start:.1f} s:\n{tb}")
        rows = [failed_row(cell, tb)]
    return {"rows": rows, "log": "\n".join(lines) + "\n"}


# ----------------------------------------------------------------------------- the sweep


def pending_cells(cells: list[Cell], out: str, rerun_failed: bool) -> tuple[list[Cell], int]:
    """The cells still to run under ``out`` and the number skipped (done, or failed unless rerun).

    A cell whose result file is damaged (:func:`benchmark.results.store.verify_file`) is to run.
    """
    return _pending(cells, scan_cells(out)[0], rerun_failed)


def _pending(cells: list[Cell], status: dict[str, str], rerun_failed: bool) -> tuple[list[Cell], int]:
    todo = [c for c in cells if status.get(c.cell_id) != "ok" and (rerun_failed or status.get(c.cell_id) != "failed")]
    return todo, len(cells) - len(todo)


def _damaged_of(todo: list[Cell], damaged: dict[str, str]) -> dict[str, str]:
    """The damaged files (path -> why) that belong to cells about to run (other sweeps' files are left alone)."""
    ids = {c.cell_id for c in todo}
    return {p: why for p, why in damaged.items() if (parse_cell_file(p.rsplit("/", 1)[-1]) or ("",))[0] in ids}


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
    gpus: int | None = None,
    batching: bool | None = None,
    dashboard: bool = False,
    precision: str = "auto",
    colocate: bool = False,
    compile: bool | str = False,
    attention: str = "auto",
) -> SweepSummary:
    """Run every cell not yet done under ``out``; write each (log and rows) as it finishes.

    ``colocate``: CraFT and BBT runs execute in their model server's process, their logits on its
    device (:mod:`benchmark.serve.colocate`); their run task only waits. ``compile``: the model servers
    run their text tower under ``torch.compile``; ``attention``: with that attention kernel.
    """
    import ray

    summary = SweepSummary()
    start = time.perf_counter()
    check_location(out)
    with lock_results(out):  # one driver per results folder: the scan below and the writes are ours
        clean_temporaries(out)  # first, even when nothing is left to run: what dead writers left
        status, damaged = scan_cells(out)
        todo, summary.skipped = _pending(cells, status, rerun_failed)
        damaged = _damaged_of(todo, damaged)
        if not todo:
            summary.wall_s = time.perf_counter() - start
            return summary

        init_ray(address, num_cpus, dashboard=dashboard)
        servers = start_servers(todo, runs_per_server, cache_dir=cache_dir, gpus=gpus, batching=batching,
                                precision=precision, compile=compile, attention=attention)
        try:  # nothing is written before the servers are up
            check_writable(out)
            # Kept beside their cells under a name nothing reads; the rerun's result takes their place.
            moved = move_aside(out, list(damaged))
            summary.moved_aside = [f"{old} -> {new} ({damaged[old]})" for old, new in moved.items()]
        except BaseException:
            stop_servers(servers)
            raise
        remote_run = ray.remote(num_cpus=1, num_gpus=0, max_retries=RUN_RETRIES, retry_exceptions=False)(_run_cell_task)
        display = Progress(len(todo), progress)
        load: dict[tuple[str, str, str], list[int]] = {k: [0] * len(g) for k, g in servers.groups.items()}
        pending: dict[Any, tuple[Cell, tuple[str, str, str], int]] = {}
        queue = list(todo)
        try:
            while queue or pending:
                slots = run_slots() - len(pending)
                queue = _submit(queue, pending, servers, load, runs_per_server, remote_run, eval_test, slots, colocate)
                ready, _ = ray.wait(list(pending), num_returns=1, timeout=2.0)
                for ref in ready:
                    cell, key, idx = pending.pop(ref)
                    load[key][idx] -= 1
                    rows, log_text = _collect(ref, cell)
                    write_log(out, cell.method, cell.dataset, cell.cell_id, log_text)
                    write_cell(out, rows)
                    ok = rows[0]["status"] == "ok"
                    if ok:
                        summary.done += 1
                        summary.queries += int(rows[0]["queries"] or 0)
                    else:
                        summary.failed += 1
                        summary.failures.append(f"{cell.label()}: {rows[0]['error'].strip().splitlines()[-1]}")
                    display.finished(cell, ok, summary, len(pending), time.perf_counter() - start)
                display.tick(summary, len(pending), time.perf_counter() - start)
        finally:
            display.close()
            stop_servers(servers)
        summary.wall_s = time.perf_counter() - start
        return summary


def run_slots() -> int:
    """How many runs may be in flight: the cluster's CPUs (now: an autoscaling cluster grows).

    A run reserves one CPU, but Ray lends a task's CPU to other tasks while it blocks in
    ``ray.get``, which a run does at every query, so Ray alone would start every queued run
    at once. More runs than CPUs only time-slice them: on 2 cores, 12 cells took 111 s with 4
    in flight and 80-94 s with 2 (``craft bench``, runs_per_server 4 and 2).
    """
    import ray

    return max(1, int(ray.cluster_resources().get("CPU", 1)))


def _submit(queue, pending, servers: ServerPool, load, runs_per_server, remote_run, eval_test, slots: int,
            colocate: bool = False) -> list[Cell]:
    """Start queued cells on the least-loaded of their servers while one has room (at most ``slots``)."""
    left = []
    for cell in queue:
        if slots <= 0:
            left.append(cell)
            continue
        key = servers.key(cell)
        idx = min(range(len(load[key])), key=lambda i: load[key][i])
        if load[key][idx] >= runs_per_server:
            left.append(cell)
            continue
        group = servers.groups[key]
        ordered = group[idx:] + group[:idx]  # its chosen server first, the others to fail over to
        pending[remote_run.remote(cell, ordered, eval_test, colocate)] = (cell, key, idx)
        load[key][idx] += 1
        slots -= 1
    return left


def _collect(ref: Any, cell: Cell) -> tuple[list[dict[str, Any]], str]:
    """A finished task's rows and log; a task that died more often than retried is a failed cell."""
    import ray

    from benchmark.sweep.run_cell import failed_row

    try:
        result = ray.get(ref)
        return result["rows"], result["log"]
    except Exception as exc:  # noqa: BLE001 - worker or node lost RUN_RETRIES + 1 times
        error = f"{type(exc).__name__}: {exc}"
        text = f"{time.strftime('%Y-%m-%d %H:%M:%S')} cell {cell.label()} id {cell.cell_id} lost after {RUN_RETRIES} retries:\n{error}\n"
        return [failed_row(cell, error)], text


class Progress:
    """Cells done, running and failed, queries per second and an ETA: a bar on a terminal, lines in a log."""

    def __init__(self, total: int, enabled: bool) -> None:
        self.total, self.enabled = total, enabled
        self.bar = None
        self._last_line = 0.0
        if enabled and sys.stderr.isatty():
            from tqdm import tqdm

            self.bar = tqdm(total=total, unit="cell", desc="cells", dynamic_ncols=True)

    def _status(self, s: SweepSummary, running: int, elapsed: float) -> str:
        finished = s.done + s.failed
        eta = (self.total - finished) * elapsed / finished if finished else float("nan")
        eta_text = "?" if eta != eta else f"{int(eta // 60)}m{int(eta % 60):02d}s"
        return f"{finished}/{self.total} done ({s.failed} failed), {running} running, {s.queries / max(elapsed, 1e-9):.0f} queries/s, ETA {eta_text}"

    def finished(self, cell: Cell, ok: bool, s: SweepSummary, running: int, elapsed: float) -> None:
        if not self.enabled:
            return
        if self.bar is not None:
            self.bar.update(1)
            self.bar.set_postfix(running=running, failed=s.failed, qps=f"{s.queries / max(elapsed, 1e-9):.0f}")
        else:
            print(f"{'ok' if ok else 'FAILED'} {cell.label()}; {self._status(s, running, elapsed)}", file=sys.stderr, flush=True)

    def tick(self, s: SweepSummary, running: int, elapsed: float) -> None:
        if self.bar is not None:
            self.bar.set_postfix(running=running, failed=s.failed, qps=f"{s.queries / max(elapsed, 1e-9):.0f}")

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()

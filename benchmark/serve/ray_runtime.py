"""The Ray runtime a command runs on: a cluster at an address, or a local one started safely.

A local runtime keeps token authentication on, listens on loopback only, makes its token file
private and ends with the process that started it (:mod:`benchmark.serve.ray_reaper`). Workers get
one BLAS thread each (:data:`WORKER_ENV`) and the driver's feature-cache key choice.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import sys
import threading
from collections.abc import Iterator
from typing import Any

from benchmark.errors import UserError, raise_terminated
from benchmark.model.feature_keys import FINGERPRINT_ENV

# Variables the driver passes on to every worker when set: its feature-cache key choice and its code version.
PASSED_ENV = (FINGERPRINT_ENV, "CRAFT_CODE_VERSION")
WORKER_ENV = {"OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "OPENBLAS_NUM_THREADS": "1", "TOKENIZERS_PARALLELISM": "false"}


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
    for name in PASSED_ENV:  # the driver's choices (feature-cache keys, its commit) hold on every node
        if os.environ.get(name):
            env[name] = os.environ[name]
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
                ray.init(  # "local": a new runtime, even where `ray start` left a cluster on this machine
                    address="local", num_cpus=num_cpus or os.cpu_count() or 1, num_gpus=num_gpus, include_dashboard=dashboard,
                    dashboard_host="127.0.0.1", runtime_env=_runtime_env(), log_to_driver=False,
                )
            protect_auth_token()
            _reap_with_this_process()
        if threading.current_thread() is threading.main_thread():
            # Ray's driver handler exits from wherever the main thread is, native calls included, and
            # the process then aborts with a stack dump: stop as Ctrl-C stops instead.
            signal.signal(signal.SIGTERM, raise_terminated)
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

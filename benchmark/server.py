"""The model server: one copy of the black-box model that serves many runs.

``ModelServer`` is a plain class (usable in-process); ``benchmark.sweep`` wraps it as a Ray
actor with several concurrent callers (threads). The server prepares each run's image
features (through the disk cache) and answers its queries; runs hold a
:class:`RemoteBackend` and see logits and output features only; white-box references
(CoOp) are trained here, beside the model (``run_whitebox``).

Each ``prepare`` hands out a lease on the task (runs of one task share its features; the task
is dropped when its last lease is released) and the server's busy time is counted per lease.
On a GPU, concurrent ``logits`` calls are merged into one text-tower pass
(:mod:`benchmark.batching`). A :class:`RemoteBackend` given several servers moves to another
when its server dies or is restarting, and prepares its task again wherever it lands.
"""

from __future__ import annotations

import itertools
import os
import threading
import time
import uuid
from collections import defaultdict
from dataclasses import asdict
from typing import Any, Sequence

import numpy as np
import torch

from benchmark.batching import QueryBatcher
from benchmark.engine import ClipEngine, EngineBackend
from benchmark.features import FeatureCache
from benchmark.models import load_model
from benchmark.task import PreparedTask, TaskSpec, prepare_task
from craft.blackbox import BackendInfo, OutputFeatures


class UnknownTask(KeyError):
    """The server does not hold this task (it was restarted): prepare it again."""


class ServerLost(RuntimeError):
    """A server stopped answering (dead, or waiting to be placed again): try another."""


def task_id(spec: TaskSpec) -> str:
    return repr(sorted(asdict(spec).items()))


class ModelServer:
    """Holds a :class:`ClipEngine`; prepares tasks and answers their queries."""

    def __init__(
        self,
        backbone: str,
        weights: str,
        mode: str = "fast",
        compile: bool = False,
        cache_dir: str | None = None,
        device: str | None = None,
        batching: bool | None = None,
    ) -> None:
        """``batching``: merge concurrent callers' queries (None: on a GPU only, where it pays)."""
        device = device or ("cuda" if torch.cuda.is_available() else "cpu")
        self.engine = ClipEngine(load_model(backbone, weights, device), device, mode=mode, compile=compile)
        self.cache = FeatureCache(cache_dir) if cache_dir != "" else None
        if batching is None:
            batching = self.engine.device.type == "cuda"
        self._batcher = QueryBatcher(self.engine) if batching and mode == "fast" else None
        self._tasks: dict[str, tuple[EngineBackend, PreparedTask]] = {}
        self._leases: dict[str, str] = {}  # lease -> task id
        self._lease_numbers = itertools.count()
        self._instance = uuid.uuid4().hex[:8]  # a restarted server hands out new leases, never an old one
        self._prepare_lock = threading.Lock()
        self._busy_s: dict[str, float] = defaultdict(float)
        self._served = 0

    def ping(self) -> dict[str, Any]:
        batcher = self._batcher
        return {
            "backbone": self.engine.loaded.backbone, "device": str(self.engine.device), "tasks": len(self._tasks),
            "pid": os.getpid(), "served": self._served,
            "batched_passes": batcher.passes if batcher else None, "batched_requests": batcher.requests if batcher else None,
        }

    def prepare(self, spec: TaskSpec) -> dict[str, Any]:
        """Encode the task's images (or read them from the cache); return what the run needs.

        ``task_id`` in the answer is a lease: pass it to every call, and to :meth:`release`.
        """
        tid = task_id(spec)
        with self._prepare_lock:
            if tid not in self._tasks:
                prepared = prepare_task(self.engine, spec, self.cache)
                self._tasks[tid] = (EngineBackend(self.engine, prepared.data), prepared)
                fresh = prepared.images_encoded
            else:
                fresh = 0
            lease = f"{self._instance}-{next(self._lease_numbers)}:{tid}"
            self._leases[lease] = tid
        backend, prepared = self._tasks[tid]
        return {
            "task_id": lease,
            "info": backend.info(),
            "classnames": prepared.data.classnames,
            "template": prepared.data.template,
            "labels": {k: v.numpy() for k, v in prepared.labels.items()},
            "class_subsets": prepared.class_subsets,
            "images_encoded": fresh,
        }

    def _entry(self, lease: str) -> tuple[EngineBackend, PreparedTask]:
        try:
            return self._tasks[self._leases[lease]]
        except KeyError:
            raise UnknownTask(lease) from None

    def _backend(self, tid: str) -> EngineBackend:
        return self._entry(tid)[0]

    def _timed(self, tid: str, fn, *args) -> tuple[np.ndarray, int]:
        start = time.perf_counter()
        out, n = fn(*args)
        self._busy_s[tid] += time.perf_counter() - start
        self._served += 1
        return out.numpy(), n

    def logits(self, tid: str, contexts: np.ndarray, split: str, indices: np.ndarray | None) -> tuple[np.ndarray, int]:
        idx = None if indices is None else torch.as_tensor(indices)
        backend = self._backend(tid)
        if self._batcher is not None:
            out, share_s = self._batcher.logits(backend, torch.as_tensor(contexts), split, idx)
            self._busy_s[tid] += share_s
            self._served += 1
            return out.numpy(), 0
        return self._timed(tid, backend.logits, torch.as_tensor(contexts), split, idx)

    def template_logits(self, tid: str, template: str, split: str) -> tuple[np.ndarray, int]:
        return self._timed(tid, self._backend(tid).template_logits, template, split)

    def features(
        self, tid: str, contexts: np.ndarray, split: str, indices: np.ndarray | None
    ) -> tuple[tuple[np.ndarray, np.ndarray, float], int]:
        """Output features (text, image, logit scale) of prompt contexts, as numpy, and images encoded."""
        backend = self._backend(tid)
        idx = None if indices is None else torch.as_tensor(indices)
        start = time.perf_counter()
        out, n = backend.features(torch.as_tensor(contexts), split, idx)
        self._busy_s[tid] += time.perf_counter() - start
        self._served += 1
        return (out.text.numpy(), out.image.numpy(), out.logit_scale), n

    def run_whitebox(
        self, tid: str, method: str, hparams: dict[str, Any], seed: int, shots: int, dataset: str,
        eval_splits: tuple[str, ...],
    ) -> dict[str, Any]:
        """Train a white-box reference (CoOp) on this server's model; see :mod:`benchmark.whitebox`."""
        from benchmark.whitebox import run_whitebox

        prepared = self._entry(tid)[1]  # UnknownTask if the server lost it
        start = time.perf_counter()
        out = run_whitebox(self.engine, prepared, method, hparams, seed, shots=shots, dataset=dataset, eval_splits=tuple(eval_splits))
        self._busy_s[tid] += time.perf_counter() - start
        return out

    def embed_words(self, text: str) -> np.ndarray:
        return self.engine.embed_words(text).numpy()

    def release(self, tid: str) -> dict[str, float]:
        """End a lease (the task is forgotten with its last lease); return the lease's server-side cost."""
        with self._prepare_lock:
            task = self._leases.pop(tid, None)
            if task is not None and task not in self._leases.values():
                self._tasks.pop(task, None)
        peak = torch.cuda.max_memory_allocated() / 2**20 if self.engine.device.type == "cuda" else None
        return {"gpu_s": self._busy_s.pop(tid, 0.0), "peak_mem_mb": peak}


class RemoteBackend:
    """:class:`craft.blackbox.Backend` over a model server (a Ray actor handle or a local object).

    If the server was restarted and lost the task, the task is prepared again (features come
    back from the disk cache) and the call is repeated. Given several servers (Ray actor handles
    of one backbone, the first one preferred), a call whose server died, is restarting, or stops
    answering pings goes to the next one; when none answers it waits (1, 2, 4 ... 15 s) for a
    restart, for at most ``max_wait_s``. Queries are pure functions of their arguments, so a
    repeated call changes no result, and the meter counts only calls that returned.
    """

    probe_every_s = 5.0  # a call pending this long makes the run ping its server
    ping_timeout_s = 20.0  # a server that does not answer a ping this long is given up on

    def __init__(self, server: Any | Sequence[Any], spec: TaskSpec, *, max_wait_s: float = 900.0) -> None:
        self.servers = list(server) if isinstance(server, (list, tuple)) else [server]
        self._current = 0
        self.max_wait_s = max_wait_s
        self.failovers = 0
        self._abandoned: list[tuple[Any, str]] = []  # (server, lease) left on a server given up on
        self.spec = spec
        self.prepared = self._call("prepare", spec)
        self.images_encoded = int(self.prepared["images_encoded"])

    @property
    def server(self) -> Any:
        return self.servers[self._current]

    def _call(self, name: str, *args):
        method = getattr(self.server, name)
        if not hasattr(method, "remote"):
            return method(*args)
        from ray.exceptions import ActorUnschedulableError, RayActorError

        first_failure, pause, tried = None, 1.0, 0
        while True:
            try:
                return self._get(getattr(self.server, name).remote(*args))
            except (RayActorError, ActorUnschedulableError, ServerLost) as exc:
                if name != "prepare" and "task_id" in getattr(self, "prepared", {}):
                    self._abandoned.append((self.server, self.prepared["task_id"]))
                first_failure = first_failure or time.monotonic()
                tried += 1
                self._current = (self._current + 1) % len(self.servers)
                self.failovers += 1
                if tried % len(self.servers) == 0:  # every server failed once: wait for a restart
                    if time.monotonic() - first_failure >= self.max_wait_s:
                        raise RuntimeError(
                            f"no model server answered for {self.max_wait_s:.0f} s ({len(self.servers)} tried): {exc}"
                        ) from exc
                    time.sleep(pause)
                    pause = min(2 * pause, 15.0)
                if name in ("logits", "template_logits", "features", "run_whitebox", "release"):
                    raise UnknownTask("moved to another server") from exc  # prepare there, then repeat

    def _get(self, ref: Any) -> Any:
        """The call's result; ServerLost if, while waiting, the server stops answering pings.

        A call to a server that died and cannot be placed again (its node gone, or killed for
        memory as it restarts) may wait forever in Ray's queue; a ping answers at once on a live
        server (it has spare threads), so a silent one is given up on.
        """
        import ray
        from ray.exceptions import GetTimeoutError, RayActorError

        while True:
            ready, _ = ray.wait([ref], timeout=self.probe_every_s)
            if ready:
                return ray.get(ref)
            try:
                ray.get(self.server.ping.remote(), timeout=self.ping_timeout_s)
            except (GetTimeoutError, RayActorError) as exc:
                ready, _ = ray.wait([ref], timeout=0)
                if ready:
                    return ray.get(ref)
                if isinstance(exc, RayActorError) or len(self.servers) > 1:  # a lone slow server: keep waiting
                    raise ServerLost(f"model server lost or silent for {self.ping_timeout_s:.0f} s: {exc}") from exc

    def _task_call(self, name: str, *args):
        """Call a per-task server method; prepare the task again if its server lost it (or was left)."""
        for attempt in itertools.count():
            try:
                return self._call(name, self.prepared["task_id"], *args)
            except Exception as exc:  # a Ray error wraps the server's UnknownTask
                if "UnknownTask" not in f"{type(exc).__name__} {exc}" or attempt >= 2 * len(self.servers) + 8:
                    raise
                self.prepared = self._call("prepare", self.spec)
                self.images_encoded += int(self.prepared["images_encoded"])

    def _query(self, name: str, *args) -> tuple[torch.Tensor, int]:
        out, n = self._task_call(name, *args)
        return torch.from_numpy(np.asarray(out)), n

    def info(self) -> BackendInfo:
        return self.prepared["info"]

    def embed_words(self, text: str) -> torch.Tensor:
        return torch.from_numpy(np.asarray(self._call("embed_words", text)))

    def logits(self, contexts: torch.Tensor, split: str, indices: torch.Tensor | None = None) -> tuple[torch.Tensor, int]:
        idx = None if indices is None else indices.numpy()
        return self._query("logits", contexts.detach().cpu().numpy(), split, idx)

    def template_logits(self, template: str, split: str) -> tuple[torch.Tensor, int]:
        return self._query("template_logits", template, split)

    def features(self, contexts: torch.Tensor, split: str, indices: torch.Tensor | None = None) -> tuple[OutputFeatures, int]:
        idx = None if indices is None else indices.numpy()
        (text, image, scale), n = self._task_call("features", contexts.detach().cpu().numpy(), split, idx)
        return OutputFeatures(torch.from_numpy(np.asarray(text)), torch.from_numpy(np.asarray(image)), float(scale)), n

    def run_whitebox(self, method: str, hparams: dict[str, Any], seed: int, eval_splits: tuple[str, ...]) -> dict[str, Any]:
        """Have the server train a white-box reference on this task (the model never leaves it)."""
        return self._task_call("run_whitebox", method, hparams, seed, self.spec.shots, self.spec.dataset, tuple(eval_splits))

    def release(self) -> dict[str, float]:
        for server, lease in self._abandoned:  # best effort: a live server given up on keeps no lease
            try:
                server.release.remote(lease)
            except Exception:  # noqa: BLE001 - the server may be gone for good
                pass
        try:
            return self._call("release", self.prepared["task_id"])
        except UnknownTask:  # moved servers at the very end: nothing is held on the new one
            return {"gpu_s": 0.0, "peak_mem_mb": None}

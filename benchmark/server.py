"""The model server: one copy of the black-box model that serves many runs.

``ModelServer`` is a plain class (usable in-process); ``benchmark.sweep`` wraps it as a Ray
actor with several concurrent callers (threads). The server prepares each run's image
features (through the disk cache) and answers its queries; runs hold a
:class:`RemoteBackend` and see logits only.
"""

from __future__ import annotations

import threading
import time
from collections import defaultdict
from dataclasses import asdict
from typing import Any

import numpy as np
import torch

from benchmark.engine import ClipEngine, EngineBackend
from benchmark.features import FeatureCache
from benchmark.models import load_model
from benchmark.task import PreparedTask, TaskSpec, prepare_task
from craft.blackbox import BackendInfo


class UnknownTask(KeyError):
    """The server does not hold this task (it was restarted): prepare it again."""


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
    ) -> None:
        device = device or ("cuda" if torch.cuda.is_available() else "cpu")
        self.engine = ClipEngine(load_model(backbone, weights, device), device, mode=mode, compile=compile)
        self.cache = FeatureCache(cache_dir) if cache_dir != "" else None
        self._tasks: dict[str, tuple[EngineBackend, PreparedTask]] = {}
        self._prepare_lock = threading.Lock()
        self._busy_s: dict[str, float] = defaultdict(float)
        self._served = 0

    def ping(self) -> dict[str, Any]:
        return {"backbone": self.engine.loaded.backbone, "device": str(self.engine.device), "tasks": len(self._tasks)}

    def prepare(self, spec: TaskSpec) -> dict[str, Any]:
        """Encode the task's images (or read them from the cache); return what the run needs."""
        tid = task_id(spec)
        with self._prepare_lock:
            if tid not in self._tasks:
                prepared = prepare_task(self.engine, spec, self.cache)
                self._tasks[tid] = (EngineBackend(self.engine, prepared.data), prepared)
                fresh = prepared.images_encoded
            else:
                fresh = 0
        backend, prepared = self._tasks[tid]
        return {
            "task_id": tid,
            "info": backend.info(),
            "classnames": prepared.data.classnames,
            "template": prepared.data.template,
            "labels": {k: v.numpy() for k, v in prepared.labels.items()},
            "class_subsets": prepared.class_subsets,
            "images_encoded": fresh,
        }

    def _backend(self, tid: str) -> EngineBackend:
        try:
            return self._tasks[tid][0]
        except KeyError:
            raise UnknownTask(tid) from None

    def _timed(self, tid: str, fn, *args) -> tuple[np.ndarray, int]:
        start = time.perf_counter()
        out, n = fn(*args)
        self._busy_s[tid] += time.perf_counter() - start
        self._served += 1
        return out.numpy(), n

    def logits(self, tid: str, contexts: np.ndarray, split: str, indices: np.ndarray | None) -> tuple[np.ndarray, int]:
        idx = None if indices is None else torch.as_tensor(indices)
        return self._timed(tid, self._backend(tid).logits, torch.as_tensor(contexts), split, idx)

    def template_logits(self, tid: str, template: str, split: str) -> tuple[np.ndarray, int]:
        return self._timed(tid, self._backend(tid).template_logits, template, split)

    def embed_words(self, text: str) -> np.ndarray:
        return self.engine.embed_words(text).numpy()

    def release(self, tid: str) -> dict[str, float]:
        """Forget a finished task; return its server-side cost."""
        self._tasks.pop(tid, None)
        peak = torch.cuda.max_memory_allocated() / 2**20 if self.engine.device.type == "cuda" else None
        return {"gpu_s": self._busy_s.pop(tid, 0.0), "peak_mem_mb": peak}


class RemoteBackend:
    """:class:`craft.blackbox.Backend` over a model server (a Ray actor handle or a local object).

    If the server was restarted and lost the task, the task is prepared again (features come
    back from the disk cache) and the call is repeated once.
    """

    def __init__(self, server: Any, spec: TaskSpec) -> None:
        self.server = server
        self.spec = spec
        self.prepared = self._call("prepare", spec)
        self.images_encoded = int(self.prepared["images_encoded"])

    def _call(self, name: str, *args):
        method = getattr(self.server, name)
        if hasattr(method, "remote"):
            import ray

            return ray.get(method.remote(*args))
        return method(*args)

    def _query(self, name: str, *args) -> tuple[torch.Tensor, int]:
        try:
            out, n = self._call(name, self.prepared["task_id"], *args)
        except Exception as exc:  # a Ray error wraps the server's UnknownTask
            if "UnknownTask" not in f"{type(exc).__name__} {exc}":
                raise
            self.prepared = self._call("prepare", self.spec)
            self.images_encoded += int(self.prepared["images_encoded"])
            out, n = self._call(name, self.prepared["task_id"], *args)
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

    def release(self) -> dict[str, float]:
        return self._call("release", self.prepared["task_id"])

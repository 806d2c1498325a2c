"""The model server: one copy of the black-box model that serves many runs.

``ModelServer`` is a plain class (usable in-process); ``benchmark.sweep`` wraps it as a Ray
actor with several concurrent callers (threads). The server prepares each run's image
features (through the disk cache) and answers its queries; runs hold a
:class:`benchmark.serve.client.RemoteBackend` and see logits and output features only; white-box references
(CoOp) are trained here, beside the model, and colocated runs run here too (a sweep's
``colocate: true``): both through ``run_here``.

Each ``prepare`` hands out a lease on the task (runs of one task share its features; the task
is dropped when its last lease is released) and the server's busy time is counted per lease.
On a GPU, concurrent ``logits`` calls are merged into one text-tower pass
(:mod:`benchmark.serve.batching`).
"""

from __future__ import annotations

import itertools
import os
import threading
import time
import uuid
from collections import defaultdict
from dataclasses import asdict
from typing import Any

import numpy as np
import torch

from benchmark.memory import device_peak_mb
from benchmark.serve.batching import QueryBatcher
from benchmark.serve.colocate import Interleaver, run_colocated
from benchmark.model.engine import ClipEngine, EngineBackend, TaskData
from benchmark.model.feature_cache import FeatureCache
from benchmark.model.loading import load_model
from benchmark.serve.client import UnknownTask
from benchmark.serve.options import ServerOptions
from craft.blackbox import VisualPrompt
from craft.methods import get_method
from craft.methods.base import SERVER
from benchmark.model.task import prepare_task
from benchmark.datasets.task_spec import TaskSpec


def task_id(spec: TaskSpec) -> str:
    return repr(sorted(asdict(spec).items()))


class ModelServer:
    """Holds a :class:`ClipEngine`; prepares tasks and answers their queries."""

    def __init__(
        self,
        backbone: str,
        weights: str,
        options: ServerOptions | None = None,
        precision: str = "auto",
        *,
        cache_dir: str | None = None,
        device: str | None = None,
        interleave: bool | None = None,
        staged: Any = None,
    ) -> None:
        """Serve ``backbone:weights`` with ``options``, computing in ``precision`` (the pool's choice for
        this server: ``bf16`` or ``fp32``; ``auto`` leaves it to the engine). ``interleave``: step
        concurrent colocated runs in turn in one thread, their CMA-ES in worker processes (None: on a
        GPU only, where one run's CPU work hides behind another's pass; on a CPU they compute in
        parallel). ``staged``: the driver's weights file for this backbone
        (:class:`benchmark.serve.staging.StagedWeights`), loaded with downloads off."""
        options = options or ServerOptions()
        device = device or ("cuda" if torch.cuda.is_available() else "cpu")
        self.weights_file: str | None = None
        if staged is not None:
            from benchmark.serve.staging import local_file

            self.weights_file = local_file(staged)
        loaded = load_model(backbone, weights, device, allow_download=False if staged is not None else None,
                            checkpoint=self.weights_file)
        self.engine = ClipEngine(loaded, device, **options.engine_kwargs(precision))
        self.cache = FeatureCache(cache_dir) if cache_dir != "" else None
        batching = self.engine.device.type == "cuda" if options.batching is None else options.batching
        self._batcher = QueryBatcher(self.engine) if batching else None
        if interleave is None:
            interleave = self.engine.device.type == "cuda"
        self._interleaver = Interleaver(self.engine.device, cma_workers=True) if interleave else None
        self._tasks: dict[str, tuple[EngineBackend, TaskData]] = {}
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
            "precision": self.engine.precision, "bf16": self.engine.bf16, "compile": self.engine.compile_mode,
            "attention": self.engine.attention,
            "pid": os.getpid(), "served": self._served, "weights_file": self.weights_file,
            "batched_passes": batcher.passes if batcher else None, "batched_requests": batcher.requests if batcher else None,
            "colocated_live_max": self._interleaver.live_max if self._interleaver else None,
        }

    def prepare(self, spec: TaskSpec) -> dict[str, Any]:
        """Encode the task's images (or read them from the cache); return what the run needs.

        ``task_id`` in the answer is a lease: pass it to every call, and to :meth:`release`.
        """
        tid = task_id(spec)
        with self._prepare_lock:
            if tid not in self._tasks:
                prepared = prepare_task(self.engine, spec, self.cache)
                backend = EngineBackend(self.engine, prepared)
                if self._batcher is not None:  # image-side passes merged with other runs' too
                    backend.image_tower = self._batcher.image_pass
                self._tasks[tid] = (backend, prepared)
                fresh = prepared.images_encoded
            else:
                fresh = 0
            lease = f"{self._instance}-{next(self._lease_numbers)}:{tid}"
            self._leases[lease] = tid
        backend, prepared = self._tasks[tid]
        return {
            "task_id": lease,
            "info": backend.info(),
            "classnames": prepared.classnames,
            "template": prepared.template,
            "labels": {k: v.numpy() for k, v in prepared.labels.items()},
            "class_subsets": prepared.class_subsets,
            "images_encoded": fresh,
        }

    def _entry(self, lease: str) -> tuple[EngineBackend, TaskData]:
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
            out, encoded, share_s = self._batcher.logits(backend, torch.as_tensor(contexts), split, idx)
            self._busy_s[tid] += share_s
            self._served += 1
            return out.numpy(), encoded
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

    # Image-side queries (craft.blackbox.VisualPrompt, image_features, pixels): arrays in, arrays out.
    def image_logits(self, tid: str, contexts: np.ndarray | None, tokens: np.ndarray | None, pixels: np.ndarray | None,
                     split: str, indices: np.ndarray | None) -> tuple[np.ndarray, int]:
        """Logits of images re-encoded under a visual prompt (its tokens and/or pixels), and the images encoded."""
        prompt = VisualPrompt(None if tokens is None else torch.as_tensor(tokens),
                              None if pixels is None else torch.as_tensor(pixels))
        ctx = None if contexts is None else torch.as_tensor(contexts)
        idx = None if indices is None else torch.as_tensor(indices)
        backend = self._backend(tid)
        if self._batcher is None:
            return self._timed(tid, backend.image_logits, ctx, prompt, split, idx)
        # image-tower passes merged with other runs' (its backend's image_tower): the call's busy time
        # is its wall time less its time inside the batcher, plus its share of the merged passes
        waited0, share0 = self._batcher.image_seconds()
        start = time.perf_counter()
        out, n = backend.image_logits(ctx, prompt, split, idx)
        waited1, share1 = self._batcher.image_seconds()
        self._busy_s[tid] += time.perf_counter() - start - (waited1 - waited0) + (share1 - share0)
        self._served += 1
        return out.numpy(), n

    def image_features(self, tid: str, split: str, indices: np.ndarray | None) -> tuple[np.ndarray, int]:
        idx = None if indices is None else torch.as_tensor(indices)
        return self._timed(tid, self._backend(tid).image_features, split, idx)

    def template_features(self, tid: str, template: str) -> np.ndarray:
        return self._backend(tid).template_features(template).numpy()

    def pixels(self, tid: str, split: str, indices: np.ndarray | None) -> np.ndarray:
        idx = None if indices is None else torch.as_tensor(indices)
        return self._backend(tid).pixels(split, idx).numpy()

    def run_here(
        self, tid: str, method: str, hparams: dict[str, Any], seed: int, budget: int, shots: int, dataset: str,
        eval_splits: tuple[str, ...],
    ) -> dict[str, Any]:
        """Run ``method`` on this server, beside the model: a white-box reference (CoOp: it needs the
        model, :mod:`benchmark.serve.whitebox`), or a black-box method colocated with its logits on
        this server's device (:mod:`benchmark.serve.colocate`). ``{"result": RunResult fields, "peak_mem_mb": ...}``."""
        from benchmark.serve.whitebox import run_whitebox

        prepared = self._entry(tid)[1]  # UnknownTask if the server lost it
        where = dict(shots=shots, dataset=dataset, eval_splits=tuple(eval_splits))
        start = time.perf_counter()
        if get_method(method).runs_on == SERVER:
            out = run_whitebox(self.engine, prepared, method, hparams, seed, **where)
        else:
            out = run_colocated(self.engine, prepared, method, hparams, seed, budget=budget, interleaver=self._interleaver,
                                **where)
        self._busy_s[tid] += time.perf_counter() - start
        return out

    def embed_words(self, text: str) -> np.ndarray:
        return self.engine.embed_words(text).numpy()

    def release(self, tid: str) -> dict[str, Any]:
        """End a lease (the task is forgotten with its last lease); return the lease's server-side cost and
        :meth:`device_info`."""
        with self._prepare_lock:
            task = self._leases.pop(tid, None)
            if task is not None and task not in self._leases.values():
                self._tasks.pop(task, None)
        return {"gpu_s": self._busy_s.pop(tid, 0.0), "peak_mem_mb": device_peak_mb(self.engine.device),
                **self.device_info()}

    def device_info(self) -> dict[str, str | None]:
        """What a result row records of this server: its device (the GPU's name, or ``cpu`` with the
        instruction set torch's kernels use: results round differently from one to another), torch's
        CUDA version there, and what it computes in."""
        cuda = self.engine.device.type == "cuda"
        device = (torch.cuda.get_device_name(self.engine.device) if cuda
                  else f"{self.engine.device.type} ({torch.backends.cpu.get_cpu_capability()})")
        return {"device": device,
                "cuda_version": torch.version.cuda if cuda else None,
                "computed_in": "bf16" if self.engine.bf16 else "fp32"}

"""The run's side of a model server: :class:`RemoteBackend` and the errors both sides share.

Kept apart from :mod:`benchmark.serve.server` so that a run's process imports neither open_clip nor
torchvision (seconds per worker on a small CPU): a run sees logits and features only.
"""

from __future__ import annotations

import itertools
import time
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch

from benchmark.datasets.task_spec import TaskSpec
from craft.blackbox import BackendInfo, OutputFeatures, VisualPrompt


class UnknownTask(KeyError):
    """The server does not hold this task (it was restarted): prepare it again."""


class ServerLost(RuntimeError):
    """A server stopped answering (dead, or waiting to be placed again): try another."""


def _tensor(array: Any) -> torch.Tensor:
    """A tensor of its own from a server's array (Ray hands out read-only, shared arrays)."""
    return torch.from_numpy(np.array(array))


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
                if name in ("logits", "template_logits", "features", "run_here", "release", "image_logits",
                            "image_features", "template_features", "pixels"):
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
            try:  # one call, not ray.wait then ray.get: a run makes hundreds of these
                return ray.get(ref, timeout=self.probe_every_s)
            except GetTimeoutError:
                pass
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
        return _tensor(out), n

    def info(self) -> BackendInfo:
        return self.prepared["info"]

    def embed_words(self, text: str) -> torch.Tensor:
        return _tensor(self._call("embed_words", text))

    def logits(self, contexts: torch.Tensor, split: str, indices: torch.Tensor | None = None) -> tuple[torch.Tensor, int]:
        idx = None if indices is None else indices.numpy()
        return self._query("logits", contexts.detach().cpu().numpy(), split, idx)

    def template_logits(self, template: str, split: str) -> tuple[torch.Tensor, int]:
        return self._query("template_logits", template, split)

    def features(self, contexts: torch.Tensor, split: str, indices: torch.Tensor | None = None) -> tuple[OutputFeatures, int]:
        idx = None if indices is None else indices.numpy()
        (text, image, scale), n = self._task_call("features", contexts.detach().cpu().numpy(), split, idx)
        return OutputFeatures(_tensor(text), _tensor(image), float(scale)), n

    # Image side (craft.blackbox.VisualPrompt): the prompt travels as arrays, as contexts do.
    def image_logits(self, contexts: torch.Tensor | None, prompt: VisualPrompt, split: str,
                     indices: torch.Tensor | None = None) -> tuple[torch.Tensor, int]:
        arr = lambda t: None if t is None else t.detach().cpu().numpy()  # noqa: E731
        return self._query("image_logits", arr(contexts), arr(prompt.tokens), arr(prompt.pixels), split, arr(indices))

    def image_features(self, split: str, indices: torch.Tensor | None = None) -> tuple[torch.Tensor, int]:
        return self._query("image_features", split, None if indices is None else indices.numpy())

    def template_features(self, template: str) -> torch.Tensor:
        return _tensor(self._task_call("template_features", template))

    def pixels(self, split: str, indices: torch.Tensor | None = None) -> torch.Tensor:
        return _tensor(self._task_call("pixels", split, None if indices is None else indices.numpy()))

    def run_here(self, method: str, hparams: dict[str, Any], seed: int, budget: int, eval_splits: tuple[str, ...]) -> dict[str, Any]:
        """Have the server run ``method`` beside its model: a white-box reference (the model never leaves
        it) or a colocated black-box run (``budget`` queries)."""
        return self._task_call("run_here", method, hparams, seed, budget, self.spec.shots, self.spec.dataset,
                               tuple(eval_splits))

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

"""Cross-caller query batching for a model server: concurrent runs' prompts in one forward pass.

A server answers several runs at once (one thread each). On a GPU, one text-tower pass over
many candidates costs far less per sequence than several small ones (docs/throughput.md), so
the :class:`QueryBatcher` merges requests that arrive while a pass is running: the next pass
takes the oldest waiting request and every other waiting request for the same class list and
context length (runs on one dataset, whatever their seed, shots or method), concatenated along
the candidate axis, up to ``max_sequences``. Image-side queries' image-tower passes are merged
the same way (:meth:`QueryBatcher.image_pass`): waiting passes of any runs whose images have the
same shape and the same number of prompt tokens, up to ``max_images`` images.
No request waits for a timer: an idle server runs a request at once. Each candidate's prompts
are computed exactly as alone (candidates do not interact in the tower); what may differ is
only floating-point rounding where a kernel's blocking depends on the batch size.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass

import torch

from benchmark.model.engine import ClassPart, ClipEngine, EngineBackend, images_per_pass


@dataclass
class _Request:
    """A text-tower request (``contexts``: candidates x tokens x width, for class list ``part``) or,
    with ``part`` None, an image-tower pass (``contexts``: images x C x H x W, with ``tokens``)."""

    contexts: torch.Tensor
    part: ClassPart | None
    tokens: torch.Tensor | None = None
    result: torch.Tensor | None = None
    error: BaseException | None = None
    share_s: float = 0.0
    done: bool = False

    @property
    def key(self) -> tuple:
        if self.part is None:
            return ("image", tuple(self.contexts.shape[1:]), None if self.tokens is None else tuple(self.tokens.shape[1:]))
        return (self.part.classnames, self.contexts.shape[1], self.contexts.dtype)

    @property
    def sequences(self) -> int:
        """Its size: text sequences, or images."""
        if self.part is None:
            return self.contexts.shape[0]
        return self.contexts.shape[0] * len(self.part.classnames)


class QueryBatcher:
    """Serialises text-tower passes on one engine, merging same-class-list requests that wait."""

    def __init__(self, engine: ClipEngine, max_sequences: int = 65536, max_images: int | None = None) -> None:
        self.engine = engine
        self.max_sequences = max_sequences
        self.max_images = max_images or images_per_pass(engine.device)
        self._cond = threading.Condition(threading.Lock())
        self._queue: list[_Request] = []
        self._busy = False
        self.passes = 0  # forward passes run
        self.requests = 0  # requests answered
        self._local = threading.local()  # per calling thread: image_seconds

    def text_features(self, contexts: torch.Tensor, part: ClassPart) -> tuple[torch.Tensor, float]:
        """Normalised text features (as :meth:`ClipEngine.text_features`) and this request's share of pass time."""
        return self._submit(_Request(contexts, part))

    def image_pass(self, x: torch.Tensor, tokens: torch.Tensor | None) -> torch.Tensor:
        """:meth:`ClipEngine.prompted_pass`, merged with the passes other runs are waiting for. The
        calling thread's :meth:`image_seconds` grow by the time it spent here and its share of the passes."""
        start = time.perf_counter()
        out, share_s = self._submit(_Request(x, None, tokens))
        waited, share = self.image_seconds()
        self._local.image = (waited + time.perf_counter() - start, share + share_s)
        return out

    def image_seconds(self) -> tuple[float, float]:
        """The calling thread's seconds inside :meth:`image_pass` so far, and its share of the passes' busy seconds."""
        return getattr(self._local, "image", (0.0, 0.0))

    def _submit(self, req: _Request) -> tuple[torch.Tensor, float]:
        with self._cond:
            self._queue.append(req)
            while not req.done:
                if self._busy:
                    self._cond.wait()
                    continue
                batch = self._take()
                self._busy = True
                self._cond.release()
                try:
                    self._run(batch)
                finally:
                    self._cond.acquire()
                    self._busy = False
                    self._cond.notify_all()
        if req.error is not None:
            raise req.error
        assert req.result is not None
        return req.result, req.share_s

    def logits(
        self, backend: EngineBackend, contexts: torch.Tensor, split: str, indices: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, int, float]:
        """Logits and images encoded as :meth:`EngineBackend.logits`, with the text features from a
        merged pass; and this call's share of the busy seconds."""
        text, share_s = self.text_features(contexts, backend.part)
        start = time.perf_counter()
        images, encoded = backend.images(split, indices)
        out = self.engine.logits(images, text).cpu()
        return out, encoded, share_s + time.perf_counter() - start

    def _take(self) -> list[_Request]:
        """The oldest waiting request and the others with its key, within ``max_sequences``."""
        first = self._queue[0]
        batch, total = [first], first.sequences
        limit = self.max_images if first.part is None else self.max_sequences
        for r in self._queue[1:]:
            if r.key == first.key and total + r.sequences <= limit:
                batch.append(r)
                total += r.sequences
        taken = {id(r) for r in batch}
        self._queue = [r for r in self._queue if id(r) not in taken]
        return batch

    def _run(self, batch: list[_Request]) -> None:
        start = time.perf_counter()
        try:
            if batch[0].part is None:
                merged = torch.cat([r.contexts for r in batch]) if len(batch) > 1 else batch[0].contexts
                tokens = None if batch[0].tokens is None else torch.cat([r.tokens for r in batch])
                outs = list(self.engine.prompted_pass(merged, tokens).split([r.sequences for r in batch]))
            elif len(batch) == 1:
                outs = [self.engine.text_features(batch[0].contexts, batch[0].part)]
            else:
                merged = torch.cat([r.contexts for r in batch])
                feats = self.engine.text_features(merged, batch[0].part)
                outs = list(feats.split([r.contexts.shape[0] for r in batch]))
            elapsed = time.perf_counter() - start
            total = sum(r.sequences for r in batch)
            for r, out in zip(batch, outs):
                r.result, r.share_s = out, elapsed * r.sequences / total
        except BaseException as exc:  # every waiting caller gets the error
            for r in batch:
                r.error = exc
        finally:
            for r in batch:
                r.done = True
            self.passes += 1
            self.requests += len(batch)

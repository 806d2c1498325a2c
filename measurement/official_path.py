"""The official CraFT code's query path, the reference ``craft perf`` measures the fast path against.

One candidate a call, fp32, every prompt padded to the model's full context length (77 for CLIP):
the features equal the fast path's (``tests/test_engine.py``), only slower.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from benchmark.model.engine import ClassPart, ClipEngine
from benchmark.model.loading import LoadedModel


class OfficialEngine(ClipEngine):
    """A :class:`ClipEngine` whose text features take the official code's path (always fp32, never compiled)."""

    def __init__(self, loaded: LoadedModel, device: str | torch.device = "cpu", **options: object) -> None:
        super().__init__(loaded, device, **{**options, "precision": "fp32", "compile": False})

    @torch.no_grad()
    def text_features(self, contexts: torch.Tensor, part: ClassPart) -> torch.Tensor:
        contexts = contexts.to(self.device, torch.float32)
        feats = []
        for c in range(contexts.shape[0]):  # one candidate a call, padded to the full length
            x, eot = self._sequences(contexts[c : c + 1], part, full=True)
            feats.append(self._encode_embeddings(x, eot).float())
        return F.normalize(torch.cat(feats), dim=-1).reshape(contexts.shape[0], len(part.classnames), -1)

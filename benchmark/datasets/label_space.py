"""Scoring a test-only variant in its parent's label space (ImageNet-A and -R: 200 of 1000 classes)."""

from __future__ import annotations

import torch


def restrict_logits(logits: torch.Tensor, class_subset: list[int] | None) -> torch.Tensor:
    """``logits`` (N x parent classes) with every class outside ``class_subset`` set to -inf.

    The argmax then ranges over the subset only and is still a parent label, so it compares
    directly with the variant's labels: the same accuracy as CoOp's and CraFT's 200-way scoring.
    None (a variant with every parent class) returns ``logits`` unchanged.
    """
    if class_subset is None:
        return logits
    out = torch.full_like(logits, float("-inf"))
    index = torch.as_tensor(class_subset, device=logits.device)
    out[..., index] = logits[..., index]
    return out

"""The prediction refinement module: a residual MLP on the black box's logits."""

from __future__ import annotations

import torch
from torch import nn


class RefinementMLP(nn.Module):
    """``refined = logits + MLP(logits)`` with ``Linear(C, hidden) -> ReLU -> Linear(hidden, C)``."""

    def __init__(self, n_classes: int, hidden: int = 256) -> None:
        super().__init__()
        self.net = nn.Sequential(nn.Linear(n_classes, hidden), nn.ReLU(), nn.Linear(hidden, n_classes))

    def forward(self, logits: torch.Tensor) -> torch.Tensor:
        return logits + self.net(logits)

    def size_bytes(self) -> int:
        """Deployable size of the module's parameters (the paper's memory comparison)."""
        return sum(p.numel() * p.element_size() for p in self.parameters())


def refinement_optimizer(mlp: RefinementMLP, lr: float) -> torch.optim.Adam:
    """The module's Adam. On a GPU the fused implementation: a step is 4 operations instead of the
    default ``foreach`` one's 19, and an epoch at Caltech101's 16-shot shapes 441 instead of 546
    (``python -m measurement.generation_ops``), each a kernel launch by the CPU. On a CPU torch's
    default, with which the README's results were computed."""
    on_cpu = next(mlp.parameters()).device.type == "cpu"
    return torch.optim.Adam(mlp.parameters(), lr=lr, fused=None if on_cpu else True)

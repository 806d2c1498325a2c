"""SPSA with gradient correction (SPSA-GC), BlackVIP's optimiser (Oh et al., CVPR 2023).

Per step ``k`` (from 1): gains ``a_k = a / (k + o)^alpha`` and ``c_k = c / k^gamma``; ``sp_avg`` random
directions ``delta`` drawn from the segmented uniform ``[-1, -0.5] U [0.5, 1]`` per coordinate; the
estimate ``g = mean_i (L(w + c_k delta_i) - L(w - c_k delta_i)) / (2 c_k delta_i)`` (elementwise
division); then the Nesterov-like correction ``m = b1 m + g`` (``m = g`` at the first step),
``w <- w - a_k (g + b1 m)``. Plain SPSA (``gc=False``): ``w <- w - a_k g``. As the official
``trainers/blackvip.py``.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch


def directions(n: int, dim: int, gen: torch.Generator) -> torch.Tensor:
    """``n x dim`` perturbations, each coordinate uniform on ``[-1, -0.5] U [0.5, 1]``."""
    magnitude = (torch.rand(n, dim, generator=gen) + 1.0) / 2.0
    sign = torch.where(torch.rand(n, dim, generator=gen) < 0.5, -1.0, 1.0)
    return magnitude * sign


def estimate(loss_plus: torch.Tensor, loss_minus: torch.Tensor, deltas: torch.Tensor, ck: float) -> torch.Tensor:
    """The averaged two-sided SPSA gradient estimate from the losses at ``w +- ck * deltas[i]``."""
    diff = (loss_plus - loss_minus).to(deltas.dtype).view(-1, 1)
    return (diff / (2.0 * ck * deltas)).mean(0)


@dataclass
class SPSAGC:
    """The gain schedule and the corrected update's state (see the module's docstring)."""

    a: float = 0.01
    c: float = 0.01
    o: float = 1.0
    alpha: float = 0.4
    gamma: float = 0.1
    b1: float = 0.9
    gc: bool = True
    step: int = 0
    m: torch.Tensor | None = None

    def gains(self, k: int) -> tuple[float, float]:
        """``(a_k, c_k)`` of step ``k`` (1-based)."""
        return self.a / (k + self.o) ** self.alpha, self.c / k**self.gamma

    def update(self, w: torch.Tensor, ghat: torch.Tensor, k: int) -> torch.Tensor:
        """The parameters after step ``k`` with estimate ``ghat``."""
        ak, _ = self.gains(k)
        if not self.gc:
            return w - ak * ghat
        self.m = ghat if (self.m is None or k <= 1) else self.b1 * self.m + ghat
        return w - ak * (ghat + self.b1 * self.m)

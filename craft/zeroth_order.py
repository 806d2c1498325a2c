"""Zeroth-order gradient estimates from loss values at perturbed prompts (CBBT).

``q`` directions ``u_i`` drawn uniformly on the unit sphere (normalised Gaussians over the whole
context), step ``mu``. One-sided, as the official CBBT code::

    g = (1 / mu) (1 / q) sum_i [(L(p + mu u_i) - L(p)) / mu] u_i

and two-sided, ``[(L(p + mu u_i) - L(p - mu u_i)) / (2 mu)]`` in the bracket, which cancels the
curvature term of the one-sided difference. The leading ``1 / mu`` is the official scale; at
the default ``mu = max(1 / numel, 0.001)`` it is ``numel`` whenever ``numel <= 1000``, the factor
that makes the estimate unbiased for the smoothed loss (``E[u u^T] = I / numel``).
"""

from __future__ import annotations

import torch


def default_mu(numel: int) -> float:
    """The official perturbation step: ``max(1 / numel, 0.001)``."""
    return max(1.0 / numel, 1e-3)


def queries_per_step(q: int, two_sided: bool) -> int:
    """Loss evaluations one estimate costs: the prompt itself plus one (or two) per direction."""
    return 1 + (2 if two_sided else 1) * q


def directions(shape: tuple[int, ...], q: int, generator: torch.Generator | None = None) -> torch.Tensor:
    """``q x shape`` directions, each of unit L2 norm over all its entries."""
    numel = 1
    for s in shape:
        numel *= s
    u = torch.randn(q, numel, generator=generator)
    return (u / u.norm(dim=1, keepdim=True)).view(q, *shape)


def perturbed(p: torch.Tensor, dirs: torch.Tensor, mu: float, two_sided: bool) -> torch.Tensor:
    """The prompts to score, ``p`` first: ``[p, p + mu u_1.., (p - mu u_1..)]``."""
    parts = [p.unsqueeze(0), p + mu * dirs]
    if two_sided:
        parts.append(p - mu * dirs)
    return torch.cat(parts)


def combine(losses: torch.Tensor, dirs: torch.Tensor, mu: float, two_sided: bool) -> torch.Tensor:
    """The gradient estimate from the losses of :func:`perturbed`'s prompts, in that order."""
    q = dirs.shape[0]
    if losses.shape != (queries_per_step(q, two_sided),):
        raise ValueError(f"expected {queries_per_step(q, two_sided)} losses for q={q}, got shape {tuple(losses.shape)}")
    losses = losses.detach().double()
    if two_sided:
        slopes = (losses[1 : q + 1] - losses[q + 1 :]) / (2 * mu)
    else:
        slopes = (losses[1:] - losses[0]) / mu
    weights = slopes.view(q, *([1] * (dirs.dim() - 1)))
    return ((weights * dirs.double()).sum(0) / (q * mu)).to(dirs.dtype)


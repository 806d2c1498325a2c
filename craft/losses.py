"""The prediction-consistent loss that ties the prompt and the refinement module together."""

from __future__ import annotations

from typing import Callable

import torch
import torch.nn.functional as F


def kl_to(target_logits: torch.Tensor, logits: torch.Tensor) -> torch.Tensor:
    """``KL(softmax(target) || softmax(logits))``, batch mean; gradients flow into ``logits`` only."""
    return F.kl_div(
        F.log_softmax(logits, dim=-1), F.softmax(target_logits.detach(), dim=-1), reduction="batchmean"
    )


# Off the CPU the fitness is computed for many candidates per operation, each operation on at
# most this many logits (256 MiB in fp32): a GPU is fed a few large kernels instead of 40 small
# ones per step, and at ImageNet's shapes (16M logits a candidate) 4 candidates go at once.
FITNESS_CHUNK_LOGITS = 2**26


def prompt_fitness(
    logits: torch.Tensor, labels: torch.Tensor, lambda_i: float, head: Callable[[torch.Tensor], torch.Tensor] | None = None,
    batched: bool | None = None,
) -> torch.Tensor:
    """Fitness of candidate prompts: ``CE(logits, y) + lambda_I * KL(softmax(head(logits)) || softmax(logits))``.

    ``logits`` is ``candidates x images x classes``; ``head`` the refinement module (its output
    enters only through the KL term, skipped when ``lambda_i`` is 0 or there is no head). Returns
    one value per candidate (lower is better), batch means over images.

    ``batched`` (None: off the CPU only) computes up to :data:`FITNESS_CHUNK_LOGITS` logits of
    candidates per operation. On a CPU the default goes one candidate at a time, so that its
    logits, refined logits and log-softmaxes stay in cache (``python -m measurement.runner_cost
    --batched`` times both). Both agree to rounding.
    """
    n_cand, n_img, n_cls = logits.shape
    if batched is None:
        batched = logits.device.type != "cpu"
    step = max(1, FITNESS_CHUNK_LOGITS // max(1, n_img * n_cls)) if batched else 1
    out = torch.empty(n_cand, dtype=logits.dtype, device=logits.device)
    rows = labels.to(logits.device).view(1, n_img, 1)
    for b in range(0, n_cand, step):
        chunk = logits[b : b + step]
        log_p = F.log_softmax(chunk, dim=-1)
        value = -log_p.gather(2, rows.expand(chunk.shape[0], -1, -1)).mean((1, 2))
        if lambda_i and head is not None:
            log_r = F.log_softmax(head(chunk), dim=-1)
            value = value + lambda_i * (log_r.exp() * (log_r - log_p)).sum((1, 2)) / n_img
        out[b : b + step] = value
    return out


def refinement_loss(
    refined: torch.Tensor, logits: torch.Tensor, labels: torch.Tensor, lambda_o: float
) -> torch.Tensor:
    """Loss of the refinement module: ``CE(refined, y) + lambda_O * KL(logits || refined)``."""
    loss = F.cross_entropy(refined, labels)
    if lambda_o:
        loss = loss + lambda_o * kl_to(logits, refined)
    return loss

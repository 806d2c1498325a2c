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


# The fitness is computed for many candidates per operation, each operation on at most this many
# logits. Off the CPU 2**26 (256 MiB in fp32): a GPU is fed a few large kernels instead of 40 small
# ones per step, and at ImageNet's shapes (16M logits a candidate) 4 candidates go at once. On a CPU
# 2**13: enough candidates per operation at few-shot shapes (5 at 160 images x 10 classes) that
# torch's per-operation overhead stops dominating, few enough that a chunk's refined logits and
# hidden activations stay in the core's cache; at larger shapes one candidate at a time.
FITNESS_CHUNK_LOGITS = 2**26
FITNESS_CPU_CHUNK_LOGITS = 2**13


def prompt_fitness(
    logits: torch.Tensor, labels: torch.Tensor, lambda_i: float, head: Callable[[torch.Tensor], torch.Tensor] | None = None,
    batched: bool | None = None,
) -> torch.Tensor:
    """Fitness of candidate prompts: ``CE(logits, y) + lambda_I * KL(softmax(head(logits)) || softmax(logits))``.

    ``logits`` is ``candidates x images x classes``; ``head`` the refinement module (its output
    enters only through the KL term, skipped when ``lambda_i`` is 0 or there is no head). Returns
    one value per candidate (lower is better), batch means over images.

    ``batched`` picks how many candidates go per operation: None, the device's default (a CPU
    :data:`FITNESS_CPU_CHUNK_LOGITS` logits, others :data:`FITNESS_CHUNK_LOGITS`); True, up to
    :data:`FITNESS_CHUNK_LOGITS`; False, one at a time. Every row is computed by the same
    operations whatever the chunk (``python -m measurement.fitness_chunks`` times them
    and checks they agree to the bit on this machine).
    """
    n_cand, n_img, n_cls = logits.shape
    if batched is None:
        limit = FITNESS_CPU_CHUNK_LOGITS if logits.device.type == "cpu" else FITNESS_CHUNK_LOGITS
    else:
        limit = FITNESS_CHUNK_LOGITS if batched else 1
    step = max(1, limit // max(1, n_img * n_cls))
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

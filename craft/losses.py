"""The prediction-consistent loss that ties the prompt and the refinement module together."""

from __future__ import annotations

import torch
import torch.nn.functional as F


def kl_to(target_logits: torch.Tensor, logits: torch.Tensor) -> torch.Tensor:
    """``KL(softmax(target) || softmax(logits))``, batch mean; gradients flow into ``logits`` only."""
    return F.kl_div(
        F.log_softmax(logits, dim=-1), F.softmax(target_logits.detach(), dim=-1), reduction="batchmean"
    )


def prompt_fitness(logits: torch.Tensor, refined: torch.Tensor, labels: torch.Tensor, lambda_i: float) -> torch.Tensor:
    """Fitness of candidate prompts: ``CE(logits, y) + lambda_I * KL(refined || logits)``.

    ``logits`` is ``candidates x images x classes``; ``refined`` the refinement module's output
    on those logits. Returns one value per candidate (lower is better).
    """
    n_cand, n_img, n_cls = logits.shape
    flat = logits.reshape(-1, n_cls)
    ce = F.cross_entropy(flat, labels.repeat(n_cand), reduction="none").reshape(n_cand, n_img).mean(1)
    if lambda_i == 0:
        return ce
    kl = F.kl_div(
        F.log_softmax(logits, dim=-1), F.softmax(refined, dim=-1), reduction="none"
    ).sum(-1).mean(1)
    return ce + lambda_i * kl


def refinement_loss(
    refined: torch.Tensor, logits: torch.Tensor, labels: torch.Tensor, lambda_o: float
) -> torch.Tensor:
    """Loss of the refinement module: ``CE(refined, y) + lambda_O * KL(logits || refined)``."""
    loss = F.cross_entropy(refined, labels)
    if lambda_o:
        loss = loss + lambda_o * kl_to(logits, refined)
    return loss

"""LFA (Ouali et al., ICCV 2023): a linear map of black-box image features onto class text embeddings.

The black box is asked for what an embedding API returns: the image embeddings of the few-shot
training set (:meth:`craft.blackbox.MeteredBlackBox.image_features`, one image encoded per image,
against the image budget) and the text embeddings of the task's template per class. Then, as the
official code (``main.py`` and ``alignment_utils.py`` of the LFA repository):

1. **Closed form.** ``W`` maps image features ``X`` to their class's text embedding ``Y = T[y]``: the
   orthogonal Procrustes solution ``W = U V^T`` of ``svd(X^T Y)``, relaxed towards the identity,
   ``W - beta (W - I)`` (beta-Procrustes; ``beta`` picked by 80/20 cross-validation on the training
   set over 25 values in [0, 1], 3 draws each, unless given), or the least-squares solution
   ``(X^T X)^-1 X^T Y`` (``align: least_squares``, the official ``--pseudo-align``).
2. **Refinement.** ``W`` is trained with the adaptive re-ranking loss (a margin loss against the
   ``knn`` nearest class embeddings, margins ``(1 - cos(t_y, t_k)) / scale``), AdamW (lr 5e-4, weight
   decay 5e-4), cosine to 1e-7 over 200 iterations on random 75% batches, with Gaussian feature
   noise (0.035) and dropout (0.05) each applied half of the time.

Prediction: ``argmax l2norm(x W) . T``. Evaluation asks for the eval sets' image embeddings
(unbudgeted, counted as images encoded).
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import torch
import torch.nn.functional as F

from craft.blackbox import TRAIN, BlackBox
from craft.methods.base import MethodTraits, RunResult, Task, Timer, accuracy, reject_invalid, restrict_logits

ALIGNS = ("procrustes", "least_squares")


@dataclass
class LFAConfig:
    """LFA's hyperparameters (the official ``main.py`` defaults). ``beta=None``: cross-validated.
    ``image_budget=None``: the training set once (``shots x classes`` images)."""

    align: str = "procrustes"
    beta: float | None = None
    beta_tries: int = 25
    beta_samples: int = 3
    n_iters: int = 200
    lr: float = 5e-4
    end_lr: float = 1e-7
    weight_decay: float = 5e-4
    batch_fraction: float = 0.75
    knn: int = 3
    scale: float = 4.0
    gaussian_noise: float = 0.035
    dropout: float = 0.05
    image_budget: int | None = None

    def __post_init__(self) -> None:
        finite = math.isfinite
        reject_invalid(self, {
            "align": self.align in ALIGNS,
            "beta": self.beta is None or 0.0 <= self.beta <= 1.0,
            "beta_tries": self.beta_tries >= 1, "beta_samples": self.beta_samples >= 1,
            "n_iters": self.n_iters >= 0, "lr": finite(self.lr) and self.lr > 0,
            "end_lr": finite(self.end_lr) and self.end_lr >= 0, "weight_decay": self.weight_decay >= 0,
            "batch_fraction": 0.0 < self.batch_fraction <= 1.0, "knn": self.knn >= 1,
            "scale": finite(self.scale) and self.scale > 0,
            "gaussian_noise": self.gaussian_noise >= 0, "dropout": 0.0 <= self.dropout < 1.0,
            "image_budget": self.image_budget is None or self.image_budget >= 0,
        }, f"align in {', '.join(ALIGNS)}, 0 <= beta <= 1, counts >= 1, finite lr/scale > 0, 0 <= dropout < 1")


def procrustes(x: torch.Tensor, y: torch.Tensor, beta: float = 0.0) -> torch.Tensor:
    """The orthogonal ``W`` minimising ``||x W - y||_F`` (``U V^T`` of ``svd(x^T y)``), moved a share
    ``beta`` of the way back to the identity."""
    u, _, vh = torch.linalg.svd(x.T.double() @ y.double())
    w = (u @ vh).float()
    return w - (w - torch.eye(w.shape[0])) * beta


def least_squares(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """``(x^T x)^-1 x^T y``: the unconstrained linear map (the official ``pseudo_align``)."""
    x64 = x.double()
    return (torch.linalg.solve(x64.T @ x64, x64.T @ y.double())).float()


def reranking_loss(v: torch.Tensor, prototypes: torch.Tensor, labels: torch.Tensor, scale: float, knn: int) -> torch.Tensor:
    """The adaptive re-ranking loss: hinge of ``d(v, t_y) + (1 - cos(t_y, t_k)) / scale - d(v, t_k)`` over
    the ``knn`` class embeddings nearest to each (normalised) feature ``v``."""
    knn = min(knn, prototypes.shape[0])
    v, t = F.normalize(v, dim=-1), F.normalize(prototypes, dim=-1)
    dist = torch.cdist(v, t)
    near, idx = dist.sort(dim=1)
    anchor = (v - t[labels]).norm(dim=-1, keepdim=True)
    margins = (1.0 - (t[idx[:, :knn]] * t[labels].unsqueeze(1)).sum(-1)) / scale
    return torch.clamp(anchor + margins - near[:, :knn], min=0).mean()


def _top1(x: torch.Tensor, w: torch.Tensor, prototypes: torch.Tensor, y: torch.Tensor) -> float:
    return accuracy(F.normalize(x @ w, dim=-1) @ prototypes.T, y)


def select_beta(x: torch.Tensor, prototypes: torch.Tensor, y: torch.Tensor, tries: int, samples: int,
                gen: torch.Generator) -> float:
    """The official cross-validation of beta: mean held-out top-1 over ``samples`` random 80/20 splits."""
    best, best_score = 0.0, -math.inf
    n_fit = int(len(x) * 0.8)
    for beta in torch.linspace(0.0, 1.0, tries).tolist():
        score = 0.0
        for _ in range(samples):
            perm = torch.randperm(len(x), generator=gen)
            fit, held = perm[:n_fit], perm[n_fit:]
            w = procrustes(x[fit], prototypes[y[fit]], beta)
            score += _top1(x[held], w, prototypes, y[held])
        if score / samples > best_score:
            best, best_score = beta, score / samples
    return best


def refine(w0: torch.Tensor, x: torch.Tensor, prototypes: torch.Tensor, y: torch.Tensor, cfg: LFAConfig,
           gen: torch.Generator) -> torch.Tensor:
    """The refinement of ``W`` (see the module's docstring); its random draws from ``gen``."""
    w = torch.nn.Parameter(w0.clone())
    opt = torch.optim.AdamW([w], lr=cfg.lr, eps=1e-8, betas=(0.9, 0.999), weight_decay=cfg.weight_decay)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, max(cfg.n_iters, 1), eta_min=cfg.end_lr)
    batch = max(1, int(len(x) * cfg.batch_fraction))
    for _ in range(cfg.n_iters):
        idx = torch.randperm(len(x), generator=gen)[:batch]
        xb, yb = x[idx], y[idx]
        if cfg.gaussian_noise > 0 and torch.rand((), generator=gen) > 0.5:
            xb = xb + torch.randn(xb.shape, generator=gen) * cfg.gaussian_noise
        if cfg.dropout > 0 and torch.rand((), generator=gen) > 0.5:
            keep = (torch.rand(xb.shape, generator=gen) >= cfg.dropout).float()
            xb = xb * keep / (1.0 - cfg.dropout)
        loss = reranking_loss(xb @ w, prototypes, yb, cfg.scale, cfg.knn)
        opt.zero_grad()
        loss.backward()
        opt.step()
        sched.step()
    return w.detach()


class LFA(MethodTraits):
    """LFA: features from the black box, a linear alignment learned on the client."""

    name = "lfa"
    config_cls = LFAConfig

    def default_budget(self, config: LFAConfig, shots: int, classes: int, dataset: str, backbone: str = "") -> int:
        return 0  # no prompt queries: features only

    def default_image_budget(self, config: LFAConfig, queries: int, n_train: int, dataset: str) -> int | None:
        return n_train  # the training set's embeddings, once

    def run(self, box: BlackBox, task: Task, config: LFAConfig, seed: int) -> RunResult:
        timer = Timer()
        gen = torch.Generator().manual_seed(seed)
        x = box.image_features(TRAIN).float().cpu()
        prototypes = F.normalize(box.template_features(task.template).float().cpu(), dim=-1)
        y = task.labels[TRAIN].long()
        targets = prototypes[y]
        beta = config.beta
        if config.align == "least_squares":
            w0 = least_squares(x, targets)
        else:
            if beta is None:
                beta = select_beta(x, prototypes, y, config.beta_tries, config.beta_samples, gen)
            w0 = procrustes(x, targets, beta)
        trace = [{"generation": 0, "queries": box.usage.queries, "fitness": float(reranking_loss(x @ w0, prototypes, y, config.scale, config.knn))}]
        w = refine(w0, x, prototypes, y, config, gen)
        metrics = {}
        for split in task.eval_splits:
            feats = box.image_features(split, budgeted=False).float().cpu()
            logits = F.normalize(feats @ w, dim=-1) @ prototypes.T
            if split in task.class_subsets:
                logits = restrict_logits(logits, task.class_subsets[split])
            metrics[f"top1_{split}"] = accuracy(logits, task.labels[split])
        trace.append({"generation": 1, "queries": box.usage.queries,
                      "train_loss": float(reranking_loss(x @ w, prototypes, y, config.scale, config.knn)), **metrics})
        hparams = asdict(config) | {"beta": beta}
        return RunResult(self.name, hparams, metrics, box.usage.as_dict(), trace,
                         learned_params=w.numel(), learned_bytes=4 * w.numel(), wall_s=timer())


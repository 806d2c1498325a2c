"""The prompt generation module: ``ctx = p0 + A z``, with ``z`` searched derivative-free."""

from __future__ import annotations

import torch


# How the projection A is drawn: see PromptGenerator.
PROJECTION_INITS = ("normal", "uniform")


class PromptGenerator:
    """Maps a low-dimensional ``z`` to a prompt context ``p0 + A z`` (``n_ctx x width``).

    ``p0`` is the embedding of the initial words ("a photo of a"); ``A`` is a fixed random
    projection, ``Linear(intrinsic_dim, n_ctx*width, bias=False)`` in the official code: with
    ``init="normal"`` its entries are ``N(0, std^2)`` (the official code's ``normal_(0, std)``);
    with ``init="uniform"`` they are ``U(-1/sqrt(intrinsic_dim), 1/sqrt(intrinsic_dim))``, torch's
    default ``Linear`` init, which the official ImageNet scripts keep (``std`` is unused there).
    """

    def __init__(self, p0: torch.Tensor, intrinsic_dim: int, std: float, generator: torch.Generator,
                 init: str = "normal") -> None:
        if p0.dim() != 2:
            raise ValueError(f"p0 must be n_ctx x width, got shape {tuple(p0.shape)}")
        if init not in PROJECTION_INITS:
            raise ValueError(f"unknown projection init {init!r}; expected one of {', '.join(PROJECTION_INITS)}")
        self.p0 = p0.float()
        self.n_ctx, self.width = p0.shape
        self.intrinsic_dim = int(intrinsic_dim)
        shape = (self.n_ctx * self.width, self.intrinsic_dim)
        if init == "normal":
            self.A = torch.randn(*shape, generator=generator) * float(std)
        else:
            bound = 1.0 / self.intrinsic_dim**0.5
            self.A = (torch.rand(*shape, generator=generator) * 2 - 1) * bound

    def to(self, device: torch.device | str) -> "PromptGenerator":
        """Move ``p0`` and ``A`` to ``device`` (where the run's logits arrive); returns itself."""
        self.p0, self.A = self.p0.to(device), self.A.to(device)
        return self

    def __call__(self, z: torch.Tensor) -> torch.Tensor:
        """Contexts for a batch of ``z`` (``pop x intrinsic_dim``) or a single ``z``, on ``A``'s device."""
        z = torch.as_tensor(z, dtype=torch.float32, device=self.A.device)
        single = z.dim() == 1
        z = z.reshape(-1, self.intrinsic_dim)
        ctx = self.p0.unsqueeze(0) + (z @ self.A.T).reshape(-1, self.n_ctx, self.width)
        return ctx[0] if single else ctx

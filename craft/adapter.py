"""CBBT's output-feature adapter: a residual bottleneck over the black box's embeddings.

As CLIP-Adapter: ``f' = norm(ratio * A(f) + (1 - ratio) * f)`` with
``A = Linear(d, d/r) -> ReLU -> Linear(d/r, d) -> ReLU`` (no biases), on the image features, the
text features or both. It is trained by backprop on our side: the features are outputs of the
black box, so no gradient ever reaches the model.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from craft.blackbox import OutputFeatures

SIDES = ("image", "text", "both")


class ResidualAdapter(nn.Module):
    """``norm(ratio * A(f) + (1 - ratio) * f)`` for features ``... x dim``."""

    def __init__(self, dim: int, ratio: float = 0.2, reduction: int = 4) -> None:
        super().__init__()
        if not 0.0 < ratio <= 1.0:
            raise ValueError(f"adapter ratio must be in (0, 1], got {ratio}")
        if not 1 <= reduction <= dim:
            raise ValueError(f"adapter reduction must be in [1, {dim}] for {dim}-d features, got {reduction}")
        self.ratio = ratio
        self.net = nn.Sequential(
            nn.Linear(dim, dim // reduction, bias=False),
            nn.ReLU(),
            nn.Linear(dim // reduction, dim, bias=False),
            nn.ReLU(),
        )

    def forward(self, f: torch.Tensor) -> torch.Tensor:
        return F.normalize(self.ratio * self.net(f) + (1.0 - self.ratio) * f, dim=-1)


class OutputAdapter(nn.Module):
    """Adapters on the chosen side(s) of :class:`OutputFeatures`, and the logits they give."""

    def __init__(self, dim: int, ratio: float = 0.2, reduction: int = 4, on: str = "image") -> None:
        super().__init__()
        if on not in SIDES:
            raise ValueError(f"adapter side must be one of {', '.join(SIDES)}, got {on!r}")
        self.image = ResidualAdapter(dim, ratio, reduction) if on in ("image", "both") else None
        self.text = ResidualAdapter(dim, ratio, reduction) if on in ("text", "both") else None

    def logits(self, feats: OutputFeatures) -> torch.Tensor:
        """``logit_scale * image' @ text'.T``: ``candidates x images x classes``."""
        image = feats.image if self.image is None else self.image(feats.image)
        text = feats.text if self.text is None else self.text(feats.text)
        return feats.logit_scale * torch.einsum("ne,bce->bnc", image, text)

    def n_params(self) -> int:
        return sum(p.numel() for p in self.parameters())

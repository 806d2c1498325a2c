"""A small fake black box for method tests: logits from a fixed random linear map of the prompt."""

from __future__ import annotations

import torch

from craft.blackbox import BackendInfo, OutputFeatures, parse_view_split


class LinearBackend:
    """Logits ``images @ W(ctx)``: depends on the prompt smoothly, so search can make progress."""

    def __init__(self, n_classes: int = 5, width: int = 8, per_split: int = 20, seed: int = 0) -> None:
        g = torch.Generator().manual_seed(seed)
        self.width, self.n_classes = width, n_classes
        self.proj = torch.randn(width, n_classes, generator=g)
        self.images = {s: torch.randn(per_split, n_classes, generator=g) for s in ("train", "val", "test")}
        self.labels = {s: self.images[s].argmax(1) for s in self.images}
        self.calls: list[tuple[int, str]] = []

    def info(self) -> BackendInfo:
        return BackendInfo(self.width, 8, self.n_classes, {k: len(v) for k, v in self.images.items()}, train_views=True)

    def _images(self, split: str) -> torch.Tensor:
        """A registered set, or an augmented view of ``train``: view v > 0 adds noise drawn from v;
        raw views are the features times 2 (their norm), as an engine's unnormalised features."""
        view = parse_view_split(split)
        if view is None:
            return self.images[split]
        v, raw = view
        imgs = self.images["train"]
        if v:
            imgs = imgs + 0.1 * torch.randn(imgs.shape, generator=torch.Generator().manual_seed(v))
        return imgs * 2 if raw else imgs

    def embed_words(self, text: str) -> torch.Tensor:
        g = torch.Generator().manual_seed(len(text))
        return torch.randn(len(text.split()), self.width, generator=g) * 0.1

    def logits(self, contexts, split, indices=None):
        self.calls.append((contexts.shape[0], split))
        imgs = self._images(split) if indices is None else self._images(split)[indices]
        w = torch.tanh(contexts.mean(1) @ self.proj)  # cand x classes
        return 5 * imgs.unsqueeze(0) * w.unsqueeze(1) + imgs.unsqueeze(0), 0

    def features(self, contexts, split, indices=None):
        """Features whose ``image @ text.T`` is exactly :meth:`logits`: images, and per candidate a
        diagonal text matrix of the class weights (logit scale 1, not normalised)."""
        self.calls.append((contexts.shape[0], split))
        imgs = self._images(split) if indices is None else self._images(split)[indices]
        w = torch.tanh(contexts.mean(1) @ self.proj)
        return OutputFeatures(torch.diag_embed(5 * w + 1), imgs, 1.0), 0

    def template_logits(self, template, split):
        # A poor hand-written prompt: the classes' scores rolled by one.
        return self.images[split].roll(1, dims=1), 0

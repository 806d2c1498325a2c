"""The black-box contract: what a method may ask of the vision-language model.

A method never holds the model. It holds a :class:`BlackBox`: it sends continuous
prompt contexts (``candidates x n_ctx x width``) and gets back logits over the classes
of a registered image set, or the output features those logits come from (normalised
text and image embeddings and the logit scale, what an embedding API returns; CBBT's
adapter works on them); both are counted alike. :class:`MeteredBlackBox` wraps any
:class:`Backend` (the open_clip engine, a remote model server, a fake in tests) and counts
every call:

* ``queries`` in the paper's sense: one candidate prompt scored on a set of training
  images (the whole few-shot set for CraFT/BBT, a mini-batch for CBBT). Queries are
  capped by the budget; a call that would pass the cap is refused before any compute.
* model calls: every text sequence and image encoded, budgeted or not (refinement
  epochs and evaluations call the model too, and the cost table reports them).

Image-side capabilities (a backend that publishes ``BackendInfo.image_side``), each explicit and
counted in their own unit, ``query_images`` (images the model encoded to answer), beside text
sequences; budgeted ones (on ``train``) are capped by ``image_budget`` the way queries are by
``budget``, refused before any compute:

* :meth:`MeteredBlackBox.image_logits`: logits of images re-encoded under a :class:`VisualPrompt`
  (shallow prompt tokens appended to a ViT's patch tokens, BPT-VLM; and/or a pixel-space prompt
  added to the images, BlackVIP), per candidate: ``candidates x images`` images encoded, and, when
  budgeted, ``candidates`` queries.
* :meth:`MeteredBlackBox.image_features`: the image embeddings of an image set, as an embedding API
  returns them (LFA): one image encoded per image returned.
* :meth:`MeteredBlackBox.pixels`: the method's own images, preprocessed as the model's input (a
  user holds its data; BlackVIP's coordinator reads them). No model call, nothing counted.

Besides the registered image sets, a backend that says so (``BackendInfo.train_views``) answers
on augmented views of the training images (:func:`view_split`): view ``v`` is a fresh random
augmentation of every training image, the same for every run of the same data, encoded when first
asked for. View 0 is the augmented pass that ``train`` holds. The official CraFT code trains its
refinement module on a fresh view each generation, with image features not normalised.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any, Callable, NamedTuple, Protocol, Sequence, runtime_checkable

import torch

TRAIN = "train"
SPLITS = ("train", "val", "test")
_VIEW_PREFIX = TRAIN + "@"
_RAW_SUFFIX = "/raw"


def view_split(view: int, raw: bool = False) -> str:
    """The image set of augmented view ``view`` of the training images; ``raw``: image features
    not normalised (logits ``logit_scale * image @ text.T`` scale with each image feature's norm)."""
    if view < 0:
        raise ValueError(f"view must be >= 0, got {view}")
    return f"{_VIEW_PREFIX}{view}{_RAW_SUFFIX if raw else ''}"


def parse_view_split(split: str) -> tuple[int, bool] | None:
    """``(view, raw)`` of a :func:`view_split` name; None for any other image set."""
    if not split.startswith(_VIEW_PREFIX):
        return None
    body = split[len(_VIEW_PREFIX):]
    raw = body.endswith(_RAW_SUFFIX)
    digits = body[: -len(_RAW_SUFFIX)] if raw else body
    return (int(digits), raw) if digits.isdigit() else None


class BudgetExceeded(RuntimeError):
    """A call would pass the query budget; nothing was computed."""


@dataclass
class Usage:
    """Counters of one run's use of the black box."""

    queries: int = 0
    unbudgeted_queries: int = 0
    text_sequences: int = 0
    images_encoded: int = 0
    calls: int = 0
    # Images encoded to answer image-side queries and feature requests (all of them), and those of
    # them that were budgeted (capped by the image budget).
    query_images: int = 0
    budgeted_images: int = 0

    def as_dict(self) -> dict[str, int]:
        return asdict(self)


@dataclass(frozen=True)
class BackendInfo:
    """What the black box publishes about itself (no weights)."""

    width: int
    max_ctx: int
    n_classes: int
    split_sizes: dict[str, int] = field(default_factory=dict)
    # Where logits and features arrive, and so where a method's own computation (fitness,
    # refinement module) runs: "cpu" for a remote model, the GPU when the run shares the
    # engine's GPU (see benchmark.model.engine.EngineBackend's output_device).
    device: str = "cpu"
    # Whether the backend answers on augmented views of the training images (view_split).
    train_views: bool = False
    # Image-side capabilities (VisualPrompt, image_features, pixels): whether it serves them, the
    # width of its vision tokens (0: no prompt tokens, a tower that is not a ViT), how many prompt
    # tokens it takes, the shape of one preprocessed image (C, H, W) and each channel's valid range
    # after preprocessing (where a pixel prompt is clipped: [(lo, hi)] per channel).
    image_side: bool = False
    vision_width: int = 0
    max_visual_tokens: int = 0
    image_shape: tuple[int, ...] = ()
    pixel_range: tuple[tuple[float, float], ...] = ()
    # Published statistics of the model's input layers, which BPT-VLM's projections are drawn from
    # (its official code reads them off the weights): token_std (token embedding), patch_mean,
    # patch_std and patch_fan_in (the patch embedding's convolution).
    init_stats: dict[str, float] = field(default_factory=dict)


@dataclass(frozen=True)
class VisualPrompt:
    """The image side of a query, per candidate; at least one part is given.

    ``tokens``: ``candidates x n_tokens x vision_width``, shallow prompt tokens appended after a ViT's
    class and patch tokens (after their positional embeddings, before its first layer norm), the
    same for every image. ``pixels``: added to the preprocessed images (then clipped to
    ``BackendInfo.pixel_range``), either one prompt per candidate (``candidates x C x H x W``) or
    one per candidate and image (``candidates x images x C x H x W``: an input-dependent prompt).
    """

    tokens: torch.Tensor | None = None
    pixels: torch.Tensor | None = None

    @property
    def candidates(self) -> int:
        part = self.tokens if self.tokens is not None else self.pixels
        if part is None:
            raise ValueError("a visual prompt needs tokens or pixels (or both)")
        return int(part.shape[0])


class OutputFeatures(NamedTuple):
    """The model's output embeddings: ``logits = logit_scale * image @ text.T`` per candidate."""

    text: torch.Tensor  # candidates x classes x embed, normalised
    image: torch.Tensor  # images x embed, normalised
    logit_scale: float


@runtime_checkable
class Backend(Protocol):
    """The raw service behind a :class:`MeteredBlackBox`; it counts nothing itself."""

    def info(self) -> BackendInfo: ...

    def embed_words(self, text: str) -> torch.Tensor:
        """Token embeddings (``n_tokens x width``) of ``text``, used to initialise prompts."""
        ...

    def logits(
        self, contexts: torch.Tensor, split: str, indices: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, int]:
        """Logits ``candidates x images x classes`` and the number of images newly encoded."""
        ...

    def features(
        self, contexts: torch.Tensor, split: str, indices: torch.Tensor | None = None
    ) -> tuple[OutputFeatures, int]:
        """The output features behind :meth:`logits`, and the number of images newly encoded."""
        ...

    def template_logits(self, template: str, split: str) -> tuple[torch.Tensor, int]:
        """Logits ``images x classes`` of hand-written prompts ``template.format(classname)``."""
        ...

    # Image-side capabilities, for a backend whose info says ``image_side`` (not part of the runtime
    # check: older backends have none):
    #   image_logits(contexts | None, prompt: VisualPrompt, split, indices) -> (logits, images encoded)
    #     (contexts None: the task's template) ; image_features(split, indices) -> (features, images encoded)
    #   template_features(template) -> classes x embed ; pixels(split, indices) -> images x C x H x W


class BlackBox(Protocol):
    """What methods hold: logits for prompt contexts, and the usage so far."""

    budget: int
    usage: Usage

    @property
    def info(self) -> BackendInfo: ...

    def embed_words(self, text: str) -> torch.Tensor: ...

    def logits(self, contexts: torch.Tensor, split: str = TRAIN, indices: torch.Tensor | None = None, *,
               budgeted: bool = True) -> torch.Tensor: ...

    def features(self, contexts: torch.Tensor, split: str = TRAIN, indices: torch.Tensor | None = None, *,
                 budgeted: bool = True) -> OutputFeatures: ...

    def logits_many(
        self, queries: Sequence[tuple[torch.Tensor, bool]], split: str | Sequence[str] = TRAIN
    ) -> list[torch.Tensor]: ...

    def template_logits(self, template: str, split: str) -> torch.Tensor: ...

    def remaining(self) -> int: ...

    # Image side (see the module's docstring); image_budget None: no cap but the query budget.
    image_budget: int | None

    def image_logits(self, contexts: torch.Tensor | None, prompt: VisualPrompt, split: str = TRAIN,
                     indices: torch.Tensor | None = None, *, budgeted: bool = True) -> torch.Tensor: ...

    def image_features(self, split: str = TRAIN, indices: torch.Tensor | None = None, *,
                       budgeted: bool = True) -> torch.Tensor: ...

    def template_features(self, template: str) -> torch.Tensor: ...

    def pixels(self, split: str = TRAIN, indices: torch.Tensor | None = None) -> torch.Tensor: ...

    def images_remaining(self) -> int | None: ...


class MeteredBlackBox:
    """Counts every call to a :class:`Backend` and enforces the query budget.

    ``budgeted=True`` calls on the training split are the paper's queries and count
    against ``budget``; ``budgeted=False`` calls (the refinement epoch's forward pass,
    evaluations) are recorded as model calls and ``unbudgeted_queries`` only. Budgeted
    calls on any split other than ``train`` are refused: the budget is for training.
    """

    def __init__(self, backend: Backend, budget: int, image_budget: int | None = None) -> None:
        """``image_budget``: the images that budgeted image-side calls may encode (None: no cap of its own)."""
        if budget < 0:
            raise ValueError(f"query budget must be >= 0, got {budget}")
        if image_budget is not None and image_budget < 0:
            raise ValueError(f"image budget must be >= 0 or None, got {image_budget}")
        self._backend = backend
        self._info = backend.info()
        self.budget = int(budget)
        self.image_budget = None if image_budget is None else int(image_budget)
        self.usage = Usage()

    @property
    def info(self) -> BackendInfo:
        return self._info

    def remaining(self) -> int:
        return self.budget - self.usage.queries

    def embed_words(self, text: str) -> torch.Tensor:
        return self._backend.embed_words(text)

    def logits(self, contexts: torch.Tensor, split: str = TRAIN, indices: torch.Tensor | None = None, *,
               budgeted: bool = True) -> torch.Tensor:
        return self._query(self._backend.logits, contexts, split, indices, budgeted)

    def logits_many(
        self, queries: Sequence[tuple[torch.Tensor, bool]], split: str | Sequence[str] = TRAIN
    ) -> list[torch.Tensor]:
        """Several queries ``(contexts, budgeted)``: the logits, the counting and the refusals of as
        many :meth:`logits` calls, made in that order (a query past the budget refuses them all,
        before any compute). ``split``: one image set for all, or one per query. A backend with
        ``logits_many`` answers them in one call (an engine: one text-tower pass for all,
        :class:`benchmark.model.engine.EngineBackend`); others one call each."""
        splits = [split] * len(queries) if isinstance(split, str) else list(split)
        if len(splits) != len(queries):
            raise ValueError(f"{len(queries)} queries but {len(splits)} image sets")
        admitted, budgeted_so_far = [], 0
        for (contexts, budgeted), s in zip(queries, splits):
            admitted.append((self._admit(contexts, s, budgeted, already=budgeted_so_far), budgeted))
            budgeted_so_far += admitted[-1][0].shape[0] if budgeted else 0
        if not admitted:
            return []
        many = getattr(self._backend, "logits_many", None)
        if many is None:  # one call each, each counted once answered, as separate calls are
            outs = []
            for (contexts, budgeted), s in zip(admitted, splits):
                out, images_encoded = self._backend.logits(contexts, s)
                self._record(contexts.shape[0], budgeted=budgeted, images_encoded=images_encoded)
                outs.append(out)
            return outs
        outs, images_encoded = many([c for c, _ in admitted], split if isinstance(split, str) else splits)
        for i, (contexts, budgeted) in enumerate(admitted):  # each query counted as a call of its own
            self._record(contexts.shape[0], budgeted=budgeted, images_encoded=images_encoded if i == 0 else 0)
        return outs

    def features(self, contexts: torch.Tensor, split: str = TRAIN, indices: torch.Tensor | None = None, *,
                 budgeted: bool = True) -> OutputFeatures:
        """Output features of prompt contexts on an image set; counted exactly as :meth:`logits`."""
        return OutputFeatures(*self._query(self._backend.features, contexts, split, indices, budgeted))

    def _query(self, ask: Callable, contexts: torch.Tensor, split: str, indices: torch.Tensor | None,
               budgeted: bool) -> Any:
        """One call of the backend's ``ask`` (its logits or features): admitted before, counted after."""
        contexts = self._admit(contexts, split, budgeted)
        out, images_encoded = ask(contexts, split, indices)
        self._record(contexts.shape[0], budgeted=budgeted, images_encoded=images_encoded)
        return out

    def _admit(self, contexts: torch.Tensor, split: str, budgeted: bool, already: int = 0) -> torch.Tensor:
        """Checked contexts; refuses, before any compute, a budgeted call off ``train`` or past the budget
        (``already``: budgeted queries admitted with it in one :meth:`logits_many`)."""
        contexts = self._check_contexts(contexts)
        self._check_split(split)
        n_cand = contexts.shape[0]
        if budgeted:
            if split != TRAIN:
                raise ValueError(
                    f"budgeted queries score training images only, got split {split!r}; "
                    "pass budgeted=False for evaluations"
                )
            if self.usage.queries + already + n_cand > self.budget:
                raise BudgetExceeded(
                    f"query budget {self.budget} would be exceeded: {self.usage.queries} used, "
                    f"{already + n_cand} candidate(s) asked, {self.remaining()} left"
                )
        return contexts

    def template_logits(self, template: str, split: str) -> torch.Tensor:
        """Zero-shot logits of a hand-written template; one unbudgeted query."""
        self._check_split(split)
        out, images_encoded = self._backend.template_logits(template, split)
        self._record(1, budgeted=False, images_encoded=images_encoded)
        return out

    # ----------------------------------------------------------------- image side
    def images_remaining(self) -> int | None:
        """Images that budgeted image-side calls may still encode (None: no image budget)."""
        return None if self.image_budget is None else self.image_budget - self.usage.budgeted_images

    def image_logits(self, contexts: torch.Tensor | None, prompt: VisualPrompt, split: str = TRAIN,
                     indices: torch.Tensor | None = None, *, budgeted: bool = True) -> torch.Tensor:
        """Logits ``candidates x images x classes`` of images re-encoded under ``prompt`` (one visual prompt
        per candidate), scored against the prompt contexts ``contexts`` (one per candidate, or one for
        all; None: the task's template). Counts ``candidates`` queries when budgeted, and
        ``candidates x images`` images encoded; refused before any compute past either budget."""
        self._require_image_side()
        n_cand = prompt.candidates
        prompt = self._check_visual(prompt, split, indices)
        if contexts is not None:
            contexts = self._check_contexts(contexts)
            if contexts.shape[0] not in (1, n_cand):
                raise ValueError(f"{contexts.shape[0]} prompt contexts for {n_cand} visual prompts; give one or one each")
        n_img = self._n_images(split, indices)
        self._admit_images(n_cand * n_img, split, budgeted, queries=n_cand)
        out, encoded = self._backend.image_logits(contexts, prompt, split, indices)  # type: ignore[attr-defined]
        n_text = 1 if contexts is None else contexts.shape[0]  # the template's class prompts: one candidate's worth
        self._record_images(n_cand * n_img, budgeted, queries=n_cand, text_candidates=n_text, cache_encoded=0)
        return out

    def image_features(self, split: str = TRAIN, indices: torch.Tensor | None = None, *,
                       budgeted: bool = True) -> torch.Tensor:
        """Normalised image embeddings ``images x embed`` of an image set (rows ``indices``): what an
        embedding API returns. One image encoded per image returned, budgeted on ``train``."""
        self._require_image_side()
        self._check_split(split)
        n_img = self._n_images(split, indices)
        self._admit_images(n_img, split, budgeted, queries=0)
        out, cache_encoded = self._backend.image_features(split, indices)  # type: ignore[attr-defined]
        self._record_images(n_img, budgeted, queries=0, text_candidates=0, cache_encoded=cache_encoded)
        return out

    def template_features(self, template: str) -> torch.Tensor:
        """Normalised text embeddings ``classes x embed`` of ``template.format(classname)``; one unbudgeted query."""
        self._require_image_side()
        out = self._backend.template_features(template)  # type: ignore[attr-defined]
        self._record(1, budgeted=False, images_encoded=0)
        return out

    def pixels(self, split: str = TRAIN, indices: torch.Tensor | None = None) -> torch.Tensor:
        """The method's own images of an image set, preprocessed as the model's input (``images x C x H x W``;
        the training set's augmented pass as ``train`` holds it). The user's data: no model call."""
        self._require_image_side()
        self._check_split(split)
        return self._backend.pixels(split, indices)  # type: ignore[attr-defined]

    def _require_image_side(self) -> None:
        if not self._info.image_side:
            raise ValueError("this black box serves no image-side queries (BackendInfo.image_side is False)")

    def _n_images(self, split: str, indices: torch.Tensor | None) -> int:
        if indices is not None:
            return int(torch.as_tensor(indices).numel())
        if split not in self._info.split_sizes:
            raise ValueError(f"image set {split!r} has no fixed size; image-side queries take registered sets: "
                             f"{sorted(self._info.split_sizes)}")
        return int(self._info.split_sizes[split])

    def _check_visual(self, prompt: VisualPrompt, split: str, indices: torch.Tensor | None) -> VisualPrompt:
        self._check_split(split)
        info, n_cand = self._info, prompt.candidates
        if prompt.tokens is not None:
            t = prompt.tokens
            if info.vision_width == 0:
                raise ValueError("this black box's image tower takes no prompt tokens (not a ViT); use a pixel prompt")
            if t.dim() != 3 or t.shape[2] != info.vision_width or not 1 <= t.shape[1] <= info.max_visual_tokens:
                raise ValueError(f"visual prompt tokens must have shape (candidates, n_tokens <= {info.max_visual_tokens}, "
                                 f"{info.vision_width}), got {tuple(t.shape)}")
        if prompt.pixels is not None:
            p, shape = prompt.pixels, tuple(info.image_shape)
            n_img = self._n_images(split, indices)
            if tuple(p.shape) not in ((n_cand, *shape), (n_cand, n_img, *shape)):
                raise ValueError(f"a pixel prompt must have shape {(n_cand, *shape)} or {(n_cand, n_img, *shape)} "
                                 f"(candidates[, images], C, H, W), got {tuple(p.shape)}")
        return prompt

    def _admit_images(self, n_images: int, split: str, budgeted: bool, queries: int) -> None:
        """Refuse, before any compute, a budgeted image-side call off ``train``, past the query budget or
        past the image budget."""
        if not budgeted:
            return
        if split != TRAIN:
            raise ValueError(f"budgeted queries score training images only, got split {split!r}; "
                             "pass budgeted=False for evaluations")
        if self.usage.queries + queries > self.budget:
            raise BudgetExceeded(f"query budget {self.budget} would be exceeded: {self.usage.queries} used, "
                                 f"{queries} candidate(s) asked, {self.remaining()} left")
        left = self.images_remaining()
        if left is not None and n_images > left:
            raise BudgetExceeded(f"image budget {self.image_budget} would be exceeded: {self.usage.budgeted_images} "
                                 f"images encoded, {n_images} asked, {left} left")

    def _record_images(self, n_images: int, budgeted: bool, *, queries: int, text_candidates: int,
                       cache_encoded: int) -> None:
        if budgeted:
            self.usage.queries += queries
            self.usage.budgeted_images += n_images
        else:
            self.usage.unbudgeted_queries += queries
        self.usage.query_images += n_images
        self.usage.text_sequences += text_candidates * self._info.n_classes
        self.usage.images_encoded += int(cache_encoded)
        self.usage.calls += 1

    def _check_split(self, split: str) -> None:
        if split in self._info.split_sizes:
            return
        if parse_view_split(split) is not None:
            if self._info.train_views:
                return
            raise ValueError(
                f"image set {split!r} is an augmented view of the training images, which this black box "
                "does not serve (a method's refine_views: cached uses the training pass instead)"
            )
        raise ValueError(f"unknown image set {split!r}; registered: {sorted(self._info.split_sizes)}")

    def _record(self, n_cand: int, *, budgeted: bool, images_encoded: int) -> None:
        if budgeted:
            self.usage.queries += n_cand
        else:
            self.usage.unbudgeted_queries += n_cand
        self.usage.text_sequences += n_cand * self._info.n_classes
        self.usage.images_encoded += int(images_encoded)
        self.usage.calls += 1

    def _check_contexts(self, contexts: torch.Tensor) -> torch.Tensor:
        if contexts.dim() == 2:
            contexts = contexts.unsqueeze(0)
        width, max_ctx = self._info.width, self._info.max_ctx
        if contexts.dim() != 3 or contexts.shape[2] != width or not 1 <= contexts.shape[1] <= max_ctx:
            raise ValueError(
                f"contexts must have shape (candidates, n_ctx <= {max_ctx}, {width}), "
                f"got {tuple(contexts.shape)}"
            )
        return contexts

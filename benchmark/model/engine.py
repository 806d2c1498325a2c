"""The open_clip engine behind the black-box contract.

A prompt for class ``c`` is ``[SOS] + ctx + embed("<classname>.") + [EOS]``: one shared
context ``ctx`` (``n_ctx x width``) for all classes, the class part embedded once per class
list and reused. The text feature of each prompt is gathered at its own end-of-text token.
Every text reaches the tokenizer through :meth:`ClipEngine.tokenize`, which writes class names'
underscores as spaces, as the official codes do (:func:`spoken`).

Every candidate of a call goes through one forward pass (chunked, chunks sized by device memory),
each batch cut to its longest real prompt (the causal mask makes positions after a prompt's end
irrelevant to its feature), in bf16 autocast on a GPU (``precision="fp32"`` turns it off),
optionally ``torch.compile``-d. On open_clip's default text blocks, the ``[SOS] + ctx`` prefix
shared by a candidate's prompts is run once per candidate, not once per class
(``benchmark.model.text_tower``). The official code's path (one candidate at a time, fp32,
padded to 77 tokens) is measurement's reference: :class:`measurement.official_path.OfficialEngine`.
"""

from __future__ import annotations

import contextlib
import threading
from dataclasses import dataclass, field
from typing import Callable, Sequence

import torch
import torch.nn.functional as F

from benchmark.datasets.images import DecodedImages
from benchmark.datasets.transforms import apply_batched
from benchmark.model import text_tower
from benchmark.model.pixels import PixelSet, as_pixel_set
from benchmark.model.loading import LoadedModel
from craft.blackbox import BackendInfo, OutputFeatures, VisualPrompt, parse_view_split
from craft.waits import blocked


MAX_VISUAL_TOKENS = 64  # shallow visual prompt tokens an image-side query may append (BPT-VLM uses 5)
# Images per image-tower pass of an image-side query (candidates x images, chunked by candidates).
_IMAGES_PER_PASS = {"cpu": 2048, "cuda": 16384}
PRECISIONS = ("auto", "bf16", "fp32")  # of the fast path on a GPU; see ClipEngine
# Attention kernels the fast path may be held to, by their torch.nn.attention.SDPBackend names.
_SDP_BACKENDS = {"math": "MATH", "efficient": "EFFICIENT_ATTENTION", "cudnn": "CUDNN_ATTENTION", "flash": "FLASH_ATTENTION"}
ATTENTION_KERNELS = ("auto", *_SDP_BACKENDS)  # auto: torch's choice


def spoken(text: str) -> str:
    """``text`` with underscores as spaces: how the official codes put a class name into a prompt.

    CoOp's split files name classes ``american_bulldog``, ``apple_pie``, ``Apply_Eye_Makeup``;
    CraFT's prompt learner (``main_craft.py``), CoOp's (``trainers/coop.py``, ``zsclip.py``) and
    CBBT's (``cooppara.py``) all ``replace("_", " ")`` before tokenizing, class names and
    ``ctx_init`` alike. The datasets keep the split's names (tables show them); only text does not.
    """
    return text.replace("_", " ")


@dataclass
class ClassPart:
    """Token ids and embeddings of ``"<classname>." [EOS]`` for each class of a task."""

    classnames: tuple[str, ...]
    ids: torch.Tensor  # C x (context_length - 1): class tokens, EOS, padding
    lengths: torch.Tensor  # C: number of class tokens (EOS excluded)
    fast_embeddings: torch.Tensor  # C x (max_len + 1) x width: trimmed to the longest
    # max(lengths), read from the device once: reading it per call (a GPU tensor's .max() as an
    # int) waited for everything queued on the GPU, every run's work included, at each query.
    max_len: int
    # n_ctx -> fast_embeddings plus the positional embedding of positions 1+n_ctx..
    suffixes: dict[int, torch.Tensor] = field(default_factory=dict, repr=False)
    # n_ctx -> text_tower.class_state of that suffix (the first block's per-class work)
    states: dict[int, tuple[torch.Tensor, ...]] = field(default_factory=dict, repr=False)


class ClipEngine:
    """Text and image encoding for prompt contexts on one open_clip CLIP model."""

    def __init__(
        self,
        loaded: LoadedModel,
        device: str | torch.device = "cpu",
        compile: bool | str = False,
        max_sequences: int | None = None,
        precision: str = "auto",
        attention: str = "auto",
    ) -> None:
        """``compile``: False, True (``torch.compile`` default mode) or a ``torch.compile`` mode name.
        ``max_sequences``: text sequences per forward pass; None sizes chunks by device memory.
        ``precision`` on a GPU: ``auto`` or ``bf16`` (bf16 autocast), ``fp32`` (none; CPUs are always
        fp32). A sweep picks it per method (:meth:`benchmark.serve.options.ServerOptions.precision_for`).
        ``attention``: the kernel of the text attention, of :data:`ATTENTION_KERNELS` (``auto``: torch's
        choice; one that cannot run a call fails it)."""
        if precision not in PRECISIONS:
            raise ValueError(f"precision must be one of {', '.join(PRECISIONS)}, got {precision!r}")
        if attention not in ATTENTION_KERNELS:
            raise ValueError(f"attention must be one of {', '.join(ATTENTION_KERNELS)}, got {attention!r}")
        model = loaded.model
        for attr in ("token_embedding", "positional_embedding", "transformer", "ln_final", "attn_mask"):
            if not hasattr(model, attr):
                raise ValueError(
                    f"backbone {loaded.backbone} has no plain CLIP text tower (missing {attr}); "
                    "only open_clip CLIP models with a causal text transformer are supported"
                )
        if getattr(model, "text_pool_type", "argmax") != "argmax":
            raise ValueError(f"backbone {loaded.backbone}: text pooling {model.text_pool_type!r} is not EOT pooling")
        self.loaded = loaded
        self.device = torch.device(device)
        self.model = model.to(self.device).eval()
        for p in self.model.parameters():
            p.requires_grad_(False)
        self.precision = precision
        self.attention = attention
        self.bf16 = self.device.type == "cuda" and precision != "fp32"  # autocast on
        self.context_length = int(model.positional_embedding.shape[0])
        self.width = int(model.token_embedding.weight.shape[1])
        self.max_sequences = max_sequences
        self._chunk_bytes = _chunk_budget_bytes(self.device)
        self.logit_scale = float(model.logit_scale.exp().item())
        self.prefix_shared = text_tower.supports(model)
        self.compile_mode = ("default" if compile is True else compile) or None
        self._encode, self._encode_prefix = self._encode_embeddings, self._prefix_features
        if self.compile_mode:
            # One graph for every batch size, class count and length (see _one_graph, and
            # _prefix_shared_text for single candidates).
            opts = {"dynamic": True} | ({} if self.compile_mode == "default" else {"mode": self.compile_mode})
            graphs = uses_cuda_graphs(self.compile_mode)
            self._encode = _one_graph(torch.compile(self._encode_embeddings, **opts), graphs)
            self._encode_prefix = _one_graph(torch.compile(self._prefix_features, **opts), graphs)
        self._class_parts: dict[tuple[str, ...], ClassPart] = {}
        self.query_images_encoded = 0  # images encoded by image-side queries (encode_prompted)
        # decoded training images, augmented afresh for each view (benchmark.model.task)
        self.decoded = DecodedImages()
        tok = loaded.tokenizer("")[0]
        self.sot_id, self.eot_id = int(tok[0]), int(tok[1])

    # ----------------------------------------------------------------- words and classes
    def tokenize(self, texts: Sequence[str]) -> torch.Tensor:
        """Token ids (``len(texts) x context_length``) of ``texts`` as :func:`spoken` writes them:
        the one way text reaches the model (class parts, templates, initial words)."""
        return self.loaded.tokenizer([spoken(t) for t in texts])

    def _tokens(self, text: str) -> torch.Tensor:
        """Token ids of ``text`` without SOS/EOS."""
        ids = self.tokenize([text])[0]
        end = int((ids == self.eot_id).nonzero()[0])
        return ids[1:end]

    @torch.no_grad()
    def embed_words(self, text: str) -> torch.Tensor:
        """Token embeddings (``n_tokens x width``) of ``text``: the initial prompt ``p0``."""
        return self.model.token_embedding(self._tokens(text).to(self.device)).float().cpu()

    @torch.no_grad()
    def class_part(self, classnames: Sequence[str]) -> ClassPart:
        """The embedded ``"<classname>." [EOS]`` of each class, computed once per class list."""
        key = tuple(classnames)
        if key not in self._class_parts:
            ids = self.tokenize([f"{name}." for name in key])[:, 1:].to(self.device)
            lengths = (ids == self.eot_id).int().argmax(dim=1)
            longest = int(lengths.max())
            trimmed = ids[:, : longest + 1]
            self._class_parts[key] = ClassPart(key, ids, lengths, self.model.token_embedding(trimmed), longest)
        return self._class_parts[key]

    def max_ctx(self, part: ClassPart) -> int:
        """Longest context that still fits every class's prompt in the context length."""
        return self.context_length - 2 - part.max_len

    # ----------------------------------------------------------------- text features
    def _encode_embeddings(self, x: torch.Tensor, eot: torch.Tensor) -> torch.Tensor:
        m = self.model
        length = x.shape[1]
        x = x + m.positional_embedding[:length].to(x.dtype)
        x = m.transformer(x, attn_mask=m.attn_mask[:length, :length].to(x.dtype))
        x = m.ln_final(x)
        x = x[torch.arange(x.shape[0], device=x.device), eot]
        proj = m.text_projection
        if proj is not None:
            x = proj(x) if isinstance(proj, torch.nn.Linear) else x @ proj
        return x

    def _check_fits(self, n_ctx: int, part: ClassPart) -> None:
        if n_ctx > self.max_ctx(part):
            raise ValueError(
                f"{n_ctx} context tokens do not fit: the longest class prompt leaves room for {self.max_ctx(part)}"
            )

    def _sequences(self, contexts: torch.Tensor, part: ClassPart, full: bool) -> tuple[torch.Tensor, torch.Tensor]:
        """Prompt embeddings (``B*C x L x width``) and each prompt's EOT position."""
        n_cand, n_ctx, width = contexts.shape
        n_cls = len(part.classnames)
        self._check_fits(n_ctx, part)
        if full:
            suffix = self.model.token_embedding(part.ids[:, : self.context_length - 1 - n_ctx])
        else:
            suffix = part.fast_embeddings
        sos = self.model.token_embedding.weight[self.sot_id].to(contexts.dtype)
        x = torch.cat(
            [
                sos.expand(n_cand, n_cls, 1, width),
                contexts.unsqueeze(1).expand(n_cand, n_cls, n_ctx, width),
                suffix.to(contexts.dtype).unsqueeze(0).expand(n_cand, n_cls, -1, width),
            ],
            dim=2,
        ).reshape(n_cand * n_cls, -1, width)
        eot = (1 + n_ctx + part.lengths).repeat(n_cand)
        return x, eot

    @torch.no_grad()
    def text_features(self, contexts: torch.Tensor, part: ClassPart) -> torch.Tensor:
        """Normalised text features ``candidates x classes x embed`` for prompt contexts."""
        contexts = contexts.to(self.device, torch.float32)
        n_cand, n_cls = contexts.shape[0], len(part.classnames)
        with self._text_precision():
            if self.prefix_shared:
                feats = self._prefix_shared_text(contexts, part)
            else:
                x, eot = self._sequences(contexts, part, full=False)
                step = self.chunk_sequences(x.shape[1])
                feats = torch.cat(
                    [self._encode(x[i : i + step], eot[i : i + step]).float() for i in range(0, x.shape[0], step)]
                )
        return F.normalize(feats, dim=-1).reshape(n_cand, n_cls, -1)

    def _autocast(self) -> torch.autocast:
        return torch.autocast("cuda", dtype=torch.bfloat16, enabled=self.bf16)

    def _text_precision(self) -> contextlib.AbstractContextManager:
        """The text tower's: bf16 autocast where the engine computes in bf16, and the attention
        kernel it is held to."""
        stack = contextlib.ExitStack()
        stack.enter_context(self._autocast())
        if self.attention != "auto":
            from torch.nn.attention import SDPBackend, sdpa_kernel

            stack.enter_context(sdpa_kernel(getattr(SDPBackend, _SDP_BACKENDS[self.attention])))
        return stack

    def chunk_sequences(self, seq_len: int) -> int:
        """Text sequences per forward pass: ``max_sequences``, or what the memory budget holds."""
        if self.max_sequences:
            return self.max_sequences
        # About 64 bytes of activations per token and channel at the peak of a block (fp32
        # residual, bf16 or fp32 projections, the MLP's 4x hidden layer), with margin; at least
        # 256 sequences, so that the matrix products stay large (with 2 CPU threads, 51-sequence
        # chunks of ViT-B-16 ran at half the speed of 256-sequence ones).
        return int(min(65536, max(256, self._chunk_bytes // (64 * seq_len * self.width))))

    def _suffix(self, part: ClassPart, n_ctx: int) -> torch.Tensor:
        """The class parts with the positional embedding of positions ``1 + n_ctx ..`` added (cached)."""
        if n_ctx not in part.suffixes:
            pos = self.model.positional_embedding[1 + n_ctx : 1 + n_ctx + part.fast_embeddings.shape[1]]
            part.suffixes[n_ctx] = (part.fast_embeddings + pos).contiguous()
        return part.suffixes[n_ctx]

    def _class_state(self, part: ClassPart, n_ctx: int) -> tuple[torch.Tensor, ...] | None:
        """:func:`text_tower.class_state` of the class parts (cached); None for a one-block tower."""
        if len(self.model.transformer.resblocks) < 2:
            return None
        if n_ctx not in part.states:
            state = text_tower.class_state(self.model, self._suffix(part, n_ctx))
            if self.compile_mode:
                # Contiguous, so that a chunk of classes has strides that do not depend on the class
                # count: the compiled graph otherwise guarded on a stride equal to the first call's
                # classes x suffix length x width, and a later chunk of fewer classes compiled again.
                # (Eager, the layout stays as computed: the CPU results do not move.)
                state = tuple(t.contiguous() for t in state)
            part.states[n_ctx] = state
        return part.states[n_ctx]

    def _prefix_features(
        self, prefix: torch.Tensor, suffix: torch.Tensor, eot: torch.Tensor, *state: torch.Tensor
    ) -> torch.Tensor:
        return text_tower.prefix_shared_features(self.model, prefix, suffix, eot, tuple(state) or None)

    def _prefix_shared_text(self, contexts: torch.Tensor, part: ClassPart) -> torch.Tensor:
        """Features ``B*C x embed`` through :mod:`benchmark.model.text_tower`, chunked by candidates and classes."""
        n_cand, n_ctx, _ = contexts.shape
        n_cls = len(part.classnames)
        self._check_fits(n_ctx, part)
        pos = self.model.positional_embedding
        sos = (self.model.token_embedding.weight[self.sot_id] + pos[0]).expand(n_cand, 1, -1)
        prefix = torch.cat([sos, contexts + pos[1 : 1 + n_ctx]], dim=1)
        suffix, eot = self._suffix(part, n_ctx), part.lengths
        state = self._class_state(part, n_ctx) or ()
        limit = self.chunk_sequences(1 + n_ctx + suffix.shape[1])
        cand_step, cls_step = max(1, limit // n_cls), min(n_cls, limit)
        if self.compile_mode:
            # No chunk of one candidate or one class: its size-1 dimension would make a graph of
            # its own. A last chunk of one candidate gets a copy of its candidate (dropped after),
            # as does a lone one; classes are cut so that no chunk holds one.
            if cand_step == 1:
                cand_step, cls_step = 2, max(1, cls_step // 2)
            if n_cand % cand_step == 1:
                prefix = torch.cat([prefix, prefix[-1:]])
            cls_step = _step_without_ones(n_cls, cls_step)
        out = []
        for b in range(0, prefix.shape[0], cand_step):
            p = prefix[b : b + cand_step]
            parts = [
                self._encode_prefix(p, suffix[c : c + cls_step], eot[c : c + cls_step], *(t[c : c + cls_step] for t in state))
                .float().unflatten(0, (p.shape[0], -1))
                for c in range(0, n_cls, cls_step)
            ]
            out.append(torch.cat(parts, dim=1))
        return torch.cat(out)[:n_cand].flatten(0, 1)

    def text_features_grad(self, contexts: torch.Tensor, part: ClassPart) -> torch.Tensor:
        """Normalised text features that autograd can differentiate with respect to ``contexts``.

        The white-box path (CoOp, and the true gradient the zeroth-order tests compare with):
        the fast path's prompt assembly and EOT gather in one pass, bf16 autocast on GPU unless
        ``precision="fp32"``.
        """
        contexts = contexts.to(self.device)
        n_cand, n_cls = contexts.shape[0], len(part.classnames)
        x, eot = self._sequences(contexts.float(), part, full=False)
        with self._text_precision():
            out = self._encode_embeddings(x, eot).float()
        return F.normalize(out, dim=-1).reshape(n_cand, n_cls, -1)

    @torch.no_grad()
    def template_features(self, template: str, classnames: Sequence[str]) -> torch.Tensor:
        """Normalised text features ``classes x embed`` of hand-written prompts (zero-shot CLIP)."""
        tokens = self.tokenize([template.format(name) for name in classnames]).to(self.device)
        return F.normalize(self.model.encode_text(tokens).float(), dim=-1)

    # ----------------------------------------------------------------- images
    @torch.no_grad()
    def encode_images(
        self, images: Sequence, transform: Callable, batch_size: int = 256, loader: Callable | None = None,
        normalize: bool = True,
    ) -> torch.Tensor:
        """Image features (``N x embed``, fp32, on the engine's device), normalised unless ``normalize`` is False."""
        if loader is None:
            from benchmark.datasets.images import load_image as loader
        feats = []
        for start in range(0, len(images), batch_size):
            batch = apply_batched(transform, [loader(p) for p in images[start : start + batch_size]])
            feats.append(self.encode_pixels(batch, normalize=False))
        if not feats:
            return torch.zeros(0, self.model.text_projection.shape[-1] if self.model.text_projection is not None else self.width, device=self.device)
        out = torch.cat(feats)
        return F.normalize(out, dim=-1) if normalize else out

    @torch.no_grad()
    def encode_pixels(self, pixels: torch.Tensor, normalize: bool = True) -> torch.Tensor:
        """Image features (fp32) of preprocessed images (``N x C x H x W``), in one pass."""
        with self._autocast():
            out = self.model.encode_image(pixels.to(self.device)).float()
        return F.normalize(out, dim=-1) if normalize else out

    # ----------------------------------------------------------------- image-side queries
    def vision_tokens(self) -> bool:
        """Whether the image tower is an open_clip ViT that takes shallow prompt tokens."""
        v = self.model.visual
        return all(hasattr(v, a) for a in ("conv1", "class_embedding", "positional_embedding", "ln_pre", "transformer", "_pool"))

    def vision_width(self) -> int:
        return int(self.model.visual.conv1.out_channels) if self.vision_tokens() else 0

    def init_stats(self) -> dict[str, float]:
        """Statistics of the input layers that BPT-VLM's official code draws its projections from."""
        out = {"token_std": float(self.model.token_embedding.weight.float().std())}
        if self.vision_tokens():
            w = self.model.visual.conv1.weight.float()
            out.update(patch_mean=float(w.mean()), patch_std=float(w.std()), patch_fan_in=float(w[0].numel()))
        return out

    def _vision_prompted(self, x: torch.Tensor, tokens: torch.Tensor | None) -> torch.Tensor:
        """open_clip's ViT forward with prompt tokens (``batch x n x width``) appended after the class and
        patch tokens, after their positional embeddings and before ``ln_pre`` (BPT-VLM's shallow
        prompt, ``model/shallow_encoder.py``); without tokens, ``encode_image`` itself."""
        v = self.model.visual
        if tokens is None:
            return self.model.encode_image(x)
        x = v.conv1(x)
        x = x.reshape(x.shape[0], x.shape[1], -1).permute(0, 2, 1)
        cls = v.class_embedding.to(x.dtype).expand(x.shape[0], 1, -1)
        x = torch.cat([cls, x], dim=1) + v.positional_embedding.to(x.dtype)
        x = torch.cat([x, tokens.to(x.dtype)], dim=1)
        x = v.ln_pre(v.patch_dropout(x))
        x = v.transformer(x)
        pooled, _ = v._pool(x)
        return pooled @ v.proj if v.proj is not None else pooled

    @torch.no_grad()
    def prompted_pass(self, x: torch.Tensor, tokens: torch.Tensor | None) -> torch.Tensor:
        """Normalised features of one image-tower pass: preprocessed images ``x`` (``rows x C x H x W``,
        on the device) with shallow prompt tokens (``rows x n x width``) or none. Rows do not interact,
        so passes of several runs can be merged (:class:`benchmark.serve.batching.QueryBatcher`)."""
        with self._autocast():
            feats = self._vision_prompted(x, tokens).float()
        return F.normalize(feats, dim=-1)

    @torch.no_grad()
    def encode_prompted(self, images: "PixelSet | torch.Tensor", prompt: VisualPrompt,
                        pixel_range: Sequence[tuple[float, float]],
                        tower: Callable[[torch.Tensor, torch.Tensor | None], torch.Tensor] | None = None) -> torch.Tensor:
        """Normalised features ``candidates x images x embed`` of preprocessed ``images`` under each
        candidate's visual prompt: pixels added (clipped to ``pixel_range`` per channel, as BlackVIP's
        ``clip_clipping``), tokens appended. ``_IMAGES_PER_PASS`` images a pass: the images in chunks
        (an evaluation split of 50,000 never sits on the device whole), each chunk under as many
        candidates as fit; :attr:`query_images_encoded` counts every image encoded. ``tower`` runs
        each pass (default :meth:`prompted_pass`; a model server's merges concurrent runs' passes)."""
        tower = tower or self.prompted_pass
        images = as_pixel_set(images)
        n_img, n_cand = len(images), prompt.candidates
        if n_cand == 0 or n_img == 0:
            return torch.zeros(n_cand, n_img, 0, device=self.device)
        per_pass = images_per_pass(self.device)
        img_step = max(1, min(n_img, per_pass))
        cand_step = max(1, per_pass // img_step)
        lo = torch.tensor([r[0] for r in pixel_range], device=self.device).view(1, 1, -1, 1, 1)
        hi = torch.tensor([r[1] for r in pixel_range], device=self.device).view(1, 1, -1, 1, 1)
        columns = []
        for i in range(0, n_img, img_step):
            chunk = images.rows(slice(i, i + img_step), self.device)
            ni = chunk.shape[0]
            out = []
            for b in range(0, n_cand, cand_step):
                nb = min(cand_step, n_cand - b)
                x = chunk.unsqueeze(0).expand(nb, *chunk.shape)
                if prompt.pixels is not None:
                    px = prompt.pixels[b : b + nb].to(self.device, torch.float32)
                    px = px.unsqueeze(1) if px.dim() == 4 else px[:, i : i + ni]  # one prompt per image: this chunk's
                    x = torch.maximum(torch.minimum(x + px, hi), lo)
                tokens = None
                if prompt.tokens is not None:
                    t = prompt.tokens[b : b + nb].to(self.device, torch.float32)
                    tokens = t.repeat_interleave(ni, dim=0)
                feats = tower(x.reshape(nb * ni, *chunk.shape[1:]), tokens)
                self.query_images_encoded += nb * ni
                out.append(feats.view(nb, ni, -1))
            columns.append(torch.cat(out))
        return torch.cat(columns, dim=1)

    def logits(self, image_features: torch.Tensor, text_features: torch.Tensor) -> torch.Tensor:
        """``logit_scale * cos``: ``candidates x images x classes`` (or ``images x classes``)."""
        if text_features.dim() == 2:
            return self.logit_scale * image_features @ text_features.T
        return self.logit_scale * torch.einsum("ne,bce->bnc", image_features, text_features)


def images_per_pass(device: torch.device) -> int:
    """Images in one image-tower pass of image-side queries on ``device``."""
    return _IMAGES_PER_PASS.get(device.type, 2048)


def _step_without_ones(n: int, step: int) -> int:
    """A chunk size for ``n`` items near ``step`` that leaves no chunk of one item: the largest not
    above ``step`` that does, else the smallest above it (``n`` itself at most)."""
    if n <= step:
        return n
    for s in range(step, 1, -1):
        if n % s != 1:
            return s
    return next(s for s in range(step + 1, n + 1) if n % s != 1)


def uses_cuda_graphs(mode: str | None) -> bool:
    """Whether ``torch.compile`` mode ``mode`` replays its kernels as CUDA graphs on a GPU
    (``reduce-overhead``, ``max-autotune``); raises for a mode torch does not know."""
    from torch._inductor import list_mode_options

    return bool(mode) and bool(list_mode_options(mode, dynamic=True).get("triton.cudagraphs", False))


def _one_graph(compiled: Callable[..., torch.Tensor], cuda_graphs: bool = False) -> Callable[..., torch.Tensor]:
    """``compiled`` (a ``torch.compile(dynamic=True)`` function) called without duck sizing.

    By default the compiler gives input dimensions of equal size one symbol, and code that fixes
    one of them fixes both: on the built-in model a chunk of 16 candidates shared its symbol with
    the 16-wide attention heads, so the graph held for 16 candidates only and every other chunk
    size compiled again (a minute or more on ViT-B-16). Without it the graph
    compiled for the first call serves every candidate count, class count and class-name length
    (``tests/test_engine.py``).

    Inductor's matmul padding (``shape_padding``, CUDA in bf16 only) is off as well: to judge
    whether a product is compute-bound it compares symbolic sizes, and each comparison became a
    guard (``classes x suffix length >= 20``): every new class count compiled again. It pads only dimensions not multiples of 8, and the
    static ones here (widths) all are. ``tests/test_gpu.py`` counts the graphs on CUDA.

    ``cuda_graphs`` (a mode that replays CUDA graphs): the result is copied out of the graphs'
    memory, which the next call overwrites, before it is returned; callers make several calls
    before they use the first result (chunks of classes), and interleaved runs one after another.
    The copy is the features only (sequences x embed), a pass's last and smallest tensor.
    """
    from torch._inductor import config as inductor_config
    from torch.fx.experimental import _config as fx_config

    def call(*args: torch.Tensor) -> torch.Tensor:
        with fx_config.patch(use_duck_shape=False), inductor_config.patch(shape_padding=False):
            out = compiled(*args)
        return out.clone() if cuda_graphs else out

    return call


def _chunk_budget_bytes(device: torch.device) -> int:
    """Activation memory one forward pass may use: a quarter of the GPU's free memory; on CPU
    64 MiB, about 1,000 built-in-model prompts: near the fastest chunk size, and cache-sized (the MLPs
    run in row blocks inside it, see ``benchmark.model.text_tower.MLP_ROWS``)."""
    if device.type == "cuda":
        free, _ = torch.cuda.mem_get_info(device)
        return free // 4
    return 64 * 2**20


class TrainViews:
    """Augmented views of the training images (:func:`craft.blackbox.view_split`), encoded on demand.

    ``encode(view)`` returns view ``view``'s raw image features (not normalised) and the number of
    images it encoded (0 when read from the feature cache). With a deterministic training transform
    every view is view 0. The last ``keep`` views stay in memory: the runs sharing a task on a model
    server ask for the same views, generation after generation.
    """

    def __init__(self, encode: Callable[[int], tuple[torch.Tensor, int]], varies: bool, keep: int = 4) -> None:
        self._encode = encode
        self.varies = varies
        self._keep = keep
        self._held: dict[int, torch.Tensor] = {}
        self._lock = threading.Lock()

    def get(self, view: int) -> tuple[torch.Tensor, int]:
        """View ``view``'s raw features and the images encoded to make them."""
        view = view if self.varies else 0
        with self._lock:
            if view in self._held:
                return self._held[view], 0
            feats, encoded = self._encode(view)
            self._held[view] = feats
            while len(self._held) > self._keep:
                self._held.pop(next(iter(self._held)))
            return feats, encoded


@dataclass
class TaskData:
    """One run's data on the model's side: class names, template and image features, which stay here,
    and the labels, label subspaces and encoding count that the method's side is sent."""

    classnames: list[str]
    template: str
    features: dict[str, torch.Tensor]  # split -> N x embed, normalised
    train_views: TrainViews | None = None
    labels: dict[str, torch.Tensor] = field(default_factory=dict)  # split -> N labels
    class_subsets: dict[str, list[int]] = field(default_factory=dict)  # image sets scored in a label subspace (ImageNet-A/R)
    images_encoded: int = 0  # by the preparation (0: every feature from the cache)
    # split -> its preprocessed images (a PixelSet, or a tensor images x C x H x W), for image-side
    # queries; loaded on first use (the training set's augmented pass, the same images its features
    # were encoded from) and kept on the host.
    pixel_source: Callable[[str], "PixelSet | torch.Tensor"] | None = None
    pixel_range: tuple[tuple[float, float], ...] = ()
    _pixels: dict[str, PixelSet] = field(default_factory=dict, repr=False)

    def pixels(self, split: str) -> PixelSet:
        """An image set's preprocessed images (loaded once)."""
        if self.pixel_source is None:
            raise ValueError("this task serves no image-side queries (no pixel source)")
        if split not in self._pixels:
            self._pixels[split] = as_pixel_set(self.pixel_source(split))
        return self._pixels[split]

    def images(self, split: str) -> tuple[torch.Tensor, int]:
        """An image set's features and the images encoded to answer (views are encoded on demand)."""
        view = parse_view_split(split)
        if view is None:
            return self.features[split], 0
        if self.train_views is None:
            raise ValueError(f"image set {split!r}: this task has no augmented views of its training images")
        feats, encoded = self.train_views.get(view[0])
        return (feats if view[1] else F.normalize(feats, dim=-1)), encoded


class EngineBackend:
    """Implements :class:`craft.blackbox.Backend` for one task on a local :class:`ClipEngine`."""

    def __init__(self, engine: ClipEngine, task: TaskData, output_device: torch.device | str = "cpu",
                 merge_queries: bool | None = None) -> None:
        """``output_device``: where logits and features are handed out. ``cpu`` (default) copies
        them to the host, as a remote user receives them; the engine's device keeps them on the
        GPU, so that the run's fitness and refinement module run there too (at ImageNet's shapes
        a generation's logits are 2.6 GB: see docs/throughput.md). ``merge_queries``: whether
        :meth:`logits_many` runs its queries in one pass (None: on a GPU only)."""
        self.engine = engine
        self.task = task
        self.part = engine.class_part(task.classnames)
        self.output_device = torch.device(output_device)
        self.merge_queries = engine.device.type != "cpu" if merge_queries is None else merge_queries
        # runs image-side passes (ClipEngine.encode_prompted's ``tower``); a model server sets its batcher's
        self.image_tower: Callable[[torch.Tensor, torch.Tensor | None], torch.Tensor] | None = None

    def info(self) -> BackendInfo:
        return BackendInfo(
            width=self.engine.width,
            max_ctx=self.engine.max_ctx(self.part),
            n_classes=len(self.task.classnames),
            split_sizes={k: int(v.shape[0]) for k, v in self.task.features.items()},
            device=str(self.output_device),
            train_views=self.task.train_views is not None,
            **self._image_side_info(),
        )

    def _image_side_info(self) -> dict:
        if self.task.pixel_source is None:
            return {}
        e = self.engine
        size = int(e.loaded.image_size)
        return dict(image_side=True, vision_width=e.vision_width(), max_visual_tokens=MAX_VISUAL_TOKENS if e.vision_tokens() else 0,
                    image_shape=(3, size, size), pixel_range=tuple(self.task.pixel_range), init_stats=e.init_stats())

    # ----------------------------------------------------------------- image side
    def pixels(self, split: str, indices: torch.Tensor | None = None) -> torch.Tensor:
        return self.task.pixels(split).rows(indices, "cpu")

    def image_logits(self, contexts: torch.Tensor | None, prompt: VisualPrompt, split: str,
                     indices: torch.Tensor | None = None) -> tuple[torch.Tensor, int]:
        """Logits ``candidates x images x classes`` of images re-encoded under ``prompt``; the images encoded."""
        images = self.task.pixels(split).subset(indices)
        before = self.engine.query_images_encoded
        feats = self.engine.encode_prompted(images, prompt, self.task.pixel_range, self.image_tower)
        if contexts is None:
            text = self._template_text().unsqueeze(0)
        else:
            text = self.engine.text_features(contexts, self.part)
        logits = self.engine.logit_scale * torch.einsum("bne,bce->bnc", feats, text.expand(feats.shape[0], -1, -1))
        return self._out(logits), self.engine.query_images_encoded - before

    def image_features(self, split: str, indices: torch.Tensor | None = None) -> tuple[torch.Tensor, int]:
        feats, encoded = self.images(split, indices)
        return self._out(feats.float()), encoded

    def template_features(self, template: str) -> torch.Tensor:
        return self._out(self.engine.template_features(template, self.task.classnames))

    def _template_text(self) -> torch.Tensor:
        if not hasattr(self, "_template_cache"):
            self._template_cache = self.engine.template_features(self.task.template, self.task.classnames)
        return self._template_cache

    def embed_words(self, text: str) -> torch.Tensor:
        return self.engine.embed_words(text)

    def images(self, split: str, indices: torch.Tensor | None = None) -> tuple[torch.Tensor, int]:
        """The image features of ``split`` (rows ``indices``) and the images encoded to get them."""
        feats, encoded = self.task.images(split)
        return (feats if indices is None else feats[indices.to(feats.device)]), encoded

    def logits(self, contexts: torch.Tensor, split: str, indices: torch.Tensor | None = None) -> tuple[torch.Tensor, int]:
        text = self.engine.text_features(contexts, self.part)
        images, encoded = self.images(split, indices)
        return self._out(self.engine.logits(images, text)), encoded

    def logits_many(self, contexts: list[torch.Tensor], split: str | Sequence[str]) -> tuple[list[torch.Tensor], int]:
        """Logits of several queries (:meth:`craft.blackbox.MeteredBlackBox.logits_many`), their text
        features from one pass where ``merge_queries``.

        A CraFT generation's refinement query and the next generation's candidates come this way. On a
        GPU one pass instead of two saves the launches of a whole pass, by the loop's thread and on the
        GPU (the refinement query alone is a pass of 2 x classes prompts, compiled). On a CPU a pass
        costs its arithmetic, which merging does not reduce, and the queries go one pass each: BLAS
        kernels for few rows (one candidate of a few classes) round differently from those for many,
        so a merged query's logits could differ in their last bits from its own call's, and a run's
        results from those it had before (tests/test_engine.py)."""
        splits = [split] * len(contexts) if isinstance(split, str) else list(split)
        if not self.merge_queries or len({tuple(c.shape[1:]) for c in contexts}) > 1:  # one pass: one context length
            answers = [self.logits(c, s) for c, s in zip(contexts, splits)]
            return [out for out, _ in answers], sum(n for _, n in answers)
        text = self.engine.text_features(torch.cat(list(contexts)), self.part)
        parts = text.split([c.shape[0] for c in contexts])
        outs, encoded = [], 0
        for t, s in zip(parts, splits):
            images, n = self.images(s)
            outs.append(self._out(self.engine.logits(images, t)))
            encoded += n
        return outs, encoded

    def features(self, contexts: torch.Tensor, split: str, indices: torch.Tensor | None = None) -> tuple[OutputFeatures, int]:
        text = self.engine.text_features(contexts, self.part)
        image, encoded = self.images(split, indices)
        return OutputFeatures(self._out(text), self._out(image.float()), self.engine.logit_scale), encoded

    def template_logits(self, template: str, split: str) -> tuple[torch.Tensor, int]:
        text = self.engine.template_features(template, self.task.classnames)
        images, encoded = self.images(split)
        return self._out(self.engine.logits(images, text)), encoded

    def _out(self, t: torch.Tensor) -> torch.Tensor:
        """``t`` on the output device. A GPU's result copied to the host waits for the GPU: that wait
        is recorded as one (:mod:`craft.waits`), as a run's own :class:`craft.transfer.HostCopy` is."""
        if t.device.type == "cuda" and self.output_device.type == "cpu":
            with blocked("device"):
                return t.to(self.output_device)
        return t.to(self.output_device)

"""Loading CLIP backbones through open_clip: by name, with a pretrained tag or a local checkpoint.

Weights are never fetched silently: a pretrained tag is looked up in the local Hugging Face
cache only (offline), unless the caller allows downloads (``allow_download=True``, or
``CRAFT_ALLOW_DOWNLOAD=1``). ``weights="random"`` builds the architecture with random
weights (enough to measure speed).
"""

from __future__ import annotations

import os
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterator

import torch

from benchmark.errors import UserError

# Backbones the paper's tables use; any other open_clip architecture name works too.
PAPER_BACKBONES = ("RN50", "RN101", "ViT-B-32", "ViT-B-16")
RANDOM = "random"
BUILTIN = "builtin"


@dataclass
class LoadedModel:
    """An open_clip CLIP model with its test-time preprocessing and tokenizer."""

    backbone: str
    weights: str
    model: Any
    preprocess: Callable
    tokenizer: Callable

    @property
    def image_size(self) -> int:
        size = self.model.visual.image_size
        return int(size[0] if isinstance(size, (tuple, list)) else size)

    @property
    def mean_std(self) -> tuple[tuple[float, ...], tuple[float, ...]]:
        v = self.model.visual
        return tuple(getattr(v, "image_mean", None) or (0.48145466, 0.4578275, 0.40821073)), tuple(
            getattr(v, "image_std", None) or (0.26862954, 0.26130258, 0.27577711)
        )


def known_backbones() -> list[str]:
    """open_clip's model names and the built-in model's, as ``open_clip.list_models()`` lists them.

    Read from open_clip's config folder as open_clip reads it, without importing open_clip
    (seconds, with torchvision), so that a sweep's driver checks its config at once.
    """
    import importlib.util
    import json

    from benchmark.model.builtin import BUILTIN_BACKBONE

    spec = importlib.util.find_spec("open_clip")
    if spec is None or spec.origin is None:
        raise UserError("open_clip is not installed: pip install open_clip_torch")
    names = {BUILTIN_BACKBONE}
    for path in (Path(spec.origin).parent / "model_configs").glob("*.json"):
        cfg = json.loads(path.read_text())
        if all(k in cfg for k in ("embed_dim", "vision_cfg", "text_cfg")):
            names.add(path.stem)
    return sorted(names)


@contextmanager
def _offline(enabled: bool) -> Iterator[None]:
    keys = ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE")
    saved = {k: os.environ.get(k) for k in keys}
    if enabled:
        for k in keys:
            os.environ[k] = "1"
    try:
        yield
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


def load_model(
    backbone: str,
    weights: str = BUILTIN,
    device: str | torch.device = "cpu",
    allow_download: bool | None = None,
    checkpoint: str | None = None,
) -> LoadedModel:
    """Create ``backbone`` with ``weights``: a pretrained tag, a checkpoint path, ``random`` or ``builtin``.

    ``checkpoint``: the local file of those weights, found on the sweep's driver and staged here
    (:mod:`benchmark.model.weights`); loaded as the tag it is (QuickGELU where the tag has it), no cache
    looked up and nothing downloaded.
    """
    import open_clip

    from benchmark.model.builtin import BUILTIN_BACKBONE, builtin_model_paths, register_builtin_model

    register_builtin_model()
    if backbone not in open_clip.list_models():
        raise UserError(
            f"unknown backbone {backbone!r}; paper backbones: {', '.join(PAPER_BACKBONES)}, "
            f"built-in: {BUILTIN_BACKBONE} (any name from open_clip.list_models() works)"
        )
    if allow_download is None:
        allow_download = os.environ.get("CRAFT_ALLOW_DOWNLOAD", "") == "1"

    pretrained: str | None
    if weights == BUILTIN:
        if backbone != BUILTIN_BACKBONE:
            raise UserError(
                f"weights 'builtin' exist only for backbone {BUILTIN_BACKBONE!r}, not {backbone!r}; "
                "give an open_clip pretrained tag (e.g. 'openai') or a checkpoint path"
            )
        pretrained = str(builtin_model_paths()[1])
    elif weights == RANDOM:
        pretrained = None
    elif checkpoint is not None:
        if not Path(checkpoint).is_file():
            raise UserError(f"staged weights file not found: {checkpoint} (for {backbone}:{weights})")
        pretrained = checkpoint
    elif _looks_like_path(weights):
        if not Path(weights).is_file():
            raise UserError(f"checkpoint file not found: {weights} (for backbone {backbone})")
        pretrained = weights
    else:
        tags = open_clip.list_pretrained_tags_by_model(backbone)
        if weights not in tags:
            raise UserError(
                f"unknown pretrained tag {weights!r} for {backbone}; known tags: {', '.join(tags) or 'none'}, "
                "or give a local checkpoint path, or 'random'"
            )
        local = _cached_pretrained(backbone, weights)
        if local is None and not allow_download:
            raise UserError(
                f"weights for {backbone} with pretrained tag {weights!r} are not in the local cache "
                f"(looked in the Hugging Face cache and {_URL_CACHE}) and downloads are off; fetch them once "
                f"with craft weights fetch {backbone}:{weights} on a machine with internet, or give a local checkpoint "
                f"path as the weights (backbones: [{backbone}:/data/ckpt/{backbone}.pt])"
            )
        pretrained = weights
    # A tag trained with QuickGELU (every ``openai`` tag) on an architecture whose config has GELU
    # (``RN50``): open_clip 3 only warns and builds GELU, so the model would not be the one trained.
    is_tag = weights not in (BUILTIN, RANDOM) and not _looks_like_path(weights)
    quick_gelu = is_tag and tag_quick_gelu(backbone, weights)

    try:
        with _offline(not allow_download):
            model, _, preprocess = open_clip.create_model_and_transforms(
                backbone, pretrained=pretrained, device=device, force_quick_gelu=quick_gelu
            )
    except UserError:
        raise
    except Exception as exc:  # open_clip raises several kinds when a file is missing
        if pretrained is not None and not _looks_like_path(pretrained):
            raise UserError(
                f"weights for {backbone} with pretrained tag {weights!r} are not in the local cache "
                f"and downloads are off ({type(exc).__name__}); fetch them once with "
                f"craft weights fetch {backbone}:{weights} on a machine with internet, or give a local checkpoint "
                f"path as the weights (backbones: [{backbone}:/data/ckpt/{backbone}.pt])"
            ) from exc
        raise UserError(f"could not load checkpoint {pretrained!r} into {backbone}: {exc}") from exc
    model.eval()
    return LoadedModel(backbone, weights, model, preprocess, open_clip.get_tokenizer(backbone))


_URL_CACHE = Path.home() / ".cache" / "clip"


def tag_quick_gelu(backbone: str, tag: str) -> bool:
    """Whether open_clip's pretrained ``tag`` of ``backbone`` was trained with QuickGELU activations."""
    import open_clip

    return bool(open_clip.get_pretrained_cfg(backbone, tag).get("quick_gelu", False))


def cached_pretrained(backbone: str, tag: str) -> str | None:
    """The local file of an open_clip pretrained tag, if already downloaded (no network)."""
    import open_clip

    cfg = open_clip.get_pretrained_cfg(backbone, tag)
    hub = cfg.get("hf_hub", "")
    if hub:
        from huggingface_hub import try_to_load_from_cache

        repo, filename = os.path.split(hub.rstrip("/")) if not hub.endswith("/") else (hub.rstrip("/"), "")
        names = [filename] if filename else ["open_clip_model.safetensors", "open_clip_pytorch_model.bin"]
        for name in names:
            found = try_to_load_from_cache(repo, name)
            if isinstance(found, str):
                return found
    url = cfg.get("url", "")
    if url and (_URL_CACHE / os.path.basename(url)).is_file():
        return str(_URL_CACHE / os.path.basename(url))
    return None


_cached_pretrained = cached_pretrained  # the name load_model looks it up by (tests replace it)


def _looks_like_path(weights: str) -> bool:
    return os.sep in weights or weights.endswith((".pt", ".pth", ".bin", ".safetensors", ".npz"))

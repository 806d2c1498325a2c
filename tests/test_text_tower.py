"""The engine's fast path against open_clip's own text path: same logits (fp32, CPU), fewer tokens."""

from __future__ import annotations

import open_clip
import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st

from benchmark.model import text_tower
from benchmark.model.engine import ClipEngine
from benchmark.model.loading import LoadedModel

WORDS = ["cat", "golden retriever", "a rather long class name of an aircraft", "x", "boeing 737-800", "sun flower"]
REL_TOL = 1e-4  # the stated tolerance: relative L2 error of fast-path logits, fp32 on CPU


pytestmark = pytest.mark.usefixtures("one_torch_thread")


def small_clip(layers: int = 3, quick_gelu: bool = False, ls: float | None = None, qk_norm: bool = False) -> LoadedModel:
    torch.manual_seed(0)
    text = dict(context_length=77, width=64, heads=4, layers=layers, ls_init_value=ls, qk_norm=qk_norm)
    vision = dict(image_size=16, layers=1, width=32, patch_size=8, head_width=16)
    model = open_clip.CLIP(embed_dim=32, vision_cfg=vision, text_cfg=text, quick_gelu=quick_gelu).eval()
    if ls is not None:  # layer scales away from their init, so that a wrong use shows
        for name, p in model.transformer.named_parameters():
            if name.endswith("gamma"):
                p.data.uniform_(0.5, 1.5)
    return LoadedModel("small", "random", model, None, open_clip.get_tokenizer("ViT-B-32"))


def open_clip_features(loaded: LoadedModel, ctx: torch.Tensor, names: list[str]) -> torch.Tensor:
    """Normalised features through open_clip's own ``encode_text`` steps, 77 tokens, with the
    context embeddings written over placeholder words: ``candidates x classes x embed``."""
    m, n_ctx = loaded.model, ctx.shape[1]
    tokens = loaded.tokenizer([" ".join(["x"] * n_ctx + [f"{n}."]) for n in names])
    out = []
    with torch.no_grad():
        for c in ctx:
            x = m.token_embedding(tokens)
            x[:, 1 : 1 + n_ctx] = c
            x = m.transformer(x + m.positional_embedding, attn_mask=m.attn_mask)
            x = m.ln_final(x)[torch.arange(len(names)), tokens.argmax(dim=-1)] @ m.text_projection
            out.append(F.normalize(x, dim=-1))
    return torch.stack(out)


def rel_err(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a - b).norm() / b.norm())


@pytest.mark.parametrize("kind", ["plain", "quick_gelu+layer_scale", "one_layer", "two_layers"])
def test_fast_logits_match_open_clip_within_stated_tolerance(kind):
    loaded = {
        "plain": lambda: small_clip(),
        "quick_gelu+layer_scale": lambda: small_clip(quick_gelu=True, ls=1.0),
        "one_layer": lambda: small_clip(layers=1),  # the first block is the last
        "two_layers": lambda: small_clip(layers=2),  # no middle block
    }[kind]()
    engine = ClipEngine(loaded)
    assert engine.prefix_shared
    ctx = engine.embed_words("a photo of a") + 0.3 * torch.randn(5, 4, engine.width)
    ours = engine.text_features(ctx, engine.class_part(WORDS))
    ref = open_clip_features(loaded, ctx, WORDS)
    images = F.normalize(torch.randn(9, ref.shape[-1]), dim=-1)
    assert rel_err(engine.logits(images, ours), engine.logits(images, ref)) < REL_TOL
    assert rel_err(ours, ref) < REL_TOL


@settings(max_examples=15, deadline=None)
@given(
    n_cand=st.integers(1, 4),
    n_ctx=st.integers(1, 6),
    names=st.lists(st.sampled_from(WORDS), min_size=1, max_size=5),
    max_sequences=st.sampled_from([None, 1, 3, 7]),
    seed=st.integers(0, 2**16),
)
def test_fast_path_matches_open_clip_for_any_batch_context_and_chunking(n_cand, n_ctx, names, max_sequences, seed):
    loaded = _shared_small()
    engine = ClipEngine(loaded, max_sequences=max_sequences)
    ctx = torch.randn(n_cand, n_ctx, engine.width, generator=torch.Generator().manual_seed(seed)) * 0.5
    ours = engine.text_features(ctx, engine.class_part(names))
    assert ours.shape == (n_cand, len(names), 32)
    assert rel_err(ours, open_clip_features(loaded, ctx, names)) < REL_TOL


_SMALL: list[LoadedModel] = []


def _shared_small() -> LoadedModel:
    if not _SMALL:
        _SMALL.append(small_clip())
    return _SMALL[0]


def test_unsupported_blocks_fall_back_to_the_plain_fast_path_with_the_same_features():
    loaded = small_clip(qk_norm=True)  # open_clip's CustomResidualAttentionBlock
    assert not text_tower.supports(loaded.model)
    engine = ClipEngine(loaded)
    assert not engine.prefix_shared
    ctx = torch.randn(3, 4, engine.width) * 0.3
    assert rel_err(engine.text_features(ctx, engine.class_part(WORDS)), open_clip_features(loaded, ctx, WORDS)) < REL_TOL


def test_prefix_sharing_runs_fewer_tokens_through_the_mlps_than_truncation_alone():
    loaded = _shared_small()
    engine = ClipEngine(loaded)
    part = engine.class_part(WORDS)
    rows = []
    hooks = [b.mlp.register_forward_hook(lambda mod, inp, out: rows.append(inp[0].numel() // 64))
             for b in loaded.model.transformer.resblocks]
    try:
        n_cand, n_ctx, layers = 6, 4, 3
        engine.text_features(torch.zeros(n_cand, n_ctx, 64), part)
    finally:
        for h in hooks:
            h.remove()
    n_cls, suffix = len(WORDS), part.max_len + 1
    # Prefix once per candidate, class parts per prompt, and only the EOT row in the last layer.
    expected = (layers - 1) * (n_cand * (1 + n_ctx) + n_cand * n_cls * suffix) + n_cand * n_cls
    assert sum(rows) == expected
    assert sum(rows) < layers * n_cand * n_cls * (1 + n_ctx + suffix)  # truncation alone


def test_chunk_size_follows_max_sequences_or_the_memory_budget():
    engine = ClipEngine(_shared_small())
    assert engine.chunk_sequences(8) == pytest.approx(2 * engine.chunk_sequences(16), abs=2)  # inversely with length
    assert engine.chunk_sequences(10_000) == 256  # never below 256 sequences
    assert ClipEngine(_shared_small(), max_sequences=7).chunk_sequences(20) == 7


@pytest.mark.parametrize("kind", ["plain", "quick_gelu+layer_scale"])
def test_cpu_mlp_row_blocks_give_open_clip_features(kind, monkeypatch):
    loaded = small_clip() if kind == "plain" else small_clip(quick_gelu=True, ls=1.0)
    engine = ClipEngine(loaded)
    ctx = engine.embed_words("a photo of a") + 0.3 * torch.randn(3, 4, engine.width)
    blocks = []
    into = text_tower._linear_into
    monkeypatch.setattr(text_tower, "MLP_ROWS", 7)  # far fewer rows than a layer's tokens
    monkeypatch.setattr(text_tower, "_linear_into", lambda out, x, layer: (blocks.append(x.shape[0]), into(out, x, layer)))
    ours = engine.text_features(ctx, engine.class_part(WORDS))
    assert blocks and max(blocks) == 7 and min(blocks) < 7  # full blocks and a remainder ran
    assert rel_err(ours, open_clip_features(loaded, ctx, WORDS)) < REL_TOL


def test_first_block_class_state_is_computed_once_per_class_list_and_context_length(monkeypatch):
    engine = ClipEngine(_shared_small())
    part = engine.class_part(WORDS)
    made = []
    real = text_tower.class_state
    monkeypatch.setattr(text_tower, "class_state", lambda model, suffix: made.append(suffix.shape) or real(model, suffix))
    ctx = torch.randn(2, 4, engine.width) * 0.3
    first = engine.text_features(ctx, part)
    again = engine.text_features(ctx, part)
    engine.text_features(torch.randn(2, 3, engine.width) * 0.3, part)  # another context length: another state
    assert len(made) == 2 and set(part.states) == {4, 3}
    assert torch.equal(first, again)

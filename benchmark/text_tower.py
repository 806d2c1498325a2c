"""The CLIP text tower for prompts that share a per-candidate prefix (the engine's fast path).

Every prompt of one candidate starts with the same ``[SOS] + ctx`` (``P`` tokens); only the class
part (``S`` tokens) differs. With a causal mask, a prefix position attends to prefix positions
only, so its hidden states are the same in all ``C`` prompts of the candidate: the prefix is run
once per candidate (``B x P`` tokens instead of ``B x C x P``), and the class parts attend to its
keys and values (a prefix cache, as in language-model decoding). The class part's first layer
input does not depend on the candidate, so its first projections run once per class. In the last
layer only the end-of-text position is needed, so queries, attention output and MLP run on that
one position. All of this computes the same function as the plain tower.

Only open_clip's default ``ResidualAttentionBlock`` (``nn.MultiheadAttention``, any norm,
activation or layer scale) is supported; :func:`supports` says whether a model qualifies.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


def supports(model: nn.Module) -> bool:
    """Whether ``model``'s text transformer is made of blocks this module can run."""
    from open_clip.transformer import ResidualAttentionBlock

    blocks = getattr(getattr(model, "transformer", None), "resblocks", None)
    if not blocks or getattr(model, "attn_mask", None) is None:  # the prefix cache needs a causal mask
        return False
    for blk in blocks:
        if type(blk) is not ResidualAttentionBlock or hasattr(blk, "ln_1_kv"):
            return False
        attn = blk.attn
        if not isinstance(attn, nn.MultiheadAttention) or not attn._qkv_same_embed_dim:
            return False
        if attn.bias_k is not None or attn.add_zero_attn or attn.dropout:
            return False
    return True


def _heads(x: torch.Tensor, n_head: int) -> torch.Tensor:
    """``(N, T, W)`` -> ``(N, heads, T, W/heads)``."""
    n, t, w = x.shape
    return x.view(n, t, n_head, w // n_head).transpose(1, 2)


def _merge(x: torch.Tensor) -> torch.Tensor:
    """``(N, heads, T, d)`` -> ``(N, T, heads*d)``."""
    n, h, t, d = x.shape
    return x.transpose(1, 2).reshape(n, t, h * d)


def _mlp(blk: nn.Module, x: torch.Tensor) -> torch.Tensor:
    return x + blk.ls_2(blk.mlp(blk.ln_2(x)))


def _with_prefix(t_p: torch.Tensor, t_s: torch.Tensor, n_cand: int) -> torch.Tensor:
    """Keys (or values) of whole prompts, ``B*C x heads x (P+S) x d``, written once into one buffer.

    ``t_p``: the prefix's, ``B x heads x P x d``; ``t_s``: the class parts', ``(1 or B) x C x S x W``.
    """
    _, n_head, p_len, d = t_p.shape
    _, n_cls, s_len, _ = t_s.shape
    out = t_s.new_empty(n_cand, n_cls, n_head, p_len + s_len, d)
    out[:, :, :, :p_len] = t_p.unsqueeze(1)
    out[:, :, :, p_len:] = t_s.unflatten(-1, (n_head, d)).transpose(2, 3)
    return out.view(n_cand * n_cls, n_head, p_len + s_len, d)


def prefix_shared_features(
    model: nn.Module, prefix: torch.Tensor, suffix: torch.Tensor, eot: torch.Tensor
) -> torch.Tensor:
    """Text features ``(B*C, embed)`` of the prompts ``prefix[b] + suffix[c]``, candidate-major.

    ``prefix``: ``B x P x W`` (SOS and context, positional embedding added); ``suffix``:
    ``C x S x W`` (class tokens, EOS and padding, positional embedding for positions ``P..``
    added); ``eot``: ``C`` positions of each class's end-of-text token inside ``suffix``.
    """
    blocks = model.transformer.resblocks
    n_cand, p_len, width = prefix.shape
    n_cls, s_len, _ = suffix.shape
    n_seq = n_cand * n_cls
    # Suffix query i sits at position P+i and sees keys 0..P+i (a causal mask aligned lower right).
    keys = torch.arange(p_len + s_len, device=suffix.device)
    queries = torch.arange(s_len, device=suffix.device) + p_len
    mask = keys.unsqueeze(0) <= queries.unsqueeze(1)  # S x (P+S)
    last_mask = (keys.unsqueeze(0) <= (eot + p_len).unsqueeze(1)).unsqueeze(1)  # C x 1 x (P+S)
    last_mask = last_mask.unsqueeze(0).expand(n_cand, -1, -1, -1).reshape(n_seq, 1, 1, -1)

    hp, hs = prefix, suffix.unsqueeze(0)  # hs: (1 or B) x C x S x W
    for i, blk in enumerate(blocks):
        attn = blk.attn
        n_head = attn.num_heads
        w_in, b_in = attn.in_proj_weight, attn.in_proj_bias
        last = i == len(blocks) - 1

        # Prefix: a plain causal block over P tokens per candidate; keep its keys and values.
        qkv_p = F.linear(blk.ln_1(hp), w_in, b_in)
        q_p, k_p, v_p = (_heads(t, n_head) for t in qkv_p.chunk(3, dim=-1))  # B x h x P x d
        if not last:
            o_p = F.scaled_dot_product_attention(q_p, k_p, v_p, is_causal=True)
            hp = hp + blk.ls_1(attn.out_proj(_merge(o_p)))
            hp = _mlp(blk, hp)

        # Class parts: keys and values of every position; queries of every position, or, in
        # the last layer, of the end-of-text position only. In the first layer they are the same
        # for every candidate (batch dimension 1) and are broadcast, not copied, into the cache.
        a_s = blk.ln_1(hs)
        w_q, w_kv = w_in[:width], w_in[width:]
        b_q, b_kv = (None, None) if b_in is None else (b_in[:width], b_in[width:])
        kv_s = F.linear(a_s, w_kv, b_kv)  # (1 or B) x C x S x 2W
        k, v = (_with_prefix(t_p, t_s, n_cand) for t_p, t_s in zip((k_p, v_p), kv_s.chunk(2, dim=-1)))
        if not last:
            q_s = F.linear(a_s, w_q, b_q).expand(n_cand, -1, -1, -1).reshape(n_seq, s_len, width)
            o_s = F.scaled_dot_product_attention(_heads(q_s, n_head), k, v, attn_mask=mask)
            o_s = attn.out_proj(_merge(o_s)).view(n_cand, n_cls, s_len, width)
            hs = _mlp(blk, hs + blk.ls_1(o_s))  # B x C x S x W
        else:
            rows = torch.arange(n_cls, device=eot.device)
            a_e = a_s[:, rows, eot]  # (1 or B) x C x W
            h_e = hs[:, rows, eot]
            q_e = F.linear(a_e, w_q, b_q).expand(n_cand, -1, -1).reshape(n_seq, 1, width)
            o_e = F.scaled_dot_product_attention(_heads(q_e, n_head), k, v, attn_mask=last_mask)
            o_e = attn.out_proj(_merge(o_e)).view(n_cand, n_cls, width)
            out = _mlp(blk, h_e + blk.ls_1(o_e)).reshape(n_seq, width)

    out = model.ln_final(out)
    proj = model.text_projection
    if proj is not None:
        out = proj(out) if isinstance(proj, nn.Linear) else out @ proj
    return out

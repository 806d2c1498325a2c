"""The CLIP text tower for prompts that share a per-candidate prefix (the engine's fast path).

Every prompt of one candidate starts with the same ``[SOS] + ctx`` (``P`` tokens); only the class
part (``S`` tokens) differs. With a causal mask, a prefix position attends to prefix positions
only, so its hidden states are the same in all ``C`` prompts of the candidate: the prefix is run
once per candidate (``B x P`` tokens instead of ``B x C x P``), and the class parts attend to its
keys and values (a prefix cache, as in language-model decoding). Three kinds of block:

* **first**: the class part's input does not depend on the candidate, so its queries, keys,
  values and its attention among its own positions are computed once per class list
  (:func:`class_state`, which the engine keeps); only the scores against the candidate's prefix
  and one softmax are per prompt. The output projection is folded into the values (``v W_o``
  per head, once per class or candidate), so no per-prompt projection runs before the MLP.
* **middle**: class parts attend to their own keys and values and to the prefix cache.
* **last**: only the end-of-text position is needed. Its query is folded into the key weights
  (``q . (W_k a) = (W_k^T q) . a``; the key bias adds one constant to every score and cancels
  in the softmax) and the value weights are applied after the weighted sum (``sum w_j W_v a_j =
  W_v sum w_j a_j``, the weights summing to 1), so no keys or values of the class part are
  projected at all.

All of this computes the same function as the plain tower, up to floating-point rounding, and a
prompt's features do not depend on the other prompts of its batch, up to rounding (BLAS kernels
for few rows can round differently from those for many). On CPU the MLPs run in row blocks
(:data:`MLP_ROWS`).

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


MLP_ROWS = 2048  # CPU: token rows per MLP block (its 4x-wide hidden layer then stays in L2 cache)


def _mlp(blk: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """``x + ls_2(mlp(ln_2(x)))``. On CPU, large inputs go through in blocks of :data:`MLP_ROWS`
    rows with one reused hidden buffer: fewer cache misses and first touches of freshly allocated
    pages than one MLP call per chunk (``python -m measurement.text_tower_cpu`` times both)."""
    fc, act, proj = blk.mlp.c_fc, blk.mlp.gelu, blk.mlp.c_proj
    width = x.shape[-1]
    # Compiling first: a traced size test would become a guard, and crossing it a recompilation.
    if (torch.compiler.is_compiling() or x.device.type != "cpu" or x.numel() <= MLP_ROWS * width
            or torch.is_grad_enabled()):
        return x + blk.ls_2(blk.mlp(blk.ln_2(x)))
    flat = x.reshape(-1, width)
    out = torch.empty_like(flat)
    hidden = flat.new_empty(MLP_ROWS, fc.out_features)
    for i in range(0, flat.shape[0], MLP_ROWS):
        x_i, out_i = flat[i : i + MLP_ROWS], out[i : i + MLP_ROWS]
        h = hidden[: x_i.shape[0]]
        _linear_into(h, blk.ln_2(x_i), fc)
        if isinstance(act, nn.GELU):
            torch._C._nn.gelu_(h, approximate=act.approximate)
        else:
            h = act(h)
        _linear_into(out_i, h, proj)
        ls = blk.ls_2
        if isinstance(ls, nn.Identity):
            out_i += x_i
        elif isinstance(getattr(ls, "gamma", None), torch.Tensor):  # open_clip's LayerScale
            torch.addcmul(x_i, out_i, ls.gamma, out=out_i)
        else:
            out_i.copy_(x_i + ls(out_i))
    return out.view(x.shape)


def _linear_into(out: torch.Tensor, x: torch.Tensor, layer: nn.Linear) -> None:
    if layer.bias is None:
        torch.mm(x, layer.weight.t(), out=out)
    else:
        torch.addmm(layer.bias, x, layer.weight.t(), out=out)


def _with_prefix(t_p: torch.Tensor, t_s: torch.Tensor, n_cand: int) -> torch.Tensor:
    """Keys (or values) of whole prompts, ``B*C x heads x (P+S) x d``, written once into one buffer.

    ``t_p``: the prefix's, ``B x heads x P x d``; ``t_s``: the class parts', ``B x C x S x W``.
    """
    _, n_head, p_len, d = t_p.shape
    _, n_cls, s_len, _ = t_s.shape
    out = t_s.new_empty(n_cand, n_cls, n_head, p_len + s_len, d)
    out[:, :, :, :p_len] = t_p.unsqueeze(1)
    out[:, :, :, p_len:] = t_s.unflatten(-1, (n_head, d)).transpose(2, 3)
    return out.view(n_cand * n_cls, n_head, p_len + s_len, d)


def class_state(model: nn.Module, suffix: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """What the first block computes from the class parts alone (the same for every candidate).

    ``suffix``: ``C x S x W`` as in :func:`prefix_shared_features`. Returns the class positions'
    queries, scaled (``C x h x S x d``); their attention among themselves (causal, normalised)
    with the output projection applied per head (``A_s``, ``C x S x h x W``); and the log of
    that attention's softmax mass (``C x S x h``). Every tensor has the classes first, so a
    slice of classes is a slice of each.
    """
    blk = model.transformer.resblocks[0]
    attn = blk.attn
    n_head = attn.num_heads
    n_cls, s_len, width = suffix.shape
    d = width // n_head
    qkv = F.linear(blk.ln_1(suffix), attn.in_proj_weight, attn.in_proj_bias)
    q_s, k_s, v_s = (_heads(t, n_head) for t in qkv.chunk(3, dim=-1))  # C x h x S x d
    q_s = q_s * d**-0.5
    s_ss = (q_s @ k_s.transpose(-1, -2)).float()
    causal = torch.ones(s_len, s_len, dtype=torch.bool, device=suffix.device).triu(1)
    s_ss = s_ss.masked_fill(causal, float("-inf"))
    w_o = attn.out_proj.weight.view(width, n_head, d)  # output x head x head dim
    a_s = torch.einsum("chsd,whd->cshw", torch.softmax(s_ss, dim=-1).to(v_s.dtype) @ v_s, w_o)
    lse_s = torch.logsumexp(s_ss, dim=-1).permute(0, 2, 1)
    return q_s, a_s, lse_s


def prefix_shared_features(
    model: nn.Module, prefix: torch.Tensor, suffix: torch.Tensor, eot: torch.Tensor,
    state: tuple[torch.Tensor, torch.Tensor, torch.Tensor] | None = None,
) -> torch.Tensor:
    """Text features ``(B*C, embed)`` of the prompts ``prefix[b] + suffix[c]``, candidate-major.

    ``prefix``: ``B x P x W`` (SOS and context, positional embedding added); ``suffix``:
    ``C x S x W`` (class tokens, EOS and padding, positional embedding for positions ``P..``
    added); ``eot``: ``C`` positions of each class's end-of-text token inside ``suffix``;
    ``state``: :func:`class_state` of ``suffix``, computed here when not given (the engine
    keeps it per class list).
    """
    blocks = model.transformer.resblocks
    hp, hs = prefix, suffix.unsqueeze(0)  # hs: (1 or B) x C x S x W
    for i, blk in enumerate(blocks):
        if i == len(blocks) - 1:
            out = _last_block(blk, hp, hs, eot)
        elif i == 0:
            hp, hs = _first_block(blk, hp, hs[0], state if state is not None else class_state(model, suffix))
        else:
            hp, hs = _middle_block(blk, hp, hs)
    out = model.ln_final(out)
    proj = model.text_projection
    if proj is not None:
        out = proj(out) if isinstance(proj, nn.Linear) else out @ proj
    return out


def _prefix_block(blk: nn.Module, hp: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """A plain causal block over the ``B x P`` prefix tokens: (new hidden states, keys, values)."""
    attn = blk.attn
    qkv = F.linear(blk.ln_1(hp), attn.in_proj_weight, attn.in_proj_bias)
    q, k, v = (_heads(t, attn.num_heads) for t in qkv.chunk(3, dim=-1))  # B x h x P x d
    o = F.scaled_dot_product_attention(q, k, v, is_causal=True)
    return _mlp(blk, hp + blk.ls_1(attn.out_proj(_merge(o)))), k, v


def _first_block(
    blk: nn.Module, hp: torch.Tensor, hs: torch.Tensor, state: tuple[torch.Tensor, torch.Tensor, torch.Tensor]
) -> tuple[torch.Tensor, torch.Tensor]:
    """Block 0: ``hs`` (``C x S x W``) is the same for every candidate; returns ``B x C x S x W``."""
    attn = blk.attn
    n_head = attn.num_heads
    n_cand, p_len, width = hp.shape
    n_cls, s_len, _ = hs.shape
    d = width // n_head
    w_o = attn.out_proj.weight.view(width, n_head, d)  # output x head x head dim
    hp_next, k_p, v_p = _prefix_block(blk, hp)
    q_s, a_s, lse_s = state

    # Per prompt: scores against the candidate's P prefix keys, and the class part as one more
    # key of score lse_s; one softmax over them gives every weight. Candidates sit in the rows of
    # the product and the softmax runs row by row, so that a prompt's features do not depend on
    # the batch it is in (the BLAS keeps rows apart but not columns; an elementwise exp over the
    # whole tensor would round a value differently in SIMD body and scalar tail). Rows are padded
    # with -inf to 16 keys: a softmax over 16 keys is much faster than over an odd few.
    s_sp = torch.bmm(k_p.transpose(0, 1).reshape(n_head, n_cand * p_len, d),
                     q_s.permute(1, 3, 0, 2).reshape(n_head, d, n_cls * s_len))  # h x B*P x C*S
    n_keys = -(-(p_len + 1) // 16) * 16
    scores = torch.full((n_cand, n_cls, s_len, n_head, n_keys), float("-inf"), device=hs.device)
    scores[..., :p_len] = s_sp.view(n_head, n_cand, p_len, n_cls, s_len).permute(1, 3, 4, 0, 2)
    scores[..., p_len] = lse_s
    w = torch.softmax(scores, dim=-1)  # B x C x S x h x keys

    # Output projection folded into the prefix values: U_p = v_p W_o per head, B x (h*P) x W;
    # then the class part's share, its weight times A_s.
    u_p = torch.einsum("bhpd,whd->bhpw", v_p, w_o).reshape(n_cand, n_head * p_len, width)
    w_p = w[..., :p_len].to(u_p.dtype).reshape(n_cand, n_cls * s_len, n_head * p_len)
    o = torch.bmm(w_p, u_p).view(n_cand, n_cls, s_len, width)
    beta = w[..., p_len].to(o.dtype)
    for h in range(n_head):
        o.addcmul_(beta[..., h : h + 1], a_s[:, :, h].to(o.dtype))
    if attn.out_proj.bias is not None:
        o += attn.out_proj.bias.to(o.dtype)
    return hp_next, _mlp(blk, hs + blk.ls_1(o))


def _middle_block(blk: nn.Module, hp: torch.Tensor, hs: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """A block between the first and the last: class parts attend to the prefix cache."""
    attn = blk.attn
    n_head = attn.num_heads
    n_cand, p_len, width = hp.shape
    _, n_cls, s_len, _ = hs.shape
    hp_next, k_p, v_p = _prefix_block(blk, hp)
    # Suffix query i sits at position P+i and sees keys 0..P+i (a causal mask aligned lower right).
    keys = torch.arange(p_len + s_len, device=hs.device)
    mask = keys.unsqueeze(0) <= (torch.arange(s_len, device=hs.device) + p_len).unsqueeze(1)  # S x (P+S)
    qkv = F.linear(blk.ln_1(hs), attn.in_proj_weight, attn.in_proj_bias)  # B x C x S x 3W
    q_s, k_s, v_s = qkv.chunk(3, dim=-1)
    k, v = (_with_prefix(t_p, t_s, n_cand) for t_p, t_s in ((k_p, k_s), (v_p, v_s)))
    q_s = q_s.reshape(n_cand * n_cls, s_len, width)
    o = F.scaled_dot_product_attention(_heads(q_s, n_head), k, v, attn_mask=mask)
    o = attn.out_proj(_merge(o)).view(n_cand, n_cls, s_len, width)
    return hp_next, _mlp(blk, hs + blk.ls_1(o))


def _last_block(blk: nn.Module, hp: torch.Tensor, hs: torch.Tensor, eot: torch.Tensor) -> torch.Tensor:
    """The last block at each prompt's end-of-text position only: ``B*C x W``."""
    attn = blk.attn
    n_head = attn.num_heads
    n_cand, p_len, width = hp.shape
    n_b, n_cls, s_len, _ = hs.shape  # n_b: 1 (one-block model) or B
    d = width // n_head
    w_q, w_k, w_v = attn.in_proj_weight.chunk(3)
    b_q, _, b_v = (None, None, None) if attn.in_proj_bias is None else attn.in_proj_bias.chunk(3)

    a_p, a_s = blk.ln_1(hp), blk.ln_1(hs)  # B x P x W, n_b x C x S x W
    rows = torch.arange(n_cls, device=hs.device)
    h_e = hs[:, rows, eot]  # n_b x C x W
    q_e = F.linear(a_s[:, rows, eot], w_q, b_q) * d**-0.5
    # r = W_k^T q per head: the query in the input space of the keys. n_b x C x h x W.
    r = torch.bmm(q_e.reshape(n_b * n_cls, n_head, d).transpose(0, 1), w_k.view(n_head, d, width))
    r = r.transpose(0, 1).reshape(n_b, n_cls, n_head, width)
    s_p = torch.matmul(r.reshape(n_b, n_cls * n_head, width), a_p.transpose(1, 2))  # B x C*h x P
    s_s = torch.matmul(r, a_s.transpose(-1, -2))  # n_b x C x h x S
    after_eot = (torch.arange(s_len, device=hs.device) > eot.unsqueeze(1)).unsqueeze(1)  # C x 1 x S
    s_s = s_s.float().masked_fill(after_eot, float("-inf")).expand(n_cand, -1, -1, -1)
    w = torch.softmax(torch.cat([s_p.float().view(n_cand, n_cls, n_head, p_len), s_s], dim=-1), dim=-1)
    w_p, w_s = w[..., :p_len].to(a_p.dtype), w[..., p_len:].to(a_s.dtype)
    # The weighted sum of normalised inputs, then the value weights: B*C x h x W -> B*C x W.
    mix = torch.matmul(w_p.reshape(n_cand, n_cls * n_head, p_len), a_p).view(n_cand, n_cls, n_head, width)
    mix = mix + torch.matmul(w_s, a_s)
    o = torch.bmm(mix.reshape(n_cand * n_cls, n_head, width).transpose(0, 1), w_v.view(n_head, d, width).transpose(1, 2))
    o = o.transpose(0, 1).reshape(n_cand * n_cls, width)
    if b_v is not None:
        o = o + b_v
    h_e = (h_e + blk.ls_1(attn.out_proj(o)).view(n_cand, n_cls, width)).reshape(n_cand * n_cls, width)
    return _mlp(blk, h_e)

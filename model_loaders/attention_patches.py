"""ComfyUI's attention patch protocol for the UNet3D's spatial transformer blocks: plain dict/callable plumbing over
`transformer_options`, no ComfyUI import.

What a spatial TransformerBlock honours, with the same arguments and order as ComfyUI's own UNet
(comfy/ldm/modules/attention.py, BasicTransformerBlock), so core nodes written for it work unchanged:

* `patches["attn1_patch"]` / `["attn2_patch"]`: `p(n, context, value, extra_options) -> (n, context, value)` on the
  normed tokens before the attention;
* `patches_replace["attn1" | "attn2"][key]`: `p(q, k, v, extra_options) -> out` replaces the attention product
  (the projections and `to_out` stay), `key` = `(block name, block id, index in the transformer)` or, failing that,
  `(block name, block id)`; block names/ids are the UNet's `transformer_options["block"]`
  (`("input", i)`, `("middle", 0)`, `("output", i)`, the same indices as the original keys `input_blocks.i...`);
* `patches["attn1_output_patch"]` / `["attn2_output_patch"]`: `p(out, extra_options) -> out` after the attention;
* `patches["middle_patch"]`: `p(x, extra_options) -> x` between the two attentions;
* `transformer_options["optimized_attention_override"]`: `f(default_attention, q, k, v, heads, **kwargs)` computes
  the attention instead of the built-in scaled_dot_product_attention (q/k/v `[batch, tokens, heads*64]`).

`extra_options` is `transformer_options` without `patches`/`patches_replace`, plus `n_heads`, `dim_head` and
`attn_precision` (None), as core passes it (so `cond_or_uncond`, `sigmas`, `block`, `block_index`... are there).

Tokens are the frames folded into the batch: a call on B videos of F frames has B*F rows of H*W tokens, batch-major
(all frames of video 0 first), so a patch that splits the batch by `cond_or_uncond` (NAG, SAG) splits it by video.
When the text context holds one row per video, patches see it repeated to one row per frame (the batch of the
tokens), as core's UNet has it.

The temporal transformers are not reached by these patches: their "tokens" are the F frames of one pixel (batch
B*H*W), where patches written for image attention (PAG's identity attention, NAG's per-token normalisation, SAG's
H*W attention map) would do something else than they mean. They keep the pack's own options (temporal strength,
FreeNoise windows).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

_ATTENTION_PATCHES = ("attn1_patch", "attn2_patch", "attn1_output_patch", "attn2_output_patch", "middle_patch")


def active(transformer_options) -> bool:
    """Whether the options hold anything a spatial transformer block must honour (else the plain fast path runs)."""
    if not transformer_options:
        return False
    patches = transformer_options.get("patches") or {}
    replace = transformer_options.get("patches_replace") or {}
    return (any(patches.get(name) for name in _ATTENTION_PATCHES) or bool(replace.get("attn1"))
            or bool(replace.get("attn2")) or "optimized_attention_override" in transformer_options)


def sdpa_attention(q, k, v, heads, mask=None, attn_precision=None, skip_reshape=False, skip_output_reshape=False,
                   **kwargs):
    """The built-in attention in ComfyUI's calling convention: q/k/v `[b, n, heads*d]` -> `[b, n, heads*d]`
    (`skip_reshape`: already `[b, heads, n, d]`; `skip_output_reshape`: return `[b, heads, n, d]`)."""
    if not skip_reshape:
        q, k, v = (t.unflatten(-1, (heads, -1)).transpose(1, 2) for t in (q, k, v))
    if mask is not None and mask.dtype != torch.bool:
        mask = mask.to(q.dtype)
    out = F.scaled_dot_product_attention(q, k, v, attn_mask=mask)
    if skip_output_reshape:
        return out
    return out.transpose(1, 2).flatten(2)


def attention(q, k, v, heads, transformer_options=None):
    """`sdpa_attention`, or `optimized_attention_override(sdpa_attention, ...)` when the options name one."""
    override = (transformer_options or {}).get("optimized_attention_override")
    if override is not None:
        return override(sdpa_attention, q, k, v, heads, transformer_options=transformer_options)
    return sdpa_attention(q, k, v, heads)


def _attend(attn, n, context, value, options):
    """Attention module `attn` on tokens `n` (keys from `context`, values from `value`, both default to `n`)."""
    context = n if context is None else context
    value = context if value is None else value
    q, k, v = attn.to_q(n), attn.to_k(context), attn.to_v(value)
    return attn.to_out(attention(q, k, v, attn.heads, options))


def _replaced(attn, replace, n, context, value, extra):
    context = n if context is None else context
    value = context if value is None else value
    return attn.to_out(replace(attn.to_q(n), attn.to_k(context), attn.to_v(value), extra))


def block_forward(block, x, context, repeat_kv: int, transformer_options: dict) -> torch.Tensor:
    """TransformerBlock.forward (unet3d_attention.py) with the patch protocol; the same numbers as the plain path
    when no patch changes anything."""
    patches = transformer_options.get("patches") or {}
    replace = transformer_options.get("patches_replace") or {}
    extra = {k: v for k, v in transformer_options.items() if k not in ("patches", "patches_replace")}
    extra.update(n_heads=block.attn1.heads, dim_head=block.attn1.to_q.out_features // block.attn1.heads,
                 attn_precision=None)
    where = transformer_options.get("block")
    indexed = (where[0], where[1], transformer_options.get("block_index", 0)) if where is not None else None

    def lookup(table):
        if indexed in table:
            return table[indexed]
        return table.get(where) if where is not None else None

    n = block.norm1(x)
    context1 = value1 = None
    if patches.get("attn1_patch"):
        context1 = value1 = n
        for patch in patches["attn1_patch"]:
            n, context1, value1 = patch(n, context1, value1, extra)
    replace1 = lookup(replace.get("attn1") or {})
    n = (_replaced(block.attn1, replace1, n, context1, value1, extra) if replace1 is not None
         else _attend(block.attn1, n, context1, value1, transformer_options))
    for patch in patches.get("attn1_output_patch") or ():
        n = patch(n, extra)
    x = n + x
    for patch in patches.get("middle_patch") or ():
        x = patch(x, extra)

    n = block.norm2(x)
    if context is None:  # a self-attention attn2 (temporal-style block): keys from the tokens themselves
        context2 = n
    else:
        context2 = context.to(n.dtype)
        if repeat_kv > 1:
            context2 = context2.repeat_interleave(repeat_kv, dim=0)  # one row per token row, as core's batch
    value2 = None
    if patches.get("attn2_patch"):
        value2 = context2
        for patch in patches["attn2_patch"]:
            n, context2, value2 = patch(n, context2, value2, extra)
    replace2 = lookup(replace.get("attn2") or {})
    n = (_replaced(block.attn2, replace2, n, context2, value2, extra) if replace2 is not None
         else _attend(block.attn2, n, context2, value2, transformer_options))
    for patch in patches.get("attn2_output_patch") or ():
        n = patch(n, extra)
    x = n + x
    return block.ff(block.norm3(x)).add_(x)

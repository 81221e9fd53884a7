"""ComfyUI's attention patch protocol on the UNet3D's spatial transformers (model_loaders/attention_patches.py),
checked against the original modelscope UNetSD: patches that change nothing give its numbers; a replaced attention
gives the numbers of the original with that attention replaced the same way."""

import pytest
import torch

from cinematic.model_loaders.unet_loader import unet_from_state_dict
from cinematic_testing import tiny_unet

TOL = 1e-4


@pytest.fixture(scope="module")
def reference():
    return tiny_unet.reference_unet(seed=5)


@pytest.fixture(scope="module")
def ours(reference):
    return unet_from_state_dict(reference.state_dict(), "fp32")


def _inputs(frames=3):
    gen = torch.Generator().manual_seed(21)
    return (torch.randn(2, 4, frames, 8, 8, generator=gen), torch.tensor([600, 40]),
            torch.randn(2, 77, 1024, generator=gen))


def _spatial_blocks(model):
    """(block name, id) of every spatial transformer, from the original key names."""
    names = []
    for key, value in model.state_dict().items():
        if key.endswith(".transformer_blocks.0.attn2.to_k.weight") and value.shape[1] == 1024:  # cross-attention
            part, index = key.split(".")[:2]
            block = {"input_blocks": "input", "middle_block": "middle", "output_blocks": "output"}[part]
            names.append((block, 0 if block == "middle" else int(index)))
    return names


def test_noop_patches_give_the_original(reference, ours):
    """Every patch kind present but changing nothing: the patched path runs and gives the original's numbers;
    each patch is called once per spatial transformer block, with core's extra_options."""
    x, t, context = _inputs()
    calls = {"attn1_patch": 0, "attn2_patch": 0, "attn1_output_patch": 0, "attn2_output_patch": 0}
    seen = []

    def qkv_patch(name):
        def patch(n, c, v, extra):
            calls[name] += 1
            seen.append((extra["block"], extra["block_index"], extra["n_heads"], extra["dim_head"],
                         extra.get("cond_or_uncond"), tuple(n.shape), tuple(c.shape)))
            return n, c, v
        return patch

    def out_patch(name):
        def patch(out, extra):
            calls[name] += 1
            return out
        return patch

    options = {"cond_or_uncond": [0, 1], "patches": {
        "attn1_patch": [qkv_patch("attn1_patch")], "attn2_patch": [qkv_patch("attn2_patch")],
        "attn1_output_patch": [out_patch("attn1_output_patch")],
        "attn2_output_patch": [out_patch("attn2_output_patch")]}}
    with torch.no_grad():
        expected = reference(x, t, context)
        got = ours(x, t, context, transformer_options=options)
    assert (got - expected).abs().max().item() <= TOL
    spatial = len(_spatial_blocks(ours))
    assert calls == dict.fromkeys(calls, spatial)
    attn2 = [s for s in seen if s[-1][1] == 77]
    # rows = B*F (frames folded into the batch); the text context repeated to one row per frame
    assert all(s[-2][0] == 2 * 3 and s[-1][0] == 2 * 3 for s in attn2)
    assert all(s[4] == [0, 1] for s in seen)  # the caller's options reach the patches
    assert all(s[3] == 64 and s[1] == 0 for s in seen)


@pytest.mark.parametrize("key_with_index", [True, False])
def test_replaced_self_attention_as_pag(reference, ours, key_with_index):
    """PAG's patch (attention -> v) on the middle block, keyed ("middle", 0, 0) or ("middle", 0): the original with
    the same self-attention replaced; the other blocks untouched."""
    x, t, context = _inputs()
    calls = []

    def identity_attention(q, k, v, extra):
        calls.append(extra["block"])
        return v

    key = ("middle", 0, 0) if key_with_index else ("middle", 0)
    options = {"patches_replace": {"attn1": {key: identity_attention}}}
    attn1 = reference.middle_block[1].transformer_blocks[0].attn1
    original_forward = attn1.forward
    attn1.forward = lambda h, context=None, mask=None: attn1.to_out(attn1.to_v(h))
    try:
        with torch.no_grad():
            expected = reference(x, t, context)
    finally:
        attn1.forward = original_forward
    with torch.no_grad():
        plain = ours(x, t, context)
        got = ours(x, t, context, transformer_options=options)
    assert calls == [("middle", 0)]
    assert (got - expected).abs().max().item() <= TOL
    assert (got - plain).abs().max().item() > 1e-3


def test_replace_keys_reach_every_spatial_block(ours):
    x, t, context = _inputs()
    seen = []

    def record(q, k, v, extra):
        from cinematic.model_loaders.attention_patches import sdpa_attention

        seen.append((extra["block"], extra["block_index"], q.shape[0], k.shape[1]))
        return sdpa_attention(q, k, v, extra["n_heads"])

    blocks = _spatial_blocks(ours)
    options = {"patches_replace": {"attn2": {(b, i, 0): record for b, i in blocks}}}
    with torch.no_grad():
        plain = ours(x, t, context)
        got = ours(x, t, context, transformer_options=options)
    assert sorted(s[0] for s in seen) == sorted(blocks)
    assert all(s[2] == 6 and s[3] == 77 for s in seen)
    assert (got - plain).abs().max().item() <= 1e-5


def test_optimized_attention_override(ours):
    x, t, context = _inputs()
    used = []

    def override(default, q, k, v, heads, **kwargs):
        used.append(heads)
        return default(q, k, v, heads, **kwargs)

    def doubled(default, q, k, v, heads, **kwargs):
        return 2 * default(q, k, v, heads, **kwargs)

    with torch.no_grad():
        plain = ours(x, t, context)
        same = ours(x, t, context, transformer_options={"optimized_attention_override": override})
        changed = ours(x, t, context, transformer_options={"optimized_attention_override": doubled})
    assert len(used) == 2 * len(_spatial_blocks(ours))  # attn1 and attn2 of every spatial block
    assert (same - plain).abs().max().item() <= 1e-5
    assert (changed - plain).abs().max().item() > 1e-3


def test_temporal_transformers_are_not_patched(ours):
    """Patches reach the spatial blocks only (documented): a replace keyed on the block of the input temporal
    transformer (input_blocks.0, no spatial transformer there) is never called."""
    x, t, context = _inputs()
    called = []
    options = {"patches_replace": {"attn1": {("input", 0, 0): lambda q, k, v, e: called.append(1) or v,
                                             ("input", 0): lambda q, k, v, e: called.append(1) or v}}}
    with torch.no_grad():
        plain = ours(x, t, context)
        got = ours(x, t, context, transformer_options=options)
    assert not called
    assert torch.equal(got, plain)


def test_forward_runner_wraps_the_forward(ours):
    """FORWARD_RUNNER (the bridge's DIFFUSION_MODEL executor) receives `_forward` and core's argument order."""
    from cinematic.model_loaders.unet3d import FORWARD_RUNNER

    x, t, context = _inputs()
    seen = []

    def runner(forward, *args, **kwargs):
        seen.append(len(args))
        assert isinstance(args[-1], dict)  # transformer_options last, where core's wrappers look for it
        return forward(*args, **kwargs) * 0.5

    with torch.no_grad():
        plain = ours(x, t, context)
        got = ours(x, t, context, transformer_options={FORWARD_RUNNER: runner})
    assert seen == [5]
    assert torch.allclose(got, plain * 0.5)

"""The UNet3D equals the original (modelscope UNetSD) and diffusers' UNet3DConditionModel on the same weights."""

import pytest
import torch

from cinematic.model_loaders.unet3d import UNet3D, UNet3DConfig
from cinematic.model_loaders.unet_loader import load_unet, unet_from_state_dict
from cinematic_testing import refs, tiny_unet

TOL = 1e-4


@pytest.fixture(scope="module")
def reference():
    return tiny_unet.reference_unet(seed=3)


@pytest.fixture(scope="module")
def ours(reference):
    return unet_from_state_dict(reference.state_dict(), "fp32")


@pytest.mark.parametrize("frames", [1, 8, 16])
def test_matches_original_unetsd(reference, ours, frames):
    gen = torch.Generator().manual_seed(frames)
    x = torch.randn(2, 4, frames, 16, 16, generator=gen)
    context = torch.randn(2, 77, 1024, generator=gen)
    for t in ([999, 999], [500, 10], [1, 0]):
        timesteps = torch.tensor(t)
        with torch.no_grad():
            expected = reference(x, timesteps, context)
            got = ours(x, timesteps, context)
        assert got.shape == expected.shape == x.shape
        assert (got - expected).abs().max().item() <= TOL, f"t={t}, frames={frames}"


@pytest.mark.parametrize("frames", [1, 8, 16])
def test_matches_diffusers_unet3d(reference, frames, tmp_path_factory):
    diffusers_unet = tiny_unet.diffusers_model(reference.state_dict())
    # Our model loads the diffusers layout through the loader's own key conversion.
    folder = tmp_path_factory.mktemp("diffusers")
    tiny_unet.write_diffusers_folder(reference.state_dict(), folder)
    ours = load_unet(folder, "fp32")
    gen = torch.Generator().manual_seed(100 + frames)
    x = torch.randn(2, 4, frames, 16, 16, generator=gen)
    context = torch.randn(2, 77, 1024, generator=gen)
    for t in ([981, 981], [421, 42]):
        timesteps = torch.tensor(t)
        with torch.no_grad():
            expected = diffusers_unet(x, timesteps, encoder_hidden_states=context).sample
            got = ours(x, timesteps, context)
        assert (got - expected).abs().max().item() <= TOL, f"t={t}, frames={frames}"


def test_context_of_other_lengths(ours):
    # Core CLIPTextEncode makes 154 tokens for a long prompt: any context length is accepted.
    x = torch.randn(1, 4, 2, 8, 8)
    with torch.no_grad():
        out = ours(x, torch.tensor([10]), torch.randn(1, 154, 1024))
    assert out.shape == x.shape and torch.isfinite(out).all()


def test_full_size_structure_equals_original():
    """text-to-video-ms-1.7b: 1,411,233,860 parameters, the 1480 keys and shapes of text2video_pytorch_model.pth."""
    UNetSD = refs.modelscope_module("unet_sd").UNetSD
    with torch.device("meta"):
        reference = UNetSD(**tiny_unet.FULL_REFERENCE_KWARGS)
        expected = {k: tuple(v.shape) for k, v in reference.state_dict().items()}
        config = UNet3DConfig.from_state_dict(expected)
        ours = UNet3D(config)
    got = {k: tuple(v.shape) for k, v in ours.state_dict().items()}
    assert len(expected) == 1480
    assert got == expected
    assert sum(p.numel() for p in ours.parameters()) == 1_411_233_860
    real_cfg = dict(unet_in_dim=4, unet_dim=320, unet_context_dim=1024, unet_out_dim=4, unet_dim_mult=[1, 2, 4, 4],
                    unet_num_heads=8, unet_head_dim=64, unet_res_blocks=2, unet_attn_scales=[1, 0.5, 0.25],
                    temporal_attention="True")
    assert UNet3DConfig.from_modelscope_json(real_cfg) == config


def test_full_size_diffusers_keys_convert():
    """Every key of diffusers' full-size UNet3DConditionModel maps onto one original key of the same size."""
    from diffusers import UNet3DConditionModel

    from cinematic.model_loaders.unet_loader import DiffusersRenamer, _fix_temporal_projections

    with torch.device("meta"):
        d = UNet3DConditionModel(cross_attention_dim=1024, attention_head_dim=64, block_out_channels=(320, 640, 1280, 1280))
        UNetSD = refs.modelscope_module("unet_sd").UNetSD
        reference = UNetSD(**tiny_unet.FULL_REFERENCE_KWARGS)
    d_sd = d.state_dict()
    rename = DiffusersRenamer(d_sd.keys())
    converted = {rename(k): v for k, v in d_sd.items()}
    _fix_temporal_projections(converted)
    expected = {k: tuple(v.shape) for k, v in reference.state_dict().items()}
    assert {k: tuple(v.shape) for k, v in converted.items()} == expected


def test_latent_sizes_not_divisible_by_the_downsampling(ours):
    # 48x80 pixels -> a 6x10 latent: halves to 3x5, then 2x3; the upsamplers return to the skip sizes.
    x = torch.randn(1, 4, 2, 6, 10)
    with torch.no_grad():
        out = ours(x, torch.tensor([500]), torch.randn(1, 77, 1024))
    assert out.shape == x.shape and torch.isfinite(out).all()


def _step_inputs(gen):
    """A CFG-sized step on the tiny model: 2 videos of 5 frames at 16x16 latents, two timesteps, one prompt each."""
    return (torch.randn(2, 4, 5, 16, 16, generator=gen), torch.tensor([700, 30]),
            torch.randn(2, 77, 1024, generator=gen))


def test_layouts_and_chunking_change_nothing_but_speed(reference, ours, monkeypatch):
    """Channels-last activations (the half-precision default) and the chunked feed-forward give the original's
    numbers too; per-frame context rows equal to the per-video ones give the same result."""
    from cinematic.model_loaders import unet3d_attention

    x, t, context = _step_inputs(torch.Generator().manual_seed(7))
    with torch.no_grad():
        expected = reference(x, t, context)
        ours.channels_last = True
        try:
            nhwc = ours(x, t, context)
        finally:
            ours.channels_last = None
        monkeypatch.setattr(unet3d_attention, "FF_CHUNK_TOKENS", 100)  # many chunks everywhere
        chunked = ours(x, t, context)
        per_frame = ours(x, t, context.repeat_interleave(5, dim=0))
    for got in (nhwc, chunked, per_frame):
        assert (got - expected).abs().max().item() <= TOL


def test_half_precision_runs_channels_last_and_stays_close(reference, ours):
    from cinematic.model_loaders.unet_loader import unet_from_state_dict

    bf16 = unet_from_state_dict(reference.state_dict(), "bf16")
    gen = torch.Generator().manual_seed(8)
    x = torch.randn(1, 4, 4, 16, 16, generator=gen)
    t = torch.tensor([500])
    context = torch.randn(1, 77, 1024, generator=gen)
    with torch.no_grad():
        assert bf16._use_channels_last(x)
        got = bf16(x, t, context).float()
        expected = ours(x, t, context)
    assert ((got - expected).abs().max() / expected.abs().max()).item() < 0.05


@pytest.mark.parametrize("channels_last", [False, True])
def test_in_place_adds_leave_inputs_alone_and_keep_gradients(reference, ours, channels_last):
    """The residual adds run in place on each layer's fresh output: the caller's latent is never written to, and
    autograd still accepts the graph (LoRA trainers backpropagate through it) with the original's gradients."""
    gen = torch.Generator().manual_seed(9)
    x = torch.randn(1, 4, 3, 16, 16, generator=gen)
    t = torch.tensor([400])
    context = torch.randn(1, 77, 1024, generator=gen)
    ours.channels_last = channels_last
    try:
        ours_x = x.clone().requires_grad_(True)
        out = ours(ours_x, t, context)
        out.square().sum().backward()
    finally:
        ours.channels_last = None
    assert torch.equal(ours_x.detach(), x)
    ref_x = x.clone().requires_grad_(True)
    expected = reference(ref_x, t, context)
    expected.square().sum().backward()
    assert (out.detach() - expected.detach()).abs().max().item() <= TOL
    scale = ref_x.grad.abs().max().item()
    assert (ours_x.grad - ref_x.grad).abs().max().item() <= TOL * max(scale, 1.0)
    ours.zero_grad(set_to_none=True)
    reference.zero_grad(set_to_none=True)


def _onednn_events(fn):
    from torch.profiler import ProfilerActivity, profile

    with profile(activities=[ProfilerActivity.CPU]) as prof:
        out = fn()
    return out, sum(1 for e in prof.events() if "_linear_pointwise" in e.name)


def test_onednn_linear_is_taken_and_equals_torch(reference, ours, monkeypatch):
    """Large CPU linears run oneDNN with the weight packed per call (fp32 there is ~10% faster per UNet forward):
    the UNet really takes that path, still equals the original, and training (autograd) keeps torch's F.linear."""
    from cinematic.model_loaders import ops as ops_module

    if not ops_module._onednn_ready(torch.float32):
        pytest.skip("oneDNN linear is off on this CPU (needs AVX-512 and torch's mkldnn ops)")
    monkeypatch.setattr(ops_module, "ONEDNN_MIN_ROWS", 1)  # the tiny model's calls are small
    gen = torch.Generator().manual_seed(8)
    x, t, context = _step_inputs(gen)
    with torch.no_grad():
        expected = reference(x, t, context)
        got, calls = _onednn_events(lambda: ours(x, t, context))
    assert calls > 20
    assert (got - expected).abs().max().item() <= TOL

    w, b = torch.randn(96, 64, generator=gen), torch.randn(96, generator=gen)
    a = torch.randn(3, 50, 64, generator=gen)
    with torch.no_grad():
        fast, calls = _onednn_events(lambda: ops_module.linear(a, w, b))
        assert calls == 1 and (fast - torch.nn.functional.linear(a, w, b)).abs().max().item() <= 1e-5
        if ops_module._onednn_ready(torch.bfloat16):
            fast16 = ops_module.linear(a.bfloat16(), w.bfloat16(), b.bfloat16()).float()
            slow16 = torch.nn.functional.linear(a.bfloat16(), w.bfloat16(), b.bfloat16()).float()
            assert (fast16 - slow16).abs().max().item() <= 0.05
    a.requires_grad_(True)
    out, calls = _onednn_events(lambda: ops_module.linear(a, w, b))
    assert calls == 0 and out.requires_grad

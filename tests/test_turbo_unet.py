"""The guidance-embedding UNet3D (T2V-Turbo's `time_cond_proj_dim=256`) equals diffusers' UNet3DConditionModel given
the same w-embedding as `timestep_cond`; the embedding is made when a LoRA needs it, with the authors' init."""

import math

import torch
from safetensors.torch import save_file

from cinematic.model_loaders.guidance_embedding import (GUIDANCE_SCALE, TORCH_DEFAULT_SEED, authors_init_weight)
from cinematic.model_loaders.unet_loader import load_unet, unet_from_state_dict
from cinematic_testing import tiny_unet

TOL = 1e-4


def _w_embedding(w: float, dim: int = 256) -> torch.Tensor:
    """T2V-Turbo's guidance embedding, written here from its definition: w * 1000, dim / 2 frequencies
    exp(-ln(10000) k / (dim / 2 - 1)), [sin, cos]."""
    half = dim // 2
    scale = math.log(10000.0) / (half - 1)
    freqs = torch.tensor([math.exp(-scale * k) for k in range(half)], dtype=torch.float32)
    args = torch.tensor([w * 1000.0]) [:, None] * freqs[None]
    return torch.cat([args.sin(), args.cos()], dim=1)


def _turbo_diffusers(seed=3):
    """A tiny diffusers UNet3DConditionModel(time_cond_proj_dim=256) with the tiny reference weights and a random
    cond_proj."""
    from diffusers import UNet3DConditionModel

    sd = tiny_unet.tiny_state_dict(seed)
    plain = tiny_unet.diffusers_model(sd)
    model = UNet3DConditionModel(**tiny_unet.TINY_DIFFUSERS_CONFIG, time_cond_proj_dim=256).eval()
    missing = model.load_state_dict(plain.state_dict(), strict=False).missing_keys
    assert missing == ["time_embedding.cond_proj.weight"], missing
    with torch.no_grad():
        model.time_embedding.cond_proj.weight.copy_(
            0.05 * torch.randn(model.time_embedding.cond_proj.weight.shape, generator=torch.Generator().manual_seed(9)))
    return model


def test_guidance_embedding_unet_equals_diffusers(tmp_path):
    reference = _turbo_diffusers()
    folder = tmp_path / "turbo" / "unet"
    folder.mkdir(parents=True)
    save_file({k: v.contiguous() for k, v in reference.state_dict().items()},
              str(folder / "diffusion_pytorch_model.safetensors"))
    ours = load_unet(folder.parent, "fp32")
    assert ours.config.time_cond_proj_dim == 256
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(1, 4, 3, 8, 8, generator=gen)
    context = torch.randn(1, 77, 1024, generator=gen)
    t = torch.tensor([759])
    results = {}
    for w in (7.5, 2.0):
        with torch.no_grad():
            expected = reference(x, t, encoder_hidden_states=context, timestep_cond=_w_embedding(w)).sample
            got = ours(x, t, context, transformer_options={GUIDANCE_SCALE: w})
            got_kw = ours(x, t, context, guidance=torch.tensor([w]))  # ComfyUI's extra-conds path
        rel = ((got - expected).abs().max() / expected.abs().max()).item()
        assert rel <= TOL, (w, rel)
        assert torch.equal(got, got_kw)
        results[w] = got
    # the scale matters (the embedding is really used), and without a scale the UNet runs as diffusers without one
    with torch.no_grad():
        plain = ours(x, t, context)
        expected_plain = reference(x, t, encoder_hidden_states=context).sample
    assert (results[7.5] - results[2.0]).abs().max() > 1e-3
    assert ((plain - expected_plain).abs().max() / expected_plain.abs().max()).item() <= TOL


def test_single_file_with_the_embedding_loads():
    reference = _turbo_diffusers()
    sd = {f"model.diffusion_model.{k}": v for k, v in reference.state_dict().items()}
    ours = unet_from_state_dict(sd, "fp32")
    assert ours.config.time_cond_proj_dim == 256
    assert torch.equal(ours.time_cond_proj.weight, reference.time_embedding.cond_proj.weight)


def test_authors_init_is_what_diffusers_draws_at_torchs_default_seed():
    """The default base of a LoRA-created embedding: what a fresh process building diffusers' UNet (with
    time_cond_proj_dim=256) draws for cond_proj, before anything else touched torch's RNG."""
    from diffusers import UNet3DConditionModel

    state = torch.random.get_rng_state()
    try:
        torch.manual_seed(TORCH_DEFAULT_SEED)
        model = UNet3DConditionModel(**tiny_unet.TINY_DIFFUSERS_CONFIG, time_cond_proj_dim=256)
    finally:
        torch.random.set_rng_state(state)
    expected = model.time_embedding.cond_proj.weight.detach()
    got = authors_init_weight(64, 4, 256)
    assert torch.equal(got, expected)

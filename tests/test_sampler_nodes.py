"""The sampler nodes as a user runs them: seeds, cfg 1, denoise, bad input, and the whole chain end to end."""

import pytest
import torch

from cinematic.model_loaders.checkpoint import load_checkpoint
from cinematic.model_loaders.unet_loader import unet_from_state_dict
from cinematic_testing import tiny_checkpoint, tiny_unet
from cinematic_testing.tiny_checkpoint import VAE_SCALE


class CountingUNet(torch.nn.Module):
    """The real tiny UNet3D, counting its forward passes (no mock: every call runs the model)."""

    def __init__(self, unet):
        super().__init__()
        self.unet = unet
        self.calls = 0

    @property
    def dtype(self):
        return self.unet.dtype

    def forward(self, x, t, context, transformer_options=None):
        self.calls += 1
        return self.unet(x, t, context, transformer_options=transformer_options)


@pytest.fixture(scope="module")
def unet():
    return unet_from_state_dict(tiny_unet.tiny_state_dict(seed=4), "fp32")


def _cond(seed, tokens=77, width=1024):
    return [[torch.randn(1, tokens, width, generator=torch.Generator().manual_seed(seed)),
             {"pooled_output": torch.zeros(1, width)}]]


def _run(pack, unet, **kw):
    node = pack.NODE_CLASS_MAPPINGS["CinematicSampler"]()
    latent = kw.pop("latent", {"samples": torch.zeros(1, 4, 2, 8, 8)})
    args = dict(seed=3, steps=4, cfg=5.0, sampler_name="ddim", scheduler="modelscope", denoise=1.0)
    args.update(kw)
    return node.sample(unet, _cond(1), _cond(2), latent, **args)[0]["samples"]


def test_empty_latent(pack):
    node = pack.NODE_CLASS_MAPPINGS["CinematicEmptyVideoLatent"]()
    (latent,) = node.generate(576, 320, 24, 2)
    assert latent["samples"].shape == (2, 4, 24, 40, 72)
    assert not latent["samples"].any()
    with pytest.raises(ValueError, match="multiples of 8"):
        node.generate(250, 256, 16, 1)


def test_same_seed_same_result_bit_for_bit(pack, unet):
    a = _run(pack, unet, sampler_name="euler_ancestral", scheduler="karras")
    b = _run(pack, unet, sampler_name="euler_ancestral", scheduler="karras")
    c = _run(pack, unet, sampler_name="euler_ancestral", scheduler="karras", seed=4)
    assert torch.equal(a, b)
    assert not torch.equal(a, c)


def test_cfg_one_makes_one_call_per_step(pack, unet):
    counting = CountingUNet(unet)
    _run(pack, counting, cfg=1.0, steps=5, sampler_name="euler", scheduler="karras")
    assert counting.calls == 5
    counting.calls = 0
    _run(pack, counting, cfg=7.0, steps=5, sampler_name="euler", scheduler="karras")
    assert counting.calls == 5  # cond and uncond batched into one forward


def test_conditioning_of_different_lengths(pack, unet):
    """Core CLIPTextEncode makes 154 tokens for a long prompt; positive and negative may differ in length."""
    counting = CountingUNet(unet)
    node = pack.NODE_CLASS_MAPPINGS["CinematicSampler"]()
    (out,) = node.sample(counting, _cond(1, tokens=154), _cond(2, tokens=77), {"samples": torch.zeros(1, 4, 2, 8, 8)},
                         3, 3, 5.0, "euler", "karras", 1.0)
    assert torch.isfinite(out["samples"]).all()
    assert counting.calls == 6  # two passes per step when the lengths differ


def test_denoise_half_runs_half_the_steps_from_the_input(pack, unet):
    counting = CountingUNet(unet)
    source = torch.randn(1, 4, 2, 8, 8, generator=torch.Generator().manual_seed(9))
    out = _run(pack, counting, cfg=1.0, steps=10, denoise=0.5, sampler_name="euler", scheduler="karras",
               latent={"samples": source})
    assert counting.calls == 5
    full = _run(pack, unet, cfg=1.0, steps=10, denoise=1.0, sampler_name="euler", scheduler="karras",
                latent={"samples": source})
    # starting from the input keeps it closer than starting from noise
    assert (out - source).abs().mean() < (full - source).abs().mean()


@pytest.mark.parametrize("latent,cond,needle", [
    (torch.zeros(1, 4, 8, 8), 1024, "5-D video latent"),
    (torch.zeros(1, 16, 2, 8, 8), 1024, "16 channels"),
    (torch.zeros(1, 4, 2, 8, 8), 768, "SD1.5 CLIP"),
])
def test_bad_input(pack, unet, latent, cond, needle):
    node = pack.NODE_CLASS_MAPPINGS["CinematicSampler"]()
    with pytest.raises(ValueError, match=needle):
        node.sample(unet, _cond(1, width=cond), _cond(2, width=cond), {"samples": latent}, 0, 2, 5.0, "ddim",
                    "modelscope", 1.0)


def test_end_to_end_original_layout(pack, tmp_path):
    """text encode -> empty latent -> sample -> decode on a tiny model in the original layout, through the nodes."""
    folder = tiny_checkpoint.write_original_folder(tmp_path / "tiny-t2v", seed=2)
    m = pack.NODE_CLASS_MAPPINGS
    unet, text, vae = load_checkpoint(folder, "fp32")
    (positive,) = m["CinematicTextEncode"]().encode(text, "a panda playing guitar")
    (negative,) = m["CinematicTextEncode"]().encode(text, "")
    (latent,) = m["CinematicEmptyVideoLatent"]().generate(64, 48, 3, 1)
    (sampled,) = m["CinematicSampler"]().sample(unet, positive, negative, latent, 0, 3, 9.0, "ddim", "modelscope", 1.0)
    (images,) = m["CinematicVAEDecode"]().decode(vae, sampled, 2)
    h, w = 48 // 8 * VAE_SCALE, 64 // 8 * VAE_SCALE  # the tiny VAE upsamples by 2
    assert images.shape == (3, h, w, 3)
    assert torch.isfinite(images).all() and images.min() >= 0 and images.max() <= 1


def test_latent_preview_image():
    from cinematic.nodes.sampling import latent_preview

    kind, image, size = latent_preview(torch.randn(1, 4, 5, 6, 10))
    assert kind == "JPEG" and image.size == (10, 6) and image.mode == "RGB"


def test_largest_seed_is_accepted(pack, unet):
    out = _run(pack, unet, seed=0xFFFFFFFFFFFFFFFF, sampler_name="euler_ancestral", scheduler="karras", steps=2)
    assert torch.isfinite(out).all()

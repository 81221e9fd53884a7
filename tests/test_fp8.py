"""fp8 weight storage (model_loaders/fp8_storage.py) outside ComfyUI: weights stored in float8, computed in fp32 on
the CPU; checked against the original UNetSD run on the same fp8-rounded weights (exact up to float rounding), and
against the fp32 load within the stated tolerance (README)."""

import pytest
import torch

from cinematic.model_loaders.fp8_storage import weight_bytes
from cinematic.model_loaders.unet_loader import load_unet, unet_from_state_dict
from cinematic.model_loaders.video_unet import VideoUNet, WeightDelta
from cinematic_testing import tiny_lora, tiny_unet

FP8 = ["fp8_e4m3fn", "fp8_e5m2", "fp8_e4m3fn_fast"]
#: relative L2 difference of the UNet output vs the fp32 load (random tiny weights, std 0.05: many of them are fp8
#: subnormals; measured 0.14 / 0.28, README "fp8 weights")
FP8_REL_TOL = {"fp8_e4m3fn": 0.2, "fp8_e4m3fn_fast": 0.2, "fp8_e5m2": 0.35}


@pytest.fixture(scope="module")
def sd():
    return tiny_unet.tiny_state_dict(seed=8)


@pytest.fixture(scope="module")
def fp32(sd):
    return unet_from_state_dict(sd, "fp32")


def _inputs():
    gen = torch.Generator().manual_seed(4)
    return (torch.randn(2, 4, 3, 8, 8, generator=gen), torch.tensor([700, 30]),
            torch.randn(2, 77, 1024, generator=gen))


def _rel(a, b):
    return ((a - b).norm() / b.norm()).item()


@pytest.mark.parametrize("name", FP8)
def test_stored_in_fp8_and_computed_in_fp32(sd, fp32, name, tmp_path):
    path = tiny_unet.write_original_safetensors(sd, tmp_path / "unet.safetensors")
    model = load_unet(path, name)
    fp8 = torch.float8_e5m2 if name == "fp8_e5m2" else torch.float8_e4m3fn
    params = dict(model.named_parameters())
    assert all(p.dtype == fp8 for p in params.values() if p.ndim >= 2)
    assert all(p.dtype == torch.float32 for p in params.values() if p.ndim < 2)
    assert model.dtype == fp8 and model.compute_dtype == torch.float32 and VideoUNet(model).dtype == torch.float32
    fp16 = unet_from_state_dict(sd, "fp16")
    assert weight_bytes(model) <= 0.55 * weight_bytes(fp16)

    # the original, on the same fp8-rounded weights in fp32: the cast-per-layer path computes exactly that
    reference = tiny_unet.reference_unet(seed=8)
    with torch.no_grad():
        for key, p in reference.named_parameters():
            if p.ndim >= 2:
                p.copy_(p.to(fp8).float())
    x, t, context = _inputs()
    with torch.no_grad():
        got = model(x, t, context)
        expected = reference(x, t, context)
        full = fp32(x, t, context)
    assert got.dtype == torch.float32
    assert (got - expected).abs().max().item() <= 1e-4
    assert 1e-4 < _rel(got, full) <= FP8_REL_TOL[name]


def test_lora_on_fp8_equals_lora_on_fp16(sd):
    """The same LoRA on the fp8 model and on the fp16 model: the fp8 result is within the fp8 tolerance of the fp16
    one, and the LoRA moves the fp8 model's output as it moves the fp16 model's."""
    _, _, deltas = tiny_lora.stable_lora(sd, seed=9, with_text=False)
    patches = {key: WeightDelta(diff=delta, layout="diff") for key, delta in deltas.items()}
    x, t, context = _inputs()
    outs = {}
    for name in ("fp16", "fp8_e4m3fn"):
        base = VideoUNet(unet_from_state_dict(sd, name))
        view = base.with_weight_patches(patches, 1.0, "tiny")
        before = {k: v.clone() for k, v in base.module.state_dict().items()}
        with torch.no_grad():
            plain = base(x.to(base.dtype), t, context.to(base.dtype)).float()
            with view.weights_applied():
                lora = view(x.to(base.dtype), t, context.to(base.dtype)).float()
        after = base.module.state_dict()
        assert all(torch.equal(before[k].float(), after[k].float()) for k in before)
        outs[name] = (plain, lora)
    assert _rel(outs["fp8_e4m3fn"][1], outs["fp16"][1]) <= FP8_REL_TOL["fp8_e4m3fn"]
    assert _rel(outs["fp8_e4m3fn"][1], outs["fp8_e4m3fn"][0]) > 10 * _rel(outs["fp8_e4m3fn"][1], outs["fp16"][1]) \
        or _rel(outs["fp8_e4m3fn"][1], outs["fp8_e4m3fn"][0]) > 0.05


def test_bad_weight_dtype_names_the_choices(sd):
    with pytest.raises(ValueError, match="fp8_e4m3fn"):
        unet_from_state_dict(sd, "fp8")

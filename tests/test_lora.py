"""LoRA: every format equals the UNet with the deltas merged by hand; views leave their input unchanged; stacking,
strength 0, the node, the sampler, the converter to ComfyUI's naming, and refusing another model's LoRA."""

import subprocess
import sys
from pathlib import Path

import pytest
import torch

from cinematic.model_loaders.lora import read_lora
from cinematic.model_loaders.safe_load import ModelFileError
from cinematic.model_loaders.unet_loader import unet_from_state_dict
from cinematic.model_loaders.video_unet import VideoUNet
from cinematic.nodes.model_patches import CinematicLoraLoader, CinematicTemporalStrength
from cinematic.nodes.sampling import CinematicSampler
from cinematic_testing import tiny_lora, tiny_unet

TOL = 1e-4
ROOT = Path(__file__).resolve().parents[1]
FORMATS = {"stable_lora": tiny_lora.stable_lora, "peft": tiny_lora.peft, "kohya": tiny_lora.kohya}


@pytest.fixture(scope="module")
def sd():
    return tiny_unet.tiny_state_dict(seed=5)


@pytest.fixture(scope="module")
def model(sd):
    return unet_from_state_dict(sd, "fp32")


def _inputs(frames=4, batch=1, seed=0):
    gen = torch.Generator().manual_seed(seed)
    return (torch.randn(batch, 4, frames, 8, 8, generator=gen), torch.tensor([500] * batch),
            torch.randn(batch, 77, 1024, generator=gen))


def _rel(a, b):
    return ((a - b).abs().max() / b.abs().max()).item()


def _run(unet, inputs):
    with torch.no_grad():
        if isinstance(unet, VideoUNet):
            with unet.weights_applied():
                return unet(*inputs)
        return unet(*inputs)


@pytest.mark.parametrize("fmt", list(FORMATS))
def test_each_format_equals_hand_merged_weights(fmt, sd, model, tmp_path):
    tensors, metadata, deltas = FORMATS[fmt](sd, seed=1)
    path = tiny_lora.write(tmp_path / f"{fmt}.safetensors", tensors, metadata)
    lora = read_lora(path, model)
    assert lora.format == fmt.replace("peft", "diffusers")
    assert set(lora.patches) == set(deltas), set(deltas) ^ set(lora.patches)  # every UNet layer of the file applied
    assert lora.text_encoder_keys, "the text-encoder part must be reported, not dropped silently"
    view = VideoUNet(model).with_weight_patches(lora.patches, 1.0, fmt)
    inputs = _inputs()
    got = _run(view, inputs)
    expected = _run(tiny_lora.merged(model, deltas), inputs)
    plain = _run(model, inputs)
    assert _rel(got, expected) <= TOL
    assert _rel(got, plain) > 1e-3, "the LoRA must change the output"
    # the shared module is back to its own weights afterwards, bit for bit
    assert torch.equal(_run(model, inputs), plain)


def test_pth_lora_and_strength(sd, model, tmp_path):
    tensors, _, deltas = tiny_lora.stable_lora(sd, seed=2, with_text=False)
    path = tmp_path / "lora.pt"
    torch.save(tensors, path)
    view = VideoUNet(model).with_weight_patches(read_lora(path, model).patches, 0.7, "x")
    inputs = _inputs(seed=2)
    assert _rel(_run(view, inputs), _run(tiny_lora.merged(model, deltas, 0.7), inputs)) <= TOL


def test_two_loras_stack_and_strength_zero_is_a_no_op(sd, model, models_dir):
    a, meta_a, deltas_a = tiny_lora.stable_lora(sd, seed=3)
    b, _, deltas_b = tiny_lora.kohya(sd, seed=4)
    tiny_lora.write(models_dir / "loras" / "a.safetensors", a, meta_a)
    tiny_lora.write(models_dir / "loras" / "sub" / "b.safetensors", b)
    node = CinematicLoraLoader()
    assert "sub/b.safetensors" in CinematicLoraLoader.INPUT_TYPES()["required"]["lora_name"][0]
    base = VideoUNet(model)
    (one,) = node.apply(base, "a.safetensors", 1.0)
    (two,) = node.apply(one, "sub/b.safetensors", -0.5)
    (zero,) = node.apply(two, "a.safetensors", 0.0)
    inputs = _inputs(seed=3)
    expected = tiny_lora.merged(tiny_lora.merged(model, deltas_a, 1.0), deltas_b, -0.5)
    assert _rel(_run(two, inputs), _run(expected, inputs)) <= TOL
    assert torch.equal(_run(zero, inputs), _run(two, inputs))
    # the inputs of each node are unchanged views
    assert torch.equal(_run(base, inputs), _run(model, inputs))
    assert len(one.weight_patches) == 1 and len(two.weight_patches) == 2 and not base.weight_patches


def test_lora_through_the_sampler_node(sd, model, models_dir):
    tensors, meta, deltas = tiny_lora.peft(sd, seed=6)
    tiny_lora.write(models_dir / "loras" / "p.safetensors", tensors, meta)
    (view,) = CinematicLoraLoader().apply(VideoUNet(model), "p.safetensors", 1.0)
    latent = {"samples": torch.zeros(1, 4, 3, 8, 8)}
    cond = [[torch.randn(1, 77, 1024, generator=torch.Generator().manual_seed(1)), {}]]
    uncond = [[torch.zeros(1, 77, 1024), {}]]
    args = dict(positive=cond, negative=uncond, latent=latent, seed=3, steps=3, cfg=7.0)
    (got,) = CinematicSampler().sample(view, **args)
    (expected,) = CinematicSampler().sample(tiny_lora.merged(model, deltas), **args)
    (plain,) = CinematicSampler().sample(VideoUNet(model), **args)
    assert _rel(got["samples"], expected["samples"]) <= TOL
    assert _rel(got["samples"], plain["samples"]) > 1e-3


def test_sd15_lora_is_refused_clearly(model, tmp_path):
    path = tiny_lora.write(tmp_path / "sd15_style.safetensors", tiny_lora.sd15_kohya())
    with pytest.raises(ModelFileError, match=r"sd15_style\.safetensors.*SD1"):
        read_lora(path, model)


def test_not_a_lora_is_refused(model, tmp_path):
    path = tiny_lora.write(tmp_path / "weights.safetensors", {"foo.weight": torch.zeros(3, 3)})
    with pytest.raises(ModelFileError, match="weights.safetensors"):
        read_lora(path, model)


def test_convert_lora_to_comfyui_naming(sd, model, tmp_path):
    """scripts/convert_lora.py writes core's own naming (diffusion_model.<key>.lora_up/down, .alpha, .diff); read back,
    it gives the same model as the source file."""
    tensors, meta, deltas = tiny_lora.stable_lora(sd, seed=7)
    src = tiny_lora.write(tmp_path / "src.safetensors", tensors, meta)
    unet_file = tiny_unet.write_original_safetensors(sd, tmp_path / "unet.safetensors")
    out = tmp_path / "converted.safetensors"
    proc = subprocess.run([sys.executable, str(ROOT / "scripts" / "convert_lora.py"), str(src), str(out),
                           "--unet", str(unet_file)], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    assert "text-encoder" in proc.stdout
    from safetensors import safe_open

    with safe_open(str(out), "pt") as f:
        keys = list(f.keys())
    assert keys and all(k.startswith("diffusion_model.") for k in keys)
    assert any(k.endswith(".diff") for k in keys) and any(k.endswith(".lora_up.weight") for k in keys)
    lora = read_lora(out, model)
    assert lora.format == "comfyui"
    view = VideoUNet(model).with_weight_patches(lora.patches, 1.0, "converted")
    inputs = _inputs(seed=7)
    assert _rel(_run(view, inputs), _run(tiny_lora.merged(model, deltas), inputs)) <= TOL


def test_temporal_strength_node_is_a_view(model):
    base = VideoUNet(model)
    (half,) = CinematicTemporalStrength().apply(base, 0.5, 0.5)
    (quarter,) = CinematicTemporalStrength().apply(half, 0.5, 1.0)
    assert quarter.transformer_options["cinematic_temporal_strength"] == (0.25, 0.5)
    assert "cinematic_temporal_strength" not in base.transformer_options
    inputs = _inputs(seed=8)
    assert not torch.equal(_run(half, inputs), _run(base, inputs))
    assert torch.equal(_run(base, inputs), _run(model, inputs))

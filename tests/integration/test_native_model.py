"""The UNet3D as a native ComfyUI model (COMFYUI_PATH): ComfyUI's partial (low-VRAM) loading, core FreeU, core
Context Windows (Manual), LoRA through Cinematic's node, the bridge and core KSampler, core LoraLoaderModelOnly on a
converted file, and no model kept alive after the workflow drops it.

Core nodes are called the way ComfyUI calls them (V1: the FUNCTION method; V3: the `execute` classmethod), on models
made by the pack's own nodes inside the running ComfyUI; the leak check runs whole prompts through the executor.
"""

import gc
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from cinematic_testing.comfy_harness import call_node as _call, pack_module as _pack

COMFYUI_PATH = os.environ.get("COMFYUI_PATH")
pytestmark = pytest.mark.skipif(not COMFYUI_PATH, reason="COMFYUI_PATH is not set: the integration suite needs a "
                                                          "ComfyUI checkout (see scripts/setup_comfyui.sh)")
ROOT = Path(__file__).resolve().parents[2]
FREEU_MODELSCOPE = dict(b1=1.2, b2=1.4, s1=0.9, s2=0.2)


@pytest.fixture(scope="module")
def cui(tmp_path_factory):
    from cinematic_testing import tiny_lora, tiny_unet
    from cinematic_testing.comfy_harness import ComfyHarness, place_models

    harness = ComfyHarness(COMFYUI_PATH, tmp_path_factory.mktemp("comfy_native"))
    place_models(harness.models)
    sd = tiny_unet.tiny_state_dict(seed=11)
    tiny_unet.write_original_safetensors(sd, harness.models / "diffusion_models" / "tiny_unet.safetensors")
    tensors, meta, deltas = tiny_lora.stable_lora(sd, seed=12)
    tiny_lora.write(harness.models / "loras" / "tiny_stable.safetensors", tensors, meta)
    harness.lora_deltas = deltas
    harness.unet_sd = sd
    return harness


def _unet(harness):
    (unet,) = _call(harness, "CinematicUNet3DLoader", unet_name="tiny_unet.safetensors", weight_dtype="fp32")
    return unet


def _cond(seed=0, rows=1):
    gen = torch.Generator().manual_seed(seed)
    return [[torch.randn(rows, 77, 1024, generator=gen), {"pooled_output": torch.zeros(rows, 1024)}]]


def _ksampler(harness, model, frames=4, seed=3, steps=3, sampler="euler", scheduler="normal", cfg=5.0):
    latent = {"samples": torch.zeros(1, 4, frames, 8, 8)}
    (out,) = _call(harness, "KSampler", model=model, seed=seed, steps=steps, cfg=cfg, sampler_name=sampler,
                   scheduler=scheduler, positive=_cond(1), negative=_cond(2), latent_image=latent, denoise=1.0)
    return out["samples"]


def _rel(a, b):
    return ((a - b).abs().max() / b.abs().max()).item()


def test_unet_is_built_with_comfyui_cast_weight_layers(cui):
    import comfy.ops

    module = _unet(cui).module
    weighted = [m for m in module.modules() if getattr(m, "weight", None) is not None]
    assert weighted and all(isinstance(m, comfy.ops.CastWeightBiasOp) for m in weighted), \
        [type(m) for m in weighted if not isinstance(m, comfy.ops.CastWeightBiasOp)][:3]


def test_partial_load_casts_offloaded_layers_and_matches_full_load(cui):
    """ComfyUI's own ModelPatcher partial load with a budget below the model size: the layers past the budget stay on
    the offload device with comfy_cast_weights set (their LoRA deltas applied on the fly), and sampling gives the
    same latent as a full load."""
    comfy_model = _pack(cui, "nodes.comfy_model")
    sampling = _pack(cui, "samplers.sampling")
    (view,) = _call(cui, "CinematicLoraLoader", unet=_unet(cui), lora_name="tiny_stable.safetensors", strength=1.0)
    patcher = comfy_model.patcher_for(view)
    size = patcher.model_size()
    args = dict(latent=torch.zeros(1, 4, 3, 8, 8), cond=_cond(1)[0][0], uncond=_cond(2)[0][0], seed=5, steps=3,
                cfg=6.0, sampler="euler", schedule="karras")

    patcher.load(torch.device("cpu"), lowvram_model_memory=size // 3)
    try:
        modules = [m for m in view.module.modules() if hasattr(m, "comfy_cast_weights")]
        cast = [m for m in modules if m.comfy_cast_weights]
        assert 0 < len(cast) < len(modules), (len(cast), len(modules))
        assert any(getattr(m, "weight_function", None) for m in cast), "LoRA deltas on offloaded layers: on the fly"
        partial = sampling.sample(view, **args)
    finally:
        patcher.unpatch_model(torch.device("cpu"))
    patcher.load(torch.device("cpu"), full_load=True)
    try:
        assert not any(m.comfy_cast_weights for m in view.module.modules() if hasattr(m, "comfy_cast_weights"))
        full = sampling.sample(view, **args)
    finally:
        patcher.unpatch_model(torch.device("cpu"))
    assert _rel(partial, full) <= 1e-5
    # and the LoRA is really in both: a plain model samples differently
    plain_view = _unet(cui)
    plain_patcher = comfy_model.patcher_for(plain_view)
    plain_patcher.load(torch.device("cpu"), full_load=True)
    try:
        assert _rel(sampling.sample(plain_view, **args), full) > 1e-3
    finally:
        plain_patcher.unpatch_model(torch.device("cpu"))


def test_model_config_is_readable_by_core_nodes(cui):
    (model,) = _call(cui, "CinematicUNet3DToModel", unet=_unet(cui))
    config = model.model.model_config.unet_config
    assert config["model_channels"] == 64 and config["in_channels"] == 4
    assert "num_res_blocks" not in config  # else core maps SD's diffusers LoRA names onto this UNet, wrongly


def _fourier(x, threshold, scale):
    """FreeU's skip filter, by hand: scale the lowest frequencies (a (2t)x(2t) square around DC) of each map."""
    freq = torch.fft.fftshift(torch.fft.fftn(x.float(), dim=(-2, -1)), dim=(-2, -1))
    _, _, h, w = freq.shape
    mask = torch.ones_like(freq.real)
    ch, cw = h // 2, w // 2
    mask[..., ch - threshold:ch + threshold, cw - threshold:cw + threshold] = scale
    freq = torch.fft.ifftshift(freq * mask, dim=(-2, -1))
    return torch.fft.ifftn(freq, dim=(-2, -1)).real.to(x.dtype)


def _freeu_by_hand(model_channels, b1, b2, s1, s2):
    scales = {model_channels * 4: (b1, s1), model_channels * 2: (b2, s2)}

    def patch(h, skip, options):
        if h.shape[1] in scales:
            b, s = scales[h.shape[1]]
            h = torch.cat([h[:, : h.shape[1] // 2] * b, h[:, h.shape[1] // 2:]], dim=1)
            skip = _fourier(skip, 1, s)
        return h, skip

    return patch


def test_core_freeu(cui):
    unet = _unet(cui)
    (model,) = _call(cui, "CinematicUNet3DToModel", unet=unet)
    plain = _ksampler(cui, model)
    (neutral,) = _call(cui, "FreeU", model=model, b1=1.0, b2=1.0, s1=1.0, s2=1.0)
    assert _rel(_ksampler(cui, neutral), plain) <= 1e-4  # core's FFT round trip only
    (freeu,) = _call(cui, "FreeU", model=model, **FREEU_MODELSCOPE)
    changed = _ksampler(cui, freeu)
    assert _rel(changed, plain) > 1e-3
    # core's patch on our UNet == the FreeU formula by hand, one model call
    gen = torch.Generator().manual_seed(0)
    x, t, ctx = torch.randn(2, 4, 3, 8, 8, generator=gen), torch.tensor([400, 400]), torch.randn(2, 77, 1024)
    with torch.no_grad():
        core = unet.module(x, t, ctx, transformer_options=freeu.model_options["transformer_options"])
        hand = unet.module(x, t, ctx, transformer_options={
            "patches": {"output_block_patch": [_freeu_by_hand(64, **FREEU_MODELSCOPE)]}})
        none = unet.module(x, t, ctx)
    assert _rel(core, hand) <= 1e-4 and _rel(core, none) > 1e-3


def test_core_context_windows_on_the_frame_axis(cui):
    unet = _unet(cui)
    seen = []
    handle = unet.module.register_forward_pre_hook(lambda m, args: seen.append(args[0].shape[2]))
    try:
        (model,) = _call(cui, "CinematicUNet3DToModel", unet=unet)
        window = dict(context_overlap=2, context_schedule="standard_static", context_stride=1, closed_loop=False,
                      fuse_method="pyramid", dim=2)
        schema = cui.nodes.NODE_CLASS_MAPPINGS["ContextWindowsManual"].define_schema()
        if any(spec.id == "causal_window_fix" for spec in schema.inputs):
            # newer ComfyUI prepends an anchor frame to every window after the first (for causal video VAEs);
            # this model is not causal: off, so the window is exactly context_length frames
            window["causal_window_fix"] = False
        (windowed,) = _call(cui, "ContextWindowsManual", model=model, context_length=8, **window)
        out = _ksampler(cui, windowed, frames=24, steps=2)
        assert out.shape[2] == 24 and torch.isfinite(out).all()
        assert seen and max(seen) <= 8, seen
        seen.clear()
        (whole,) = _call(cui, "ContextWindowsManual", model=model, context_length=24, **window)
        assert _rel(_ksampler(cui, whole, frames=24, steps=2), _ksampler(cui, model, frames=24, steps=2)) <= 1e-5
    finally:
        handle.remove()


def test_lora_through_the_bridge_and_core_ksampler(cui):
    from cinematic_testing import tiny_lora

    unet = _unet(cui)
    (view,) = _call(cui, "CinematicLoraLoader", unet=unet, lora_name="tiny_stable.safetensors", strength=0.8)
    (model,) = _call(cui, "CinematicUNet3DToModel", unet=view)
    got = _ksampler(cui, model)
    # by hand, from the file's own weights (unet.module itself may hold ComfyUI's patched weights right now)
    original = _pack(cui, "model_loaders.unet_loader").unet_from_state_dict(cui.unet_sd, "fp32")
    merged = tiny_lora.merged(original, cui.lora_deltas, 0.8)
    reference = _pack(cui, "model_loaders.video_unet").VideoUNet(merged)
    (merged_model,) = _call(cui, "CinematicUNet3DToModel", unet=reference)
    assert _rel(got, _ksampler(cui, merged_model)) <= 1e-4
    (plain_model,) = _call(cui, "CinematicUNet3DToModel", unet=unet)
    assert _rel(got, _ksampler(cui, plain_model)) > 1e-3
    # the view did not change its input: the plain model still samples as before the LoRA existed
    assert torch.equal(_ksampler(cui, plain_model), _ksampler(cui, plain_model))


def test_core_lora_loader_on_a_converted_file(cui, tmp_path):

    src = cui.models / "loras" / "tiny_stable.safetensors"
    unet_file = cui.models / "diffusion_models" / "tiny_unet.safetensors"
    out = cui.models / "loras" / "tiny_stable.comfy.safetensors"
    proc = subprocess.run([sys.executable, str(ROOT / "scripts" / "convert_lora.py"), str(src), str(out),
                           "--unet", str(unet_file), "--dtype", "fp32"], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    unet = _unet(cui)
    (model,) = _call(cui, "CinematicUNet3DToModel", unet=unet)
    (core_lora,) = _call(cui, "LoraLoaderModelOnly", model=model, lora_name="tiny_stable.comfy.safetensors",
                         strength_model=1.0)
    assert len(core_lora.patches) == len(cui.lora_deltas), "core applied every layer of the converted file"
    (view,) = _call(cui, "CinematicLoraLoader", unet=unet, lora_name="tiny_stable.safetensors", strength=1.0)
    (ours,) = _call(cui, "CinematicUNet3DToModel", unet=view)
    assert _rel(_ksampler(cui, core_lora), _ksampler(cui, ours)) <= 1e-4


def _count_unets():
    gc.collect()
    return sum(1 for o in gc.get_objects() if type(o).__name__ == "UNet3D" and type(o).__module__.endswith("unet3d"))


def test_switching_models_keeps_at_most_one_alive(cui):
    from cinematic_testing import tiny_unet

    for i in range(5):
        tiny_unet.write_original_safetensors(tiny_unet.tiny_state_dict(seed=20 + i),
                                             cui.models / "diffusion_models" / f"switch_{i}.safetensors")

    def prompt(i):
        return {
            "1": {"class_type": "CinematicUNet3DLoader", "inputs": {"unet_name": f"switch_{i}.safetensors",
                                                                    "weight_dtype": "fp32"}},
            "2": {"class_type": "CinematicVAELoader", "inputs": {
                "vae_name": "text-to-video-ms-1.7b/VQGAN_autoencoder.pth"}},
            "8": {"class_type": "CinematicTextEncoderLoader", "inputs": {
                "text_encoder_name": "text-to-video-ms-1.7b/open_clip_pytorch_model.bin"}},
            "3": {"class_type": "CinematicTextEncode", "inputs": {"text_encoder": ["8", 0], "text": "a cat"}},
            "4": {"class_type": "CinematicEmptyVideoLatent", "inputs": {"width": 64, "height": 64, "frames": 2,
                                                                        "batch_size": 1}},
            "5": {"class_type": "CinematicSampler", "inputs": {
                "unet": ["1", 0], "positive": ["3", 0], "negative": ["3", 0], "latent": ["4", 0], "seed": i,
                "steps": 1, "cfg": 1.0, "sampler_name": "euler", "scheduler": "karras", "denoise": 1.0}},
            "6": {"class_type": "CinematicVAEDecode", "inputs": {"vae": ["2", 0], "latent": ["5", 0],
                                                                 "frames_per_batch": 8}},
            "7": {"class_type": "CinematicSaveVideo", "inputs": {"images": ["6", 0], "fps": 8.0,
                                                                 "filename_prefix": "Cinematic/leak", "format": "gif"}},
        }

    for i in range(5):
        executor = cui.run(prompt(i))
        assert executor.success, executor.status_messages
    del executor
    assert _count_unets() <= 1

"""LoRA training inside ComfyUI on the UNet3D (COMFYUI_PATH): a short clip (an animated GIF through core LoadImage)
-> CinematicVAEEncode -> core TrainLoraNode on the bridged UNet3D -> SaveLoRA, LoraModelLoader -> KSampler, as the
`train_motion_lora` example workflow does, run through ComfyUI's executor with no manual registration. The loss
falls, the trained LoRA changes the output, the base model samples as before; the saved file loads back through
core LoraLoaderModelOnly. Also fp8 storage through the bridge."""

import os

import pytest
import torch

COMFYUI_PATH = os.environ.get("COMFYUI_PATH")
pytestmark = pytest.mark.skipif(not COMFYUI_PATH, reason="COMFYUI_PATH is not set: the integration suite needs a "
                                                          "ComfyUI checkout (see scripts/setup_comfyui.sh)")
FRAMES = 4


@pytest.fixture(scope="module")
def cui(tmp_path_factory):
    from cinematic_testing import tiny_unet
    from cinematic_testing.comfy_harness import ComfyHarness, place_models, write_motion_gif

    harness = ComfyHarness(COMFYUI_PATH, tmp_path_factory.mktemp("comfy_train"))
    place_models(harness.models)
    harness.train_sd = tiny_unet.tiny_state_dict(seed=41)
    tiny_unet.write_original_safetensors(harness.train_sd, harness.models / "diffusion_models" / "train_unet.safetensors")
    write_motion_gif(harness.base / "input" / "motion.gif", FRAMES)
    return harness


def inputs_for(harness, node_id, **given):
    """An API-format inputs dict: `given`, plus every other widget at its default (first choice of a list)."""
    cls = harness.nodes.NODE_CLASS_MAPPINGS[node_id]
    out = dict(given)
    for section in ("required", "optional"):
        for name, spec in cls.INPUT_TYPES().get(section, {}).items():
            if name in out:
                continue
            options = spec[1] if len(spec) > 1 and isinstance(spec[1], dict) else {}
            if "default" in options:
                out[name] = options["default"]
            elif isinstance(spec[0], list) and spec[0] and section == "required":
                out[name] = spec[0][0]
    return out


def save_lora_id(harness):
    return "SaveLoRA" if "SaveLoRA" in harness.nodes.NODE_CLASS_MAPPINGS else "SaveLoRANode"


def slot(harness, node_id, type_name):
    """Output slot of a type: TrainLoraNode returns (MODEL, LORA_MODEL, LOSS_MAP, INT) on v0.3.64, (LORA_MODEL,
    LOSS_MAP, INT) on 0.33."""
    return list(harness.nodes.NODE_CLASS_MAPPINGS[node_id].RETURN_TYPES).index(type_name)


def prompt(harness, train_steps=24):
    h = harness
    lora = ["8", slot(h, "TrainLoraNode", "LORA_MODEL")]
    ksampler = dict(seed=3, steps=3, cfg=5.0, sampler_name="euler", scheduler="normal", denoise=1.0)
    return {
        "1": {"class_type": "CinematicUNet3DLoader", "inputs": {"unet_name": "train_unet.safetensors",
                                                                "weight_dtype": "fp32"}},
        "2": {"class_type": "CinematicUNet3DToModel", "inputs": {"unet": ["1", 0]}},
        "3": {"class_type": "CinematicVAELoader", "inputs": {"vae_name": "text-to-video-ms-1.7b/VQGAN_autoencoder.pth"}},
        "4": {"class_type": "LoadImage", "inputs": inputs_for(h, "LoadImage", image="motion.gif")},
        "5": {"class_type": "CinematicVAEEncode", "inputs": {"vae": ["3", 0], "images": ["4", 0]}},
        "6": {"class_type": "CinematicTextEncoderLoader", "inputs": {
            "text_encoder_name": "text-to-video-ms-1.7b/open_clip_pytorch_model.bin"}},
        "7": {"class_type": "CinematicTextEncode", "inputs": {"text_encoder": ["6", 0], "text": "a square moving"}},
        "8": {"class_type": "TrainLoraNode", "inputs": inputs_for(
            h, "TrainLoraNode", model=["2", 0], latents=["5", 0], positive=["7", 0], steps=train_steps,
            learning_rate=0.003, rank=4, seed=1, training_dtype="fp32", lora_dtype="fp32",
            gradient_checkpointing=False, batch_size=1)},
        "9": {"class_type": save_lora_id(h), "inputs": inputs_for(h, save_lora_id(h), lora=lora,
                                                                  prefix="loras/cinematic_motion")},
        "10": {"class_type": "LoraModelLoader", "inputs": inputs_for(h, "LoraModelLoader", model=["2", 0],
                                                                     lora=lora, strength_model=1.0)},
        "11": {"class_type": "CinematicEmptyVideoLatent", "inputs": {"width": 64, "height": 64, "frames": FRAMES,
                                                                     "batch_size": 1}},
        "12": {"class_type": "KSampler", "inputs": dict(model=["10", 0], positive=["7", 0], negative=["7", 0],
                                                        latent_image=["11", 0], **ksampler)},
        "13": {"class_type": "KSampler", "inputs": dict(model=["2", 0], positive=["7", 0], negative=["7", 0],
                                                        latent_image=["11", 0], **ksampler)},
        # output nodes, so the executor runs both samplers
        "14": {"class_type": "SaveLatent", "inputs": {"samples": ["12", 0], "filename_prefix": "train/with_lora"}},
        "15": {"class_type": "SaveLatent", "inputs": {"samples": ["13", 0], "filename_prefix": "train/base"}},
    }


def base_prompt(harness):
    full = prompt(harness)
    return {k: full[k] for k in ("1", "2", "6", "7", "11", "13", "15")}


def rel(a, b):
    return ((a.float() - b.float()).norm() / b.float().norm()).item()


def test_train_lora_on_the_unet3d(cui):
    before = cui.run(base_prompt(cui))
    assert before.success, before.status_messages
    base_before = cui.output_of(before, "13")[0][0]["samples"].clone()

    executor = cui.run(prompt(cui))
    assert executor.success, executor.status_messages
    loss = cui.output_of(executor, "8")[slot(cui, "TrainLoraNode", "LOSS_MAP")][0]["loss"]
    losses = [float(v) for v in loss]
    assert len(losses) == 24 and all(torch.isfinite(torch.tensor(losses)))
    first, last = sum(losses[:8]) / 8, sum(losses[-8:]) / 8
    print(f"\nComfyUI {cui.version}: loss {first:.4f} (first 8 steps) -> {last:.4f} (last 8)")
    assert last < first, losses
    with_lora = cui.output_of(executor, "12")[0][0]["samples"]
    base_after = cui.output_of(executor, "13")[0][0]["samples"]
    assert rel(with_lora, base_after) > 1e-3
    assert torch.equal(base_after, base_before)  # training left the base model untouched

    # the saved file is a ComfyUI LoRA for this model: core's loader applies every trained layer
    saved = sorted((cui.base / "output" / "loras").glob("cinematic_motion*.safetensors"))
    assert saved, list((cui.base / "output").rglob("*"))
    target = cui.models / "loras" / saved[-1].name
    target.write_bytes(saved[-1].read_bytes())
    from safetensors.torch import load_file

    trained = {k.rsplit(".", 2)[0] for k in load_file(str(target)) if "lora" in k or "alpha" in k}
    (model,) = (cui.output_of(executor, "2")[0][0],)
    loader = cui.nodes.NODE_CLASS_MAPPINGS["LoraLoaderModelOnly"]()
    (patched,) = loader.load_lora_model_only(model, target.name, 1.0)
    assert len(patched.patches) >= 0.9 * len(trained) > 0


def test_fp8_through_the_bridge(cui):
    """fp8 storage inside ComfyUI: the weights are float8 (ComfyUI's manual-cast layers), half of fp16's memory or
    less, KSampler's output within the fp8 tolerance of the fp32 load; LoRA on fp8 = LoRA on fp16 within it."""
    from cinematic_testing import tiny_lora

    nodes = cui.nodes.NODE_CLASS_MAPPINGS
    loader, bridge = nodes["CinematicUNet3DLoader"](), nodes["CinematicUNet3DToModel"]()
    tensors, meta, _ = tiny_lora.stable_lora(cui.train_sd, seed=42, with_text=False)
    tiny_lora.write(cui.models / "loras" / "fp8_test.safetensors", tensors, meta)
    lora_node = nodes["CinematicLoraLoader"]()
    outs, sizes = {}, {}
    for dtype in ("fp32", "fp16", "fp8_e4m3fn", "fp8_e5m2"):
        (unet,) = loader.load("train_unet.safetensors", dtype)
        if dtype.startswith("fp8"):
            weights = [p for p in unet.module.parameters() if p.ndim >= 2]
            assert all(p.dtype in (torch.float8_e4m3fn, torch.float8_e5m2) for p in weights)
        sizes[dtype] = sum(p.numel() * p.element_size() for p in unet.module.parameters())
        (model,) = bridge.convert(unet)
        (lora_view,) = getattr(lora_node, lora_node.FUNCTION)(unet, "fp8_test.safetensors", 1.0)
        (lora_model,) = bridge.convert(lora_view)
        outs[dtype] = [sample(cui, m) for m in (model, lora_model)]
    assert sizes["fp8_e4m3fn"] <= 0.55 * sizes["fp16"]
    for name, tol in (("fp8_e4m3fn", 0.2), ("fp8_e5m2", 0.35)):  # the README's fp8 tolerances
        assert rel(outs[name][0], outs["fp32"][0]) <= tol
        assert rel(outs[name][1], outs["fp16"][1]) <= tol
        assert rel(outs[name][1], outs[name][0]) > 1e-3  # the LoRA acts on the fp8 model
    print(f"\nComfyUI {cui.version}: fp8 vs fp32 rel", {k: round(rel(v[0], outs['fp32'][0]), 4) for k, v in outs.items()})


def sample(harness, model):
    cls = harness.nodes.NODE_CLASS_MAPPINGS["KSampler"]
    gen = torch.Generator().manual_seed(0)
    cond = [[torch.randn(1, 77, 1024, generator=gen), {"pooled_output": torch.zeros(1, 1024)}]]
    uncond = [[torch.randn(1, 77, 1024, generator=gen), {"pooled_output": torch.zeros(1, 1024)}]]
    (out,) = cls().sample(model, 3, 3, 5.0, "euler", "normal", cond, uncond, {"samples": torch.zeros(1, 4, 3, 8, 8)})
    return out["samples"]


def test_fp8_partial_load_with_lora(cui):
    """Low VRAM on fp8: ComfyUI's partial load (budget a third of the model) leaves layers on the offload device and
    applies the LoRA on the fly in the compute dtype; a full load rounds the LoRA'd weights into fp8 (as core does).
    Both carry the LoRA, and they agree within the fp8 tolerance."""
    import importlib

    nodes = cui.nodes.NODE_CLASS_MAPPINGS
    root = nodes["CinematicUNet3DLoader"].__module__.rsplit(".nodes", 1)[0]
    comfy_model = importlib.import_module(f"{root}.nodes.comfy_model")
    sampling = importlib.import_module(f"{root}.samplers.sampling")
    from cinematic_testing import tiny_lora

    tensors, meta, _ = tiny_lora.stable_lora(cui.train_sd, seed=43, with_text=False)
    tiny_lora.write(cui.models / "loras" / "fp8_lowvram.safetensors", tensors, meta)
    (unet,) = nodes["CinematicUNet3DLoader"]().load("train_unet.safetensors", "fp8_e4m3fn")
    lora_node = nodes["CinematicLoraLoader"]()
    (view,) = getattr(lora_node, lora_node.FUNCTION)(unet, "fp8_lowvram.safetensors", 1.0)
    gen = torch.Generator().manual_seed(1)
    args = dict(latent=torch.zeros(1, 4, 3, 8, 8), cond=torch.randn(1, 77, 1024, generator=gen),
                uncond=torch.randn(1, 77, 1024, generator=gen), seed=5, steps=3, cfg=6.0, sampler="euler",
                schedule="karras", dtype=torch.float32)
    results = {}
    for name, view_, budget in (("partial", view, 3), ("full", view, None), ("plain", unet, None)):
        patcher = comfy_model.patcher_for(view_)
        if budget:
            patcher.load(torch.device("cpu"), lowvram_model_memory=patcher.model_size() // budget)
        else:
            patcher.load(torch.device("cpu"), full_load=True)
        try:
            if budget:
                assert any(getattr(m, "weight_function", None) for m in view_.module.modules()), "LoRA on the fly"
            results[name] = sampling.sample(view_, **args)
        finally:
            patcher.unpatch_model(torch.device("cpu"))
    assert rel(results["partial"], results["full"]) <= 0.2
    assert rel(results["partial"], results["plain"]) > 1e-3 and rel(results["full"], results["plain"]) > 1e-3
    assert all(p.dtype == torch.float8_e4m3fn for p in unet.module.parameters() if p.ndim >= 2)  # restored fp8
    print(f"\nComfyUI {cui.version}: fp8 partial vs full load rel {rel(results['partial'], results['full']):.4f}")

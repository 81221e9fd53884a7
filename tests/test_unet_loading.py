"""Every real UNet3D layout loads to the same model; bad files give clear errors and no side effect."""

import struct

import pytest
import torch
from safetensors.torch import save_file

from cinematic.model_loaders.safe_load import ModelFileError
from cinematic.model_loaders.unet_loader import load_unet, resolve_dtype
from cinematic_testing.hostile import Payload
from cinematic_testing import tiny_unet


@pytest.fixture(scope="module")
def sd():
    return tiny_unet.tiny_state_dict(seed=7)


def _run(model):
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(1, 4, 3, 16, 16, generator=gen)
    ctx = torch.randn(1, 77, 1024, generator=gen)
    with torch.no_grad():
        return model(x, torch.tensor([500]), ctx)


def test_all_layouts_give_identical_outputs(sd, tmp_path):
    pth = tiny_unet.write_original_pth(sd, tmp_path / "orig" / "text2video_pytorch_model.pth")
    st = tiny_unet.write_original_safetensors(sd, tmp_path / "t2v_unet.safetensors")
    folder = tmp_path / "diffusers"
    unet_dir = tiny_unet.write_diffusers_folder(sd, folder)
    prefixed = tmp_path / "prefixed.safetensors"
    save_file({"model.diffusion_model." + k: v.contiguous() for k, v in sd.items()}, str(prefixed))
    outputs = {
        "pth": _run(load_unet(pth, "fp32")),
        "orig folder": _run(load_unet(pth.parent, "fp32")),
        "safetensors": _run(load_unet(st, "fp32")),
        "diffusers folder": _run(load_unet(folder, "fp32")),
        "diffusers unet/": _run(load_unet(unet_dir, "fp32")),
        "bare diffusers file": _run(load_unet(unet_dir / "diffusion_pytorch_model.safetensors", "fp32")),
        "prefixed": _run(load_unet(prefixed, "fp32")),
    }
    first = outputs["pth"]
    for name, out in outputs.items():
        assert torch.equal(out, first), name


def test_fp16_variant_and_dtypes(sd, tmp_path):
    tiny_unet.write_diffusers_folder(sd, tmp_path, fp16_variant=True)
    model = load_unet(tmp_path, "default")  # CPU default: fp32
    assert model.dtype == torch.float32
    assert load_unet(tmp_path, "bf16").dtype == torch.bfloat16
    assert load_unet(tmp_path, "fp16").dtype == torch.float16
    assert resolve_dtype("default", "cuda") == torch.float16
    assert resolve_dtype("default", "cpu") == torch.float32
    with pytest.raises(ValueError, match="weight_dtype"):
        resolve_dtype("int8", "cpu")


def test_loaded_weights_are_not_copied_twice(sd, tmp_path):
    """Parameters adopt the loaded tensors (assign=True): nothing on the meta device, nothing left unloaded."""
    st = tiny_unet.write_original_safetensors(sd, tmp_path / "u.safetensors")
    model = load_unet(st, "fp32")
    assert all(p.device.type == "cpu" for p in model.parameters())
    assert not any(p.requires_grad for p in model.parameters())
    for k, v in model.state_dict().items():
        assert torch.equal(v, sd[k]), k


def _sd15_unet_keys():
    # The leading keys of an SD1.5 UNet (2-D, no temporal layers), as in a full SD checkpoint.
    p = "model.diffusion_model."
    return {p + "input_blocks.0.0.weight": torch.zeros(320, 4, 3, 3),
            p + "input_blocks.1.0.in_layers.0.weight": torch.zeros(320),
            p + "input_blocks.1.1.transformer_blocks.0.attn2.to_k.weight": torch.zeros(320, 768),
            p + "time_embed.0.weight": torch.zeros(1280, 320)}


@pytest.mark.parametrize("keys,needle", [
    (_sd15_unet_keys(), "Stable Diffusion image UNet"),
    ({**_sd15_unet_keys(), "model.diffusion_model.label_emb.0.0.weight": torch.zeros(1280, 2816)}, "SDXL"),
    ({"encoder.conv_in.weight": torch.zeros(128, 3, 3, 3), "decoder.conv_in.weight": torch.zeros(512, 4, 3, 3)},
     "VAE"),
    ({"first_stage_model.encoder.conv_in.weight": torch.zeros(128, 3, 3, 3)}, "VAE"),
    ({"token_embedding.weight": torch.zeros(10, 8), "transformer.resblocks.0.ln_1.weight": torch.zeros(8)},
     "text encoder"),
    ({"text_model.embeddings.token_embedding.weight": torch.zeros(10, 8)}, "text encoder"),
    ({"something.else": torch.zeros(3)}, "not a ModelScope text-to-video UNet3D"),
])
def test_foreign_files_are_named(tmp_path, keys, needle):
    path = tmp_path / "foreign.safetensors"
    save_file(keys, str(path))
    with pytest.raises(ModelFileError, match=needle):
        load_unet(path)


def test_truncated_safetensors(sd, tmp_path):
    st = tiny_unet.write_original_safetensors(sd, tmp_path / "u.safetensors")
    data = st.read_bytes()
    st.write_bytes(data[: len(data) // 2])
    with pytest.raises(ModelFileError, match="truncated"):
        load_unet(st)
    st.write_bytes(b"\x10")
    with pytest.raises(ModelFileError, match="truncated|empty"):
        load_unet(st)
    st.write_bytes(struct.pack("<Q", 10) + b"not json!!")
    with pytest.raises(ModelFileError, match="corrupt"):
        load_unet(st)


def test_hostile_pickle_is_refused_without_running(sd, tmp_path):
    marker = tmp_path / "pwned"
    evil = tmp_path / "text2video_pytorch_model.pth"
    torch.save({**sd, "payload": Payload(marker)}, evil)
    with pytest.raises(ModelFileError, match="refused"):
        load_unet(evil)
    assert not marker.exists()


def test_wrong_extension_and_missing(tmp_path):
    bad = tmp_path / "model.gguf"
    bad.write_bytes(b"GGUF")
    with pytest.raises(ModelFileError, match="unsupported file type"):
        load_unet(bad)
    with pytest.raises(ModelFileError, match="holds no UNet3D weights"):
        load_unet(tmp_path)


def test_node_lists_and_loads(pack, models_dir, sd):
    node_cls = pack.NODE_CLASS_MAPPINGS["CinematicUNet3DLoader"]
    tiny_unet.write_original_safetensors(sd, models_dir / "diffusion_models" / "tiny_t2v.safetensors")
    tiny_unet.write_diffusers_folder(sd, models_dir / "text2video" / "tiny-diffusers")
    choices = node_cls.INPUT_TYPES()["required"]["unet_name"][0]
    assert "tiny_t2v.safetensors" in choices
    assert "tiny-diffusers" in choices
    (a,) = node_cls().load("tiny_t2v.safetensors", "fp32")
    (b,) = node_cls().load("tiny-diffusers", "fp32")
    assert torch.equal(_run(a), _run(b))
    with pytest.raises(FileNotFoundError, match="Searched"):
        node_cls().load("nope.safetensors", "fp32")

"""The checkpoint loader (three layouts), the converter, and the text/VAE nodes as a user runs them."""

import subprocess
import sys
from pathlib import Path

import pytest
import torch

from cinematic.model_loaders.checkpoint import load_checkpoint
from cinematic.model_loaders.safe_load import ModelFileError
from cinematic_testing import tiny_checkpoint
from cinematic_testing.tiny_checkpoint import VAE_SCALE

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def layouts(tmp_path_factory):
    root = tmp_path_factory.mktemp("ckpt")
    original = tiny_checkpoint.write_original_folder(root / "tiny-original", seed=11)
    diffusers = tiny_checkpoint.write_diffusers_folder(root / "tiny-diffusers", seed=11)
    single = root / "tiny-single.safetensors"
    proc = subprocess.run([sys.executable, str(ROOT / "scripts" / "convert_checkpoint.py"), str(original), str(single),
                           "--dtype", "fp32"], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    return {"original": original, "diffusers": diffusers, "single": single}


def _outputs(unet, text, vae):
    cond, _ = text.encode(["a panda playing guitar"])
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(1, 4, 3, 8, 8, generator=gen)
    with torch.no_grad():
        eps = unet(x, torch.tensor([500]), cond)
    return cond, eps, vae.decode(eps[:, :, 0])


def test_three_layouts_identical(layouts):
    results = {name: _outputs(*load_checkpoint(path, "fp32")) for name, path in layouts.items()}
    first = results["original"]
    for name, outs in results.items():
        for a, b in zip(outs, first):
            assert torch.equal(a, b), name


def test_converter_writes_fp16(layouts, tmp_path):
    out = tmp_path / "half.safetensors"
    proc = subprocess.run([sys.executable, str(ROOT / "scripts" / "convert_checkpoint.py"),
                           str(layouts["diffusers"]), str(out), "--dtype", "fp16"], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    unet, text, vae = load_checkpoint(out, "fp16")
    assert unet.dtype == torch.float16
    cond32, eps32, _ = _outputs(*load_checkpoint(layouts["original"], "fp32"))
    cond16, _, _ = _outputs(unet.float(), text.to(dtype=torch.float32), vae.to(dtype=torch.float32))
    assert (cond16 - cond32).abs().max() < 0.05  # the same model, stored in half precision


def test_checkpoint_node_lists_folders_and_files(pack, models_dir, layouts):
    import shutil

    for name, path in layouts.items():
        target = models_dir / "text2video" / path.name
        (shutil.copytree if path.is_dir() else shutil.copy)(path, target)
    node = pack.NODE_CLASS_MAPPINGS["CinematicCheckpointLoader"]
    choices = node.INPUT_TYPES()["required"]["model_name"][0]
    assert {"tiny-original", "tiny-diffusers", "tiny-single.safetensors"} <= set(choices)
    assert not any(c.startswith("tiny-original/") for c in choices), choices  # folders are listed, not their files
    unet, text, vae = node().load("tiny-original", "default")
    assert unet.dtype == torch.float32  # CPU default


def test_partial_single_file_is_refused(tmp_path):
    from safetensors.torch import save_file

    path = tmp_path / "only_unet.safetensors"
    save_file({"unet.input_blocks.0.0.weight": torch.zeros(64, 4, 3, 3)}, str(path))
    with pytest.raises(ModelFileError, match="missing: vae, text_encoder"):
        load_checkpoint(path)
    with pytest.raises(ModelFileError, match="not a text-to-video model folder"):
        load_checkpoint(tmp_path)


def test_text_encode_node(pack, layouts):
    _, text, _ = load_checkpoint(layouts["original"], "fp32")
    (cond,) = pack.NODE_CLASS_MAPPINGS["CinematicTextEncode"]().encode(text, "a panda playing guitar")
    assert len(cond) == 1 and cond[0][0].shape == (1, 77, 1024)
    assert cond[0][1]["pooled_output"].shape == (1, 1024)


def test_vae_decode_chunks_do_not_change_the_result(pack, layouts):
    _, _, vae = load_checkpoint(layouts["original"], "fp32")
    node = pack.NODE_CLASS_MAPPINGS["CinematicVAEDecode"]()
    latent = {"samples": torch.randn(2, 4, 5, 8, 6, generator=torch.Generator().manual_seed(3))}
    (one,) = node.decode(vae, latent, frames_per_batch=1)
    (all_,) = node.decode(vae, latent, frames_per_batch=64)
    assert one.shape == (10, 8 * VAE_SCALE, 6 * VAE_SCALE, 3)
    assert (one - all_).abs().max() <= 1e-5
    assert one.min() >= 0 and one.max() <= 1
    # batch-major: frame 2 of video 1 is row 5 + 2
    direct = vae.decode(latent["samples"][1, :, 2][None]).clamp(-1, 1) * 0.5 + 0.5
    assert (one[7] - direct[0].permute(1, 2, 0)).abs().max() <= 1e-5


def test_vae_encode_node_and_errors(pack, layouts):
    _, _, vae = load_checkpoint(layouts["original"], "fp32")
    enc = pack.NODE_CLASS_MAPPINGS["CinematicVAEEncode"]()
    images = torch.rand(6, 16, 24, 3)
    (latent,) = enc.encode(vae, images, frames_per_batch=4)
    assert latent["samples"].shape == (1, 4, 6, 16 // VAE_SCALE, 24 // VAE_SCALE)
    (again,) = enc.encode(vae, images, frames_per_batch=1)
    assert (latent["samples"] - again["samples"]).abs().max() <= 1e-5
    with pytest.raises(ValueError, match="multiples of 8"):
        enc.encode(vae, torch.rand(2, 20, 24, 3))
    dec = pack.NODE_CLASS_MAPPINGS["CinematicVAEDecode"]()
    with pytest.raises(ValueError, match="5-D video latent"):
        dec.decode(vae, {"samples": torch.zeros(1, 4, 8, 8)}, 8)


def test_vae_decode_tiled(pack, layouts):
    _, _, vae = load_checkpoint(layouts["original"], "fp32")
    node = pack.NODE_CLASS_MAPPINGS["CinematicVAEDecode"]()
    latent = {"samples": torch.randn(1, 4, 2, 12, 20, generator=torch.Generator().manual_seed(4))}
    (whole,) = node.decode(vae, latent, 8)
    (one_tile,) = node.decode(vae, latent, 8, tile_size=8 * 20, tile_overlap=16)  # one tile covers it: exact
    assert torch.equal(whole, one_tile)
    (tiled,) = node.decode(vae, latent, 8, tile_size=8 * 8, tile_overlap=8 * 4)
    assert tiled.shape == whole.shape and torch.isfinite(tiled).all()
    assert tiled.min() >= 0 and tiled.max() <= 1

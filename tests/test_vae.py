"""The VAE equals the original (modelscope autoencoder) and diffusers' AutoencoderKL; every layout loads."""

import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file

from cinematic.model_loaders.safe_load import ModelFileError
from cinematic.model_loaders.vae import load_vae, vae_from_state_dict
from cinematic_testing.hostile import Payload
from cinematic_testing import tiny_unet, tiny_vae

TOL = 1e-4


@pytest.fixture(scope="module")
def reference():
    return tiny_vae.reference_vae(seed=5)


@pytest.fixture(scope="module")
def ours(reference):
    return vae_from_state_dict(reference.state_dict())


def test_decode_and_encode_match_original(reference, ours):
    gen = torch.Generator().manual_seed(0)
    z = torch.randn(3, 4, 8, 8, generator=gen)
    x = torch.rand(2, 3, 64, 48, generator=gen) * 2 - 1
    with torch.no_grad():
        expected_dec = reference.decode(z)
        expected_enc = reference.encode(x).mode()
    assert (ours.decode(z) - expected_dec).abs().max() <= TOL
    assert (ours.encode(x) - expected_enc).abs().max() <= TOL


def test_decode_and_encode_match_diffusers(reference, ours, tmp_path):
    d = tiny_vae.diffusers_vae(reference.state_dict())
    tiny_vae.write_diffusers_vae(reference.state_dict(), tmp_path)
    from_folder = load_vae(tmp_path)
    gen = torch.Generator().manual_seed(1)
    z = torch.randn(2, 4, 8, 8, generator=gen)
    x = torch.rand(2, 3, 64, 64, generator=gen) * 2 - 1
    with torch.no_grad():
        expected_dec = d.decode(z).sample
        expected_enc = d.encode(x).latent_dist.mean
    for model in (ours, from_folder):
        assert (model.decode(z) - expected_dec).abs().max() <= TOL
        assert (model.encode(x) - expected_enc).abs().max() <= TOL


def test_lightning_checkpoint_loads_without_lightning(reference, tmp_path):
    """VQGAN_autoencoder.pth-style: loads in a process where pytorch_lightning cannot be imported."""
    ckpt = tiny_vae.write_lightning_checkpoint(reference.state_dict(), tmp_path / "VQGAN_autoencoder.pth")
    root = Path(__file__).resolve().parents[1]
    code = f"""
import sys, importlib.abc, importlib.util
class Block(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name.split('.')[0] in ('pytorch_lightning', 'lightning'):
            raise ImportError('pytorch_lightning is blocked in this test')
sys.meta_path.insert(0, Block())
spec = importlib.util.spec_from_file_location('cinematic', {str(root / '__init__.py')!r}, submodule_search_locations=[{str(root)!r}])
m = importlib.util.module_from_spec(spec); sys.modules['cinematic'] = m; spec.loader.exec_module(m)
from cinematic.model_loaders.vae import load_vae
import torch
vae = load_vae({str(ckpt)!r})
torch.save(vae.model.state_dict(), {str(tmp_path / 'out.pt')!r})
assert not any(k.startswith('pytorch_lightning') for k in sys.modules)
"""
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    loaded = torch.load(tmp_path / "out.pt", weights_only=True)
    for k, v in reference.state_dict().items():
        assert torch.equal(loaded[k], v), k


def test_hostile_pickle_refused(reference, tmp_path):
    marker = tmp_path / "pwned"
    evil = tmp_path / "VQGAN_autoencoder.pth"
    torch.save({"state_dict": {"first_stage_model." + k: v for k, v in reference.state_dict().items()},
                "callbacks": Payload(marker)}, evil)
    with pytest.raises(ModelFileError, match="refused"):
        load_vae(evil)
    assert not marker.exists()


def test_standalone_and_prefixed_files(reference, tmp_path):
    sd = reference.state_dict()
    plain = tmp_path / "vae-ft-mse-840000-ema-pruned.safetensors"
    save_file({k: v.contiguous() for k, v in sd.items()}, str(plain))
    prefixed = tmp_path / "sd_checkpoint_part.safetensors"
    save_file({"first_stage_model." + k: v.contiguous() for k, v in sd.items()}, str(prefixed))
    z = torch.randn(1, 4, 8, 8)
    a, b = load_vae(plain).decode(z), load_vae(prefixed).decode(z)
    assert torch.equal(a, b)


def test_wrong_files_are_named(tmp_path):
    unet = tiny_unet.write_original_safetensors(tiny_unet.tiny_state_dict(), tmp_path / "unet.safetensors")
    with pytest.raises(ModelFileError, match="UNet3D, not a VAE"):
        load_vae(unet)
    te = tmp_path / "clip.safetensors"
    save_file({"token_embedding.weight": torch.zeros(10, 8)}, str(te))
    with pytest.raises(ModelFileError, match="text encoder"):
        load_vae(te)


def test_fp16_overflow_falls_back(reference):
    """A chunk that overflows in fp16 is decoded again in fp32 instead of coming out NaN/black."""
    vae = vae_from_state_dict(reference.state_dict(), torch.float16)
    with torch.no_grad():
        vae.model.decoder.conv_out.weight.mul_(30000.0)  # force an overflow in the fp16 decoder
    z = torch.randn(1, 4, 8, 8)
    fp16_raw = vae.model.decoder(vae.model.post_quant_conv(z.half()))
    assert not torch.isfinite(fp16_raw).all()
    out = vae.decode(z)
    assert torch.isfinite(out).all()
    assert vae.dtype == torch.float16


def test_channels_last_is_a_layout_not_a_result(reference):
    """On the CPU the VAE runs channels-last by default (its convolutions are faster so): the frames and latents
    equal the plain layout's up to float rounding, and the switch really changes the layout the layers see."""
    plain, nhwc = vae_from_state_dict(reference.state_dict()), vae_from_state_dict(reference.state_dict())
    plain.channels_last, nhwc.channels_last = False, None
    seen = []
    hook = nhwc.model.post_quant_conv.register_forward_pre_hook(
        lambda m, args: seen.append(args[0].is_contiguous(memory_format=torch.channels_last)))
    gen = torch.Generator().manual_seed(2)
    z = torch.randn(3, 4, 8, 8, generator=gen)
    x = torch.rand(2, 3, 64, 48, generator=gen) * 2 - 1
    assert (nhwc.decode(z) - plain.decode(z)).abs().max() <= 1e-5
    assert (nhwc.encode(x) - plain.encode(x)).abs().max() <= 1e-5
    hook.remove()
    assert seen == [True]

"""Model files as a careless or hostile user leaves them: linked in from elsewhere, in symlink loops, named with
`..`, changed on disk after loading, empty, with damaged headers, configs or tensors. Each is either used correctly
or refused with a ModelFileError (or ModelNotFoundError) naming the file."""

import json
import struct
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file

from cinematic.model_loaders.safe_load import ModelFileError
from cinematic.model_loaders.text_encoder import load_text_encoder
from cinematic.model_loaders.unet_loader import load_unet
from cinematic.model_loaders.vae import load_vae
from cinematic.nodes import comfy_env
from cinematic_testing import tiny_unet, tiny_vae

ROOT = Path(__file__).resolve().parents[1]
LOADERS = {"unet": load_unet, "vae": load_vae, "text": load_text_encoder}


def _tiny_text_state_dict(seed=0):
    """A small OpenCLIP-layout text tower (1024 wide as the loader requires, a 16-token vocabulary, one block)."""
    gen = torch.Generator().manual_seed(seed)
    r = lambda *shape: 0.02 * torch.randn(*shape, generator=gen)  # noqa: E731
    sd = {"token_embedding.weight": r(16, 1024), "positional_embedding": r(77, 1024),
          "ln_final.weight": 1 + r(1024), "ln_final.bias": r(1024), "text_projection": r(1024, 1024)}
    p = "transformer.resblocks.0."
    sd.update({p + "attn.in_proj_weight": r(3072, 1024), p + "attn.in_proj_bias": r(3072),
               p + "attn.out_proj.weight": r(1024, 1024), p + "attn.out_proj.bias": r(1024),
               p + "ln_1.weight": 1 + r(1024), p + "ln_1.bias": r(1024), p + "ln_2.weight": 1 + r(1024),
               p + "ln_2.bias": r(1024), p + "mlp.c_fc.weight": r(64, 1024), p + "mlp.c_fc.bias": r(64),
               p + "mlp.c_proj.weight": r(1024, 64), p + "mlp.c_proj.bias": r(1024)})
    return sd


@pytest.fixture(scope="module")
def state_dicts():
    return {"unet": tiny_unet.tiny_state_dict(seed=3), "vae": tiny_vae.tiny_state_dict(seed=3),
            "text": _tiny_text_state_dict(seed=3)}


@pytest.fixture(scope="module")
def valid_files(state_dicts, tmp_path_factory):
    folder = tmp_path_factory.mktemp("valid")
    files = {}
    for kind, sd in state_dicts.items():
        files[kind] = folder / f"{kind}.safetensors"
        save_file({k: v.contiguous() for k, v in sd.items()}, str(files[kind]))
    return files


def test_the_valid_files_load(valid_files):
    for kind, loader in LOADERS.items():
        loader(valid_files[kind])


# ------------------------------------------------------------------------------------------- damaged files


@pytest.mark.parametrize("kind", LOADERS)
def test_empty_pth_is_named(tmp_path, kind):
    path = tmp_path / f"empty_{kind}.pth"
    path.write_bytes(b"")
    with pytest.raises(ModelFileError, match=rf"empty_{kind}\.pth is empty"):
        LOADERS[kind](path)


def _split(data: bytes):
    (n,) = struct.unpack("<Q", data[:8])
    return json.loads(data[8:8 + n]), data[8 + n:]


def _join(header, payload: bytes) -> bytes:
    text = json.dumps(header).encode()
    return struct.pack("<Q", len(text)) + text + payload


def _first_tensor(header):
    return next(k for k in header if k != "__metadata__")


def _mutations():
    def as_list(h):
        return [h[_first_tensor(h)]]

    def drop_offsets(h):
        del h[_first_tensor(h)]["data_offsets"]
        return h

    def offsets_text(h):
        h[_first_tensor(h)]["data_offsets"] = "0-16"
        return h

    def offsets_short(h):
        h[_first_tensor(h)]["data_offsets"] = [0]
        return h

    def offsets_negative(h):
        h[_first_tensor(h)]["data_offsets"] = [-8, 8]
        return h

    def bad_dtype(h):
        h[_first_tensor(h)]["dtype"] = "F99"
        return h

    def shape_vs_offsets(h):
        h[_first_tensor(h)]["shape"] = [n + 1 for n in h[_first_tensor(h)]["shape"]]
        return h

    def shape_text(h):
        h[_first_tensor(h)]["shape"] = "big"
        return h

    def entry_number(h):
        h[_first_tensor(h)] = 5
        return h

    def metadata_list(h):
        h["__metadata__"] = ["format", "pt"]
        return h

    return {f.__name__: f for f in (as_list, drop_offsets, offsets_text, offsets_short, offsets_negative, bad_dtype,
                                    shape_vs_offsets, shape_text, entry_number, metadata_list)}


MUTATIONS = _mutations()


@pytest.mark.parametrize("mutation", MUTATIONS)
@pytest.mark.parametrize("kind", LOADERS)
def test_malformed_safetensors_header_is_named(valid_files, tmp_path, kind, mutation):
    header, payload = _split(valid_files[kind].read_bytes())
    path = tmp_path / f"damaged_{kind}.safetensors"
    path.write_bytes(_join(MUTATIONS[mutation](header), payload))
    with pytest.raises(ModelFileError, match=rf"damaged_{kind}\.safetensors has a corrupt safetensors header"):
        LOADERS[kind](path)


_WRONG_TENSORS = {"unet": "out.2.bias", "vae": "decoder.conv_out.bias", "text": "ln_final.bias"}


@pytest.mark.parametrize("problem", ["shape", "dtype"])
@pytest.mark.parametrize("kind", LOADERS)
def test_tensor_of_wrong_shape_or_type_is_named(state_dicts, tmp_path, kind, problem):
    sd = dict(state_dicts[kind])
    key = _WRONG_TENSORS[kind]
    wrong_length = sd[key].shape[0] + 3
    sd[key] = torch.zeros(wrong_length) if problem == "shape" else torch.zeros(sd[key].shape, dtype=torch.int32)
    path = tmp_path / f"wrong_{problem}.safetensors"
    save_file({k: v.contiguous() for k, v in sd.items()}, str(path))
    with pytest.raises(ModelFileError) as info:
        LOADERS[kind](path)
    message = str(info.value)
    # the tensor is named as the loader calls it (text encoder and VAE keys are renamed on the way in)
    assert path.name in message and key.rsplit(".", 1)[-1] in message, message
    assert (f"shape ({wrong_length},)" if problem == "shape" else "torch.int32") in message, message


@pytest.mark.parametrize("content", ["{not json", "[1, 2]", '{"model": {"model_cfg": {"unet_dim_mult": "x"}}}',
                                     '{"model": "x"}'])
def test_broken_configuration_json_is_named(state_dicts, tmp_path, content):
    folder = tmp_path / "t2v"
    tiny_unet.write_original_pth(state_dicts["unet"], folder / "text2video_pytorch_model.pth")
    (folder / "configuration.json").write_text(content)
    with pytest.raises(ModelFileError, match=r"configuration\.json"):
        load_unet(folder)


@pytest.mark.parametrize("content", ["{not json", '"a string"', "\xff\xfe"])
def test_broken_text_encoder_config_json_is_named(state_dicts, tmp_path, content):
    te = tmp_path / "model" / "text_encoder"
    te.mkdir(parents=True)
    save_file({k: v.contiguous() for k, v in state_dicts["text"].items()}, str(te / "model.safetensors"))
    (te / "config.json").write_bytes(content.encode("latin-1"))
    with pytest.raises(ModelFileError, match=r"text_encoder/config\.json"):
        load_text_encoder(tmp_path / "model")


def test_broken_tokenizer_is_named(state_dicts, tmp_path):
    folder = tmp_path / "model"
    (folder / "text_encoder").mkdir(parents=True)
    save_file({k: v.contiguous() for k, v in state_dicts["text"].items()},
              str(folder / "text_encoder" / "model.safetensors"))
    (folder / "tokenizer").mkdir()
    (folder / "tokenizer" / "vocab.json").write_text("{broken")
    (folder / "tokenizer" / "merges.txt").write_text("#version: 0.2\n")
    with pytest.raises(ModelFileError, match=r"tokenizer"):
        load_text_encoder(folder)


# ------------------------------------------------------------------------------------------- weights owned once loaded

_OWNERSHIP_SCRIPT = r"""
import sys, torch
sys.path.insert(0, sys.argv[1])
from pack_loader import load_pack
load_pack("cinematic")
from cinematic.model_loaders.unet_loader import load_unet

path, replacement, truncate = sys.argv[2], sys.argv[3], sys.argv[4] == "1"
model = load_unet(path, "fp32")

def run():
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(1, 4, 2, 8, 8, generator=gen)
    with torch.no_grad():
        return model(x, torch.tensor([500]), torch.randn(1, 77, 1024, generator=gen))

before = run()
data = open(replacement, "rb").read()
with open(path, "r+b") as f:  # overwritten in place (same inode), as a re-download over the file does
    f.write(data)
    f.truncate(len(data))
after_overwrite = run()
if truncate:
    with open(path, "r+b") as f:
        f.truncate(0)
after_truncate = run() if truncate else after_overwrite
print("SAME" if torch.equal(before, after_overwrite) and torch.equal(before, after_truncate) else "CHANGED")
"""


def _aligned(path: Path) -> Path:
    """Pad the header (with spaces, as safetensors' own writer does) so the data starts 64-byte aligned: then the
    tensors handed out by safe_open are used as they are (not copied for alignment), as in many real files."""
    header, payload = _split(path.read_bytes())
    text = json.dumps(header).encode()
    text += b" " * (-(8 + len(text)) % 64)
    path.write_bytes(struct.pack("<Q", len(text)) + text + payload)
    return path


def _ownership_run(tmp_path, state_dicts, suffix, truncate, env_extra=None):
    import os

    other = {k: v.clone() + 0.5 if v.is_floating_point() else v for k, v in state_dicts["unet"].items()}
    if suffix == "pth":
        path = tiny_unet.write_original_pth(state_dicts["unet"], tmp_path / "unet.pth")
        replacement = tiny_unet.write_original_pth(other, tmp_path / "other.pth")
    else:
        path = _aligned(tiny_unet.write_original_safetensors(state_dicts["unet"], tmp_path / "unet.safetensors"))
        replacement = _aligned(tiny_unet.write_original_safetensors(other, tmp_path / "other.safetensors"))
    env = {k: v for k, v in os.environ.items() if k != "CINEMATIC_MMAP"}
    env.update(env_extra or {})
    return subprocess.run([sys.executable, "-c", _OWNERSHIP_SCRIPT, str(ROOT / "scripts"), str(path), str(replacement),
                           "1" if truncate else "0"], capture_output=True, text=True, env=env, timeout=300)


@pytest.mark.parametrize("suffix", ["pth", "safetensors"])
def test_loaded_weights_survive_the_file_being_overwritten_and_truncated(tmp_path, state_dicts, suffix):
    proc = _ownership_run(tmp_path, state_dicts, suffix, truncate=True)
    assert proc.returncode == 0, f"the process died ({proc.returncode}): {proc.stderr[-2000:]}"  # SIGBUS is -7
    assert proc.stdout.strip().splitlines()[-1] == "SAME"


def test_mapping_is_opt_in_and_then_follows_the_file(tmp_path, state_dicts):
    """The control: with CINEMATIC_MMAP=1 the weights stay mapped, and the overwrite shows through."""
    proc = _ownership_run(tmp_path, state_dicts, "pth", truncate=False, env_extra={"CINEMATIC_MMAP": "1"})
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert proc.stdout.strip().splitlines()[-1] == "CHANGED"


# ------------------------------------------------------------------------------------------- model folders and links


def _write_original_folder(sd, folder: Path) -> Path:
    tiny_unet.write_modelscope_configuration(folder)
    tiny_unet.write_original_pth(sd, folder / "text2video_pytorch_model.pth")
    return folder


def _outputs(model):
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(1, 4, 2, 8, 8, generator=gen)
    with torch.no_grad():
        return model(x, torch.tensor([500]), torch.randn(1, 77, 1024, generator=gen))


def test_linked_file_and_linked_folders_are_listed_and_load(pack, models_dir, tmp_path, state_dicts):
    shared = tmp_path / "shared"  # models shared with another install, outside this models folder
    unet_file = tiny_unet.write_original_safetensors(state_dicts["unet"], shared / "unet.safetensors")
    _write_original_folder(state_dicts["unet"], shared / "t2v-original")
    (shared / "more").mkdir()
    tiny_unet.write_original_safetensors(state_dicts["unet"], shared / "more" / "inner.safetensors")
    (models_dir / "diffusion_models" / "linked.safetensors").symlink_to(unet_file)
    (models_dir / "text2video" / "linked-model").symlink_to(shared / "t2v-original", target_is_directory=True)
    (models_dir / "diffusion_models" / "linked-dir").symlink_to(shared / "more", target_is_directory=True)

    node = pack.NODE_CLASS_MAPPINGS["CinematicUNet3DLoader"]
    names = node.INPUT_TYPES()["required"]["unet_name"][0]
    assert {"linked.safetensors", "linked-model", "linked-dir/inner.safetensors"} <= set(names), names
    expected = _outputs(load_unet(unet_file, "fp32"))
    for name in ("linked.safetensors", "linked-model", "linked-dir/inner.safetensors"):
        (model,) = node().load(name, "fp32")
        assert torch.equal(_outputs(model), expected), name
    ckpt_names = pack.NODE_CLASS_MAPPINGS["CinematicCheckpointLoader"].INPUT_TYPES()["required"]["model_name"][0]
    assert "linked-model" in ckpt_names


def test_symlink_loops_list_at_once_without_duplicates(pack, models_dir):
    t2v = models_dir / "text2video"
    (t2v / "a.safetensors").write_bytes(b"")
    (t2v / "sub").mkdir()
    (t2v / "sub" / "b.safetensors").write_bytes(b"")
    (t2v / "up").symlink_to("..", target_is_directory=True)  # loop 1: through the models root back to text2video
    (t2v / "sub" / "back").symlink_to(t2v, target_is_directory=True)  # loop 2
    (t2v / "sub" / "self").symlink_to(".", target_is_directory=True)  # and a folder that contains itself

    result = {}

    def listing():
        start = time.perf_counter()
        result["names"] = pack.NODE_CLASS_MAPPINGS["CinematicUNet3DLoader"].INPUT_TYPES()["required"]["unet_name"][0]
        result["seconds"] = time.perf_counter() - start

    worker = threading.Thread(target=listing, daemon=True)  # a hang must fail the test, not stall the run
    worker.start()
    worker.join(timeout=30)
    assert "seconds" in result, "listing the models did not finish within 30 s"
    assert result["seconds"] < 1.0, result
    names = result["names"]
    assert len(names) == len(set(names))
    assert names == ["a.safetensors", "sub/b.safetensors"]


@pytest.mark.parametrize("name", ["../outside.safetensors", "sub/../../outside.safetensors", "ABSOLUTE",
                                  "..\\outside.safetensors", ".."])
def test_names_that_climb_out_of_the_folder_are_refused(pack, models_dir, tmp_path, state_dicts, name):
    outside = tiny_unet.write_original_safetensors(state_dicts["unet"], models_dir / "outside.safetensors")
    (models_dir / "text2video" / "sub").mkdir()
    name = str(outside) if name == "ABSOLUTE" else name
    with pytest.raises(comfy_env.ModelNotFoundError, match="points outside the folder"):
        comfy_env.resolve_model(name, comfy_env.TEXT2VIDEO)
    with pytest.raises(FileNotFoundError, match="points outside the folder"):
        pack.NODE_CLASS_MAPPINGS["CinematicUNet3DLoader"]().load(name, "fp32")


def test_a_dangling_link_is_named(models_dir):
    (models_dir / "vae" / "gone.safetensors").symlink_to(models_dir / "nowhere.safetensors")
    assert "gone.safetensors" not in comfy_env.list_models("vae")
    with pytest.raises(comfy_env.ModelNotFoundError, match="link that leads nowhere"):
        comfy_env.resolve_model("gone.safetensors", "vae")

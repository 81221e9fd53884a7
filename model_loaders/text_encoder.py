"""The text encoder: OpenCLIP ViT-H/14's text tower run to its penultimate block, then the final layer norm.

Built on transformers' CLIPTextModel (hidden 1024, 16 heads, 23 of the 24 layers, gelu): `last_hidden_state` after
`final_layer_norm` is exactly open_clip's `layer='penultimate'` output. Tokens: transformers' CLIPTokenizer on the CLIP
BPE vocabulary shipped in model_loaders/data (or a model folder's tokenizer/), with open_clip's text clean-up applied
first, so ids equal `open_clip.tokenize`'s: ftfy.fix_text, HTML unescaped twice, whitespace collapsed, lower case,
start/end tokens, truncated at 77 (the end token kept), padded with 0.

Weights accepted: an open_clip file (the full CLIP such as open_clip_pytorch_model.bin, or the text tower alone; the
visual tower is never read into memory), a diffusers/transformers `text_encoder/` folder or file (keys with or without
the `text_model.` prefix), or a ComfyUI-style clip file with either key set, possibly under a prefix.
"""

from __future__ import annotations

import html
import re
from pathlib import Path
from typing import Mapping

import torch

from .safe_load import ModelFileError, check_tensors, load_state_dict, naming, read_json, read_keys

DATA = Path(__file__).resolve().parent / "data"
CONTEXT_LENGTH = 77
SOT, EOT = 49406, 49407
VOCAB_SIZE = 49408
#: width of one attention head (OpenCLIP's towers; a small tower has width / 64 heads)
HEAD_WIDTH = 64
#: a small model's single file may keep only the token rows its prompts use: these ids (int64 [K]) name the rows of
#: a [K, width] `embeddings.token_embedding.weight`; every other id of the vocabulary embeds to zeros
TOKEN_ROW_IDS = "embeddings.token_embedding.ids"

_PREFIXES = ("", "cond_stage_model.model.", "cond_stage_model.", "text_encoder.", "clip_h.", "model.",
             "conditioner.embedders.0.model.")


def clean_text(text: str) -> str:
    """open_clip's default clean-up ('lower'): ftfy, HTML unescape twice, strip, collapse whitespace, lower case."""
    import ftfy

    text = ftfy.fix_text(text)
    text = html.unescape(html.unescape(text)).strip()
    return re.sub(r"\s+", " ", text).strip().lower()


class Tokenizer:
    def __init__(self, folder: Path | None = None):
        from transformers import CLIPTokenizer

        if folder is None or not (folder / "vocab.json").is_file():
            folder = DATA
        try:
            self._tok = CLIPTokenizer(str(folder / "vocab.json"), str(folder / "merges.txt"))
        except Exception as exc:  # JSONDecodeError, OSError, or the tokenizers library's plain Exception
            raise ModelFileError(f"The tokenizer files in {folder} (vocab.json, merges.txt) are unreadable "
                                 f"({type(exc).__name__}: {exc}): restore them from the model's download.") from None
        # The text is cleaned by clean_text() exactly as open_clip does; the tokenizer's own ftfy pass would clean a
        # second time (and unescape one more level of HTML), so it is made an identity.
        self._tok.fix_text = lambda text: text

    def __call__(self, texts: list[str]) -> torch.Tensor:
        out = torch.zeros(len(texts), CONTEXT_LENGTH, dtype=torch.long)
        for row, text in enumerate(texts):
            ids = [SOT] + self._tok.encode(clean_text(text), add_special_tokens=False) + [EOT]
            if len(ids) > CONTEXT_LENGTH:
                ids = ids[:CONTEXT_LENGTH]
                ids[-1] = EOT
            out[row, : len(ids)] = torch.tensor(ids)
        return out

    def count(self, text: str) -> int:
        """Tokens of the prompt itself (without start/end); more than 75 are cut off."""
        return len(self._tok.encode(clean_text(text), add_special_tokens=False))


# ------------------------------------------------------------------------------------------------ weights


def _detect(keys) -> tuple[str, str]:
    keys = set(keys)
    for prefix in _PREFIXES:
        if prefix + "token_embedding.weight" in keys and prefix + "positional_embedding" in keys:
            return "open_clip", prefix
        if prefix + "text_model.embeddings.token_embedding.weight" in keys:
            return "hf", prefix + "text_model."
        if prefix + "embeddings.token_embedding.weight" in keys and prefix + "final_layer_norm.weight" in keys:
            return "hf", prefix
    if any("temopral_conv" in k or "temp_convs" in k for k in keys):
        raise ModelFileError("This file is the text-to-video UNet3D, not a text encoder: load it with "
                             "'Load Text-to-Video UNet3D'.")
    if any(re.search(r"(^|\.)decoder\.conv_in\.weight$", k) for k in keys):
        raise ModelFileError("This file is a VAE, not a text encoder: load it with 'Load Text-to-Video VAE'.")
    raise ModelFileError("This file is not a CLIP text encoder (no token embedding found). Use "
                         "open_clip_pytorch_model.bin or a diffusers text_encoder/ folder of the model.")


def _open_clip_to_hf(sd: Mapping[str, torch.Tensor], layers: int) -> dict[str, torch.Tensor]:
    out = {
        "embeddings.token_embedding.weight": sd["token_embedding.weight"],
        "embeddings.position_embedding.weight": sd["positional_embedding"],
        "final_layer_norm.weight": sd["ln_final.weight"],
        "final_layer_norm.bias": sd["ln_final.bias"],
    }
    for i in range(layers):
        src, dst = f"transformer.resblocks.{i}.", f"encoder.layers.{i}."
        q, k, v = sd[src + "attn.in_proj_weight"].chunk(3, dim=0)
        qb, kb, vb = sd[src + "attn.in_proj_bias"].chunk(3, dim=0)
        out.update({
            dst + "self_attn.q_proj.weight": q, dst + "self_attn.k_proj.weight": k, dst + "self_attn.v_proj.weight": v,
            dst + "self_attn.q_proj.bias": qb, dst + "self_attn.k_proj.bias": kb, dst + "self_attn.v_proj.bias": vb,
            dst + "self_attn.out_proj.weight": sd[src + "attn.out_proj.weight"],
            dst + "self_attn.out_proj.bias": sd[src + "attn.out_proj.bias"],
            dst + "layer_norm1.weight": sd[src + "ln_1.weight"], dst + "layer_norm1.bias": sd[src + "ln_1.bias"],
            dst + "layer_norm2.weight": sd[src + "ln_2.weight"], dst + "layer_norm2.bias": sd[src + "ln_2.bias"],
            dst + "mlp.fc1.weight": sd[src + "mlp.c_fc.weight"], dst + "mlp.fc1.bias": sd[src + "mlp.c_fc.bias"],
            dst + "mlp.fc2.weight": sd[src + "mlp.c_proj.weight"], dst + "mlp.fc2.bias": sd[src + "mlp.c_proj.bias"],
        })
    return out


def _expand_token_rows(sd: dict) -> dict:
    """A token table kept as the rows its ids name (TOKEN_ROW_IDS) -> the whole [VOCAB_SIZE, width] table."""
    if TOKEN_ROW_IDS not in sd:
        return sd
    sd = dict(sd)
    ids, rows = sd.pop(TOKEN_ROW_IDS), sd["embeddings.token_embedding.weight"]
    if ids.ndim != 1 or ids.shape[0] != rows.shape[0] or ids.is_floating_point() or ids.numel() == 0 \
            or int(ids.min()) < 0 or int(ids.max()) >= VOCAB_SIZE or ids.unique().numel() != ids.numel():
        raise ModelFileError(f"The text encoder's token rows are damaged ({TOKEN_ROW_IDS} does not name one distinct "
                             f"id below {VOCAB_SIZE} per row of the token table); download the file again.")
    table = torch.zeros(VOCAB_SIZE, rows.shape[1], dtype=rows.dtype)
    table[ids.long()] = rows
    sd["embeddings.token_embedding.weight"] = table
    return sd


def compact_token_rows(sd: dict, ids) -> dict:
    """The inverse, for writing a small model: keep only the rows of `ids` (transformers-layout keys)."""
    sd = dict(sd)
    ids = torch.as_tensor(sorted(set(int(i) for i in ids)), dtype=torch.long)
    sd["embeddings.token_embedding.weight"] = sd["embeddings.token_embedding.weight"][ids].contiguous()
    sd[TOKEN_ROW_IDS] = ids
    return sd


class TextEncoder:
    """T2V_TEXT_ENCODER: `tokenize(texts)` -> [B, 77] ids; `encode(texts)` -> (cond [B, 77, width], pooled [B, width])."""

    def __init__(self, model, tokenizer: Tokenizer, projection: torch.Tensor | None = None):
        self.model = model
        self.tokenizer = tokenizer
        self.projection = projection

    @property
    def width(self) -> int:
        return self.model.config.hidden_size

    @property
    def device(self) -> torch.device:
        return self.model.get_input_embeddings().weight.device

    @property
    def dtype(self) -> torch.dtype:
        return self.model.get_input_embeddings().weight.dtype

    def to(self, device=None, dtype=None) -> "TextEncoder":
        self.model.to(device=device, dtype=dtype)
        return self

    def tokenize(self, texts: list[str]) -> torch.Tensor:
        return self.tokenizer(texts)

    @torch.inference_mode()
    def encode(self, texts: list[str]) -> tuple[torch.Tensor, torch.Tensor]:
        ids = self.tokenize(texts).to(self.device)
        out = self.model(input_ids=ids)
        cond = out.last_hidden_state.float()
        pooled = cond[torch.arange(cond.shape[0]), (ids == EOT).int().argmax(dim=1)]
        if self.projection is not None:
            pooled = pooled @ self.projection.to(pooled)
        return cond, pooled


def _text_config(sd: dict, layout: str, penultimate: bool) -> tuple[dict, dict, torch.Tensor | None]:
    """(CLIPTextConfig kwargs, transformers-layout state dict, projection) from a tower's keys and shapes."""
    if layout == "open_clip":
        total = 1 + max(int(k.split(".")[2]) for k in sd if k.startswith("transformer.resblocks."))
        projection = sd.get("text_projection")
    else:
        total = 1 + max(int(k.split(".")[2]) for k in sd if k.startswith("encoder.layers."))
        projection = None
    if layout == "open_clip":  # the whole tower: run it to the penultimate block
        layers = total - 1 if penultimate and total > 1 else total
    else:  # transformers layout: a 24-layer tower is the whole one; 23 layers were already cut for this use
        layers = total - 1 if penultimate and total == 24 else total
    if layout == "open_clip":
        sd = _open_clip_to_hf(sd, layers)
    sd = _expand_token_rows(sd)
    vocab, width = sd["embeddings.token_embedding.weight"].shape
    if width != 1024 and not (width < 768 and width % HEAD_WIDTH == 0):
        raise ModelFileError(
            f"This text encoder is {width} wide; the text-to-video UNet3D needs OpenCLIP ViT-H/14 (1024 wide), or a "
            f"small model's own tower (narrower than 768, a multiple of {HEAD_WIDTH}, as wide as its UNet3D's "
            "context). "
            + ("A 768-wide CLIP is SD1.5's: use open_clip_pytorch_model.bin of the model instead." if width == 768 else "")
        )
    positions = sd["embeddings.position_embedding.weight"].shape[0]
    intermediate = sd["encoder.layers.0.mlp.fc1.weight"].shape[0]
    config = dict(vocab_size=vocab, hidden_size=width, intermediate_size=intermediate, num_hidden_layers=layers,
                  num_attention_heads=width // HEAD_WIDTH, max_position_embeddings=positions, hidden_act="gelu",
                  layer_norm_eps=1e-5, bos_token_id=SOT, eos_token_id=EOT, pad_token_id=0)
    return config, sd, projection


def text_encoder_from_state_dict(sd: Mapping[str, torch.Tensor], dtype: torch.dtype = torch.float32,
                                 tokenizer_folder: Path | None = None, penultimate: bool = True) -> TextEncoder:
    """`penultimate`: run all but the last block (the original's layer='penultimate'); a tower that has already been
    cut to 23 layers (as SD2/ModelScope diffusers folders are) is taken whole."""
    from transformers import CLIPTextConfig, CLIPTextModel

    layout, prefix = _detect(sd.keys())
    sd = {k[len(prefix):]: v for k, v in sd.items() if k.startswith(prefix)}
    try:
        config, sd, projection = _text_config(sd, layout, penultimate)
        with torch.device("meta"):
            model = CLIPTextModel(CLIPTextConfig(**config))
    except ModelFileError:
        raise
    except (KeyError, ValueError, IndexError, TypeError, RuntimeError) as exc:
        raise ModelFileError(f"The text encoder weights are incomplete or damaged ({type(exc).__name__}: {exc}); "
                             "download the file again.") from None
    width, positions, layers = config["hidden_size"], config["max_position_embeddings"], config["num_hidden_layers"]
    # transformers 4 nests the tower under `text_model`; transformers 5 does not.
    inner = getattr(model, "text_model", model)
    module_prefix = "text_model." if inner is not model else ""
    keep = {f"{module_prefix}{k}": v.to(dtype) if v.is_floating_point() else v for k, v in sd.items()
            if not k.startswith("encoder.layers.") or int(k.split(".")[2]) < layers}
    keep = {k: v for k, v in keep.items() if not k.endswith("position_ids")}
    check_tensors(model, keep, "The text encoder weights")
    result = model.load_state_dict(keep, strict=False, assign=True)
    missing = [k for k in result.missing_keys if not k.endswith("position_ids")]
    if missing or result.unexpected_keys:
        raise ModelFileError(f"The text encoder weights are incomplete or foreign (missing: {missing[:4]}, "
                             f"unexpected: {result.unexpected_keys[:4]}); the file may be damaged.")
    # Buffers that are not in the file (position ids) were left on the meta device: make them real.
    emb = inner.embeddings
    if hasattr(emb, "position_ids"):
        emb.register_buffer("position_ids", torch.arange(positions).unsqueeze(0), persistent=False)
    proj = projection.to(dtype) if projection is not None and projection.shape == (width, width) else None
    return TextEncoder(model.eval().requires_grad_(False), Tokenizer(tokenizer_folder), proj)


def _is_text_key(key: str) -> bool:
    return not re.search(r"(^|\.)visual\.|vision_model\.|^logit_scale$|(^|\.)logit_bias$", key)


def load_text_encoder(path, dtype: torch.dtype = torch.float32) -> TextEncoder:
    """From a weights file or a folder (diffusers model root, its text_encoder/, or an original-layout folder). Every
    problem with the files is a ModelFileError naming the file."""
    path = Path(path)
    tokenizer_folder = None
    penultimate = True
    if path.is_dir():
        root = path
        for candidate in (root / "text_encoder", root):
            for name in ("model.safetensors", "model.fp16.safetensors", "pytorch_model.bin", "pytorch_model.fp16.bin"):
                if (candidate / name).is_file():
                    path = candidate / name
                    config = candidate / "config.json"
                    if config.is_file():  # the folder says how many layers its pipeline runs
                        with naming(config):
                            penultimate = read_json(config).get("num_hidden_layers", 23) == 24
                    break
            else:
                continue
            break
        else:
            if (root / "open_clip_pytorch_model.bin").is_file():
                path = root / "open_clip_pytorch_model.bin"
            else:
                raise ModelFileError(f"{root} holds no text encoder: expected text_encoder/model.safetensors or "
                                     "open_clip_pytorch_model.bin.")
        if (root / "tokenizer" / "vocab.json").is_file():
            tokenizer_folder = root / "tokenizer"
    with naming(path):
        keys = read_keys(path)
        _, prefix = _detect(keys)
        # Only this tower's keys are read: the visual tower of a full CLIP, or the other parts of a single-file
        # checkpoint, never reach memory.
        sd = load_state_dict(path, dtype=dtype, keep=lambda k: k.startswith(prefix) and _is_text_key(k))
        return text_encoder_from_state_dict(sd, dtype, tokenizer_folder, penultimate)

"""PEFT LoRA folders (what `peft`'s `save_pretrained` writes; MCM's `modelscopet2v-*` folders, arXiv 2406.06890):
`adapter_config.json` (r, lora_alpha, use_rslora, rank_pattern, alpha_pattern) beside `adapter_model.safetensors`
(keys `base_model.model.<diffusers module>.lora_A.weight` / `lora_B.weight`, no alpha tensors).

Accepted as the folder itself (an entry of `loras`) or as its `.safetensors` with the config beside it. Each layer's
scale is PEFT's: alpha / r (alpha / sqrt(r) with use_rslora), r and alpha from the patterns where a pattern names the
module, else the config's.
"""

from __future__ import annotations

import re
from pathlib import Path

from .safe_load import ModelFileError, naming, read_json

CONFIG_NAME = "adapter_config.json"
WEIGHT_NAMES = ("adapter_model.safetensors", "adapter_model.bin")
PEFT_PREFIX = "base_model.model."


def is_peft_folder(path: Path) -> bool:
    return path.is_dir() and (path / CONFIG_NAME).is_file()


def peft_source(path: Path) -> tuple[Path, dict | None]:
    """(weights file, adapter config or None) for a LoRA path: a PEFT folder, a file with a PEFT config beside it, or
    any other file (no config)."""
    if path.is_dir():
        if not (path / CONFIG_NAME).is_file():
            raise ModelFileError(f"{path.name} is a folder without {CONFIG_NAME}: a LoRA folder is a PEFT adapter "
                                 f"({CONFIG_NAME} + {WEIGHT_NAMES[0]}); pick a LoRA file instead.")
        weights = next((path / n for n in WEIGHT_NAMES if (path / n).is_file()), None)
        if weights is None:
            raise ModelFileError(f"{path.name} has {CONFIG_NAME} but no {' or '.join(WEIGHT_NAMES)}: the download "
                                 "is incomplete; download the adapter's weights file into the folder.")
        return weights, _read_config(path / CONFIG_NAME)
    beside = path.parent / CONFIG_NAME
    if path.name in WEIGHT_NAMES and beside.is_file():
        return path, _read_config(beside)
    return path, None


def _read_config(path: Path) -> dict:
    with naming(path):
        config = read_json(path)
    if not isinstance(config, dict):
        raise ModelFileError(f"{path} is not a PEFT adapter config (a JSON object); restore it from the download.")
    peft_type = str(config.get("peft_type", "LORA")).upper()
    if peft_type != "LORA":
        raise ModelFileError(f"{path} describes a {peft_type} adapter; only LoRA adapters can be applied.")
    return config


def _pattern_value(patterns: dict, module: str, default):
    for key, value in (patterns or {}).items():
        if module == key or re.fullmatch(rf"(.*\.)?{key}", module):
            return value
    return default


def peft_scale(config: dict, module: str, rank: int) -> float:
    """PEFT's scaling of one layer: alpha / r (alpha / sqrt(r) with use_rslora)."""
    name = module[len(PEFT_PREFIX):] if module.startswith(PEFT_PREFIX) else module
    r = _pattern_value(config.get("rank_pattern"), name, config.get("r", rank)) or rank
    alpha = _pattern_value(config.get("alpha_pattern"), name, config.get("lora_alpha", r))
    return float(alpha) / (float(r) ** 0.5 if config.get("use_rslora") else float(r))

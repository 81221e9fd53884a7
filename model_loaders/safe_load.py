"""Reading model files as untrusted input.

* `.safetensors` / `.sft`: the header is checked against the file size before anything is read, so a truncated
  download gives a clear error instead of a crash deep inside the library; tensors are read one at a time.
* `.pth` / `.pt` / `.bin` / `.ckpt`: only through `torch.load(weights_only=True)` (torch's restricted unpickler,
  memory-mapped). Original ModelScope files written by PyTorch Lightning reference a few harmless foreign globals
  (Lightning's callback classes, numpy scalars); those, and only those, are allowed, as inert stand-ins that never
  import or run Lightning. Anything else (e.g. a `__reduce__` to os.system) is refused before it can run.

Nothing here imports ComfyUI.
"""

from __future__ import annotations

import json
import os
import pickle
import struct
from pathlib import Path
from typing import Callable

import torch

SAFETENSORS_SUFFIXES = {".safetensors", ".sft"}
PICKLE_SUFFIXES = {".pth", ".pt", ".bin", ".ckpt"}


class ModelFileError(ValueError):
    """A model file that cannot be used; the message names the problem and the fix."""


# --------------------------------------------------------------------------------------------- safetensors


def _safetensors_header(path: Path) -> dict:
    size = path.stat().st_size
    with open(path, "rb") as f:
        head = f.read(8)
        if len(head) < 8:
            raise ModelFileError(f"{path.name} is empty or truncated ({size} bytes): download it again.")
        (header_len,) = struct.unpack("<Q", head)
        if header_len > min(size - 8, 100 * 1024 * 1024):
            raise ModelFileError(
                f"{path.name} is not a valid .safetensors file (its header claims {header_len} bytes; "
                f"the file has {size}): it is truncated or not a safetensors file. Download it again."
            )
        try:
            header = json.loads(f.read(header_len))
        except (UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise ModelFileError(f"{path.name} has a corrupt safetensors header ({exc}): download it again.") from None
    data_len = size - 8 - header_len
    end = max((v["data_offsets"][1] for k, v in header.items() if k != "__metadata__"), default=0)
    if end > data_len:
        raise ModelFileError(
            f"{path.name} is truncated: its header describes {end} bytes of tensors but only {data_len} are there. "
            "The download was probably interrupted; download the file again."
        )
    return header


def safetensors_metadata(path: str | os.PathLike) -> dict:
    return _safetensors_header(Path(path)).get("__metadata__", {}) or {}


# --------------------------------------------------------------------------------------------- pickles


class _InertGlobal:
    """Stand-in for a harmless foreign class referenced by a checkpoint's pickle (e.g. Lightning's ModelCheckpoint).

    It is only ever a dictionary key or a bag of state: constructing it or restoring state into it does nothing.
    """

    def __init__(self, *args, **kwargs):
        self.args = args
        self.kwargs = kwargs

    def __setstate__(self, state):
        self.state = state


_inert_classes: dict[str, type] = {}


def _inert(qualified_name: str) -> type:
    if qualified_name not in _inert_classes:
        module, _, name = qualified_name.rpartition(".")
        cls = type(name, (_InertGlobal,), {"__module__": module, "__qualname__": name})
        _inert_classes[qualified_name] = cls
    return _inert_classes[qualified_name]


#: Module prefixes whose classes appear in Lightning checkpoints as callback keys / hyper-parameter containers.
_INERT_PREFIXES = ("pytorch_lightning.", "lightning.", "lightning_fabric.")
#: numpy globals that only rebuild plain numbers and dtypes.
_NUMPY_GLOBALS = {
    "numpy.core.multiarray.scalar",
    "numpy._core.multiarray.scalar",
    "numpy.dtype",
}


def _allowed_global(name: str):
    if name.startswith(_INERT_PREFIXES):
        return _inert(name)
    if name in _NUMPY_GLOBALS or (name.startswith("numpy.dtypes.") and name.endswith("DType")):
        try:
            import numpy  # noqa: F401
            import numpy.core.multiarray  # noqa: F401  (numpy 1.x path and the 2.x alias)
        except Exception:
            return None
        module, _, attr = name.rpartition(".")
        import importlib

        try:
            obj = getattr(importlib.import_module(module), attr)
        except Exception:
            return None
        return obj if module.startswith("numpy") else None
    return None


def _torch_load(path: Path):
    try:
        return torch.load(path, map_location="cpu", weights_only=True, mmap=True)
    except RuntimeError as exc:  # mmap needs the new zip format; old-format files are small, load them directly
        if "mmap" not in str(exc):
            raise
        return torch.load(path, map_location="cpu", weights_only=True)


def _load_pickle(path: Path):
    try:
        return _torch_load(path)
    except pickle.UnpicklingError as first:
        try:
            names = torch.serialization.get_unsafe_globals_in_checkpoint(str(path))
        except Exception:
            names = []
        allowed, refused = [], []
        for name in names:
            obj = _allowed_global(name)
            (allowed if obj is not None else refused).append((name, obj))
        # numpy scalars are rebuilt through their dtype class (numpy.dtypes.Int64DType, ...), which the scan above
        # does not list (and a host such as ComfyUI may already allow the rest): allow those classes, which only
        # describe numbers, whenever numpy is involved.
        numpy_involved = any(name.startswith("numpy") for name, _ in allowed) or "numpy" in str(first)
        if refused or not (allowed or numpy_involved):
            culprits = ", ".join(n for n, _ in refused) or "globals it is not allowed to use"
            raise ModelFileError(
                f"{path.name} was refused: its pickle asks to import or run {culprits}, which a weights file never "
                "needs (it could execute code on your machine). Use a .safetensors version of this model, or a "
                "checkpoint from a source you trust converted to .safetensors."
            ) from None
        if numpy_involved:
            import numpy

            for attr in dir(getattr(numpy, "dtypes", None)):
                if attr.endswith("DType"):
                    allowed.append((f"numpy.dtypes.{attr}", getattr(numpy.dtypes, attr)))
        # Only the harmless globals found above are added; everything else stays refused.
        with torch.serialization.safe_globals([(obj, name) for name, obj in allowed]):
            try:
                return _torch_load(path)
            except pickle.UnpicklingError as second:
                raise ModelFileError(
                    f"{path.name} was refused by the safe loader ({str(second).splitlines()[0]}). "
                    "Use a .safetensors version of this model."
                ) from None


# --------------------------------------------------------------------------------------------- public API


def read_keys(path: str | os.PathLike) -> dict[str, tuple[int, ...]]:
    """Key -> shape, without reading tensor data where the format allows (used to recognise a file)."""
    path = Path(path)
    if path.suffix.lower() in SAFETENSORS_SUFFIXES:
        header = _safetensors_header(path)
        return {k: tuple(v["shape"]) for k, v in header.items() if k != "__metadata__"}
    return {k: tuple(v.shape) for k, v in load_state_dict(path).items()}


def _unwrap(obj, path: Path) -> dict:
    """A plain state dict from what torch.load returned (Lightning: under `state_dict`; some: under `model`)."""
    if isinstance(obj, dict):
        for key in ("state_dict", "model", "module"):
            inner = obj.get(key)
            if isinstance(inner, dict) and inner and all(isinstance(v, torch.Tensor) for v in inner.values()):
                return inner
        tensors = {k: v for k, v in obj.items() if isinstance(k, str) and isinstance(v, torch.Tensor)}
        if tensors:
            return tensors
    raise ModelFileError(f"{path.name} holds no model weights (found {type(obj).__name__}).")


def load_state_dict(
    path: str | os.PathLike,
    dtype: torch.dtype | None = None,
    keep: Callable[[str], bool] | None = None,
    rename: Callable[[str], str | None] | None = None,
) -> dict[str, torch.Tensor]:
    """Read a weights file into a plain `{key: tensor}` dict on the CPU.

    `keep` filters keys before any data is read (so the visual tower of a full CLIP never reaches memory);
    `rename` maps a key to its new name (None drops it); floating tensors are cast to `dtype` one at a time, so the
    peak is the result plus one tensor, never the file twice.
    """
    path = Path(path)
    if not path.exists():
        raise ModelFileError(f"{path} does not exist.")
    if path.is_dir():
        raise ModelFileError(f"{path} is a folder; this loader takes a single weights file.")
    suffix = path.suffix.lower()
    out: dict[str, torch.Tensor] = {}

    def take(key: str, get_tensor):
        if keep is not None and not keep(key):
            return
        new_key = rename(key) if rename is not None else key
        if new_key is None:
            return
        tensor = get_tensor()
        if dtype is not None and tensor.is_floating_point() and tensor.dtype != dtype:
            tensor = tensor.to(dtype)
        elif tensor.data_ptr() % 64:
            # safetensors only aligns data to 8 bytes; SIMD kernels take other paths on misaligned weights and round
            # differently, so the same weights from two files would not give bit-identical results. One tensor at a
            # time, so the peak stays the result plus one tensor.
            tensor = tensor.clone()
        out[new_key] = tensor

    if suffix in SAFETENSORS_SUFFIXES:
        _safetensors_header(path)
        from safetensors import safe_open

        try:
            with safe_open(str(path), framework="pt", device="cpu") as f:
                for key in f.keys():
                    take(key, lambda key=key: f.get_tensor(key))
        except ModelFileError:
            raise
        except Exception as exc:
            raise ModelFileError(f"{path.name} could not be read as safetensors ({exc}): download it again.") from None
        return out

    if suffix in PICKLE_SUFFIXES:
        try:
            obj = _load_pickle(path)
        except ModelFileError:
            raise
        except Exception as exc:
            raise ModelFileError(
                f"{path.name} could not be read as a PyTorch checkpoint ({str(exc).splitlines()[0]}). "
                "It may be truncated or not a weights file: download it again."
            ) from None
        for key, tensor in _unwrap(obj, path).items():
            take(key, lambda tensor=tensor: tensor)
        return out

    raise ModelFileError(
        f"{path.name}: unsupported file type {suffix or '(none)'}; expected .safetensors, .pth, .pt, .bin or .ckpt."
    )


def strip_prefix(prefix: str) -> Callable[[str], str | None]:
    """A `rename` for load_state_dict that keeps keys under `prefix` and removes it."""

    def rename(key: str) -> str | None:
        return key[len(prefix):] if key.startswith(prefix) else None

    return rename

"""Reading model files as untrusted input.

* `.safetensors` / `.sft`: the header is checked against the file size before anything is read, so a truncated
  download gives a clear error instead of a crash deep inside the library; tensors are read one at a time.
* `.pth` / `.pt` / `.bin` / `.ckpt`: only through `torch.load(weights_only=True)` (torch's restricted unpickler).
  Original ModelScope files written by PyTorch Lightning reference a few harmless foreign globals (Lightning's
  callback classes, numpy scalars); those, and only those, are allowed, as inert stand-ins that never import or run
  Lightning. Anything else (e.g. a `__reduce__` to os.system) is refused before it can run.
* Loaded tensors belong to the process: nothing stays mapped from the file (unless CINEMATIC_MMAP=1), so a file
  overwritten or truncated later changes nothing. Every format error is a ModelFileError naming the file.

Nothing here imports ComfyUI.
"""

from __future__ import annotations

import json
import os
import pickle
import struct
from contextlib import contextmanager
from pathlib import Path
from typing import Callable, Mapping

import torch

SAFETENSORS_SUFFIXES = {".safetensors", ".sft"}
PICKLE_SUFFIXES = {".pth", ".pt", ".bin", ".ckpt"}


class ModelFileError(ValueError):
    """A model file that cannot be used; the message names the problem and the fix."""


# --------------------------------------------------------------------------------------------- safetensors


#: bytes per element of every tensor type the safetensors format names that torch can hold
_SAFETENSORS_ITEMSIZE = {
    "BOOL": 1, "U8": 1, "I8": 1, "F8_E4M3": 1, "F8_E4M3FNUZ": 1, "F8_E5M2": 1, "F8_E5M2FNUZ": 1,
    "I16": 2, "U16": 2, "F16": 2, "BF16": 2, "I32": 4, "U32": 4, "F32": 4, "I64": 8, "U64": 8, "F64": 8, "C64": 8,
}


def _header_problem(header, data_len: int) -> str | None:
    """What is wrong with a parsed safetensors header (None: nothing). Checks everything the reader relies on, so a
    damaged or hand-made file is refused here with its reason instead of failing inside the library."""
    if not isinstance(header, dict):
        return f"its header is a JSON {type(header).__name__}, not an object of tensors"
    metadata = header.get("__metadata__")
    if metadata is not None and not (isinstance(metadata, dict)
                                     and all(isinstance(k, str) and isinstance(v, str) for k, v in metadata.items())):
        return "its __metadata__ is not a table of strings"
    for key, entry in header.items():
        if key == "__metadata__":
            continue
        if not isinstance(entry, dict):
            return f"the entry of tensor {key!r} is not an object"
        dtype, shape, offsets = entry.get("dtype"), entry.get("shape"), entry.get("data_offsets")
        if dtype not in _SAFETENSORS_ITEMSIZE:
            return f"tensor {key!r} has the unknown or unsupported type {dtype!r}"
        if not isinstance(shape, list) or not all(type(n) is int and n >= 0 for n in shape):
            return f"tensor {key!r} has an invalid shape {shape!r}"
        if (not isinstance(offsets, list) or len(offsets) != 2 or not all(type(n) is int for n in offsets)
                or not 0 <= offsets[0] <= offsets[1]):
            return f"tensor {key!r} has invalid data_offsets {offsets!r}"
        count = 1
        for n in shape:
            count *= n
        if offsets[1] - offsets[0] != count * _SAFETENSORS_ITEMSIZE[dtype]:
            return (f"tensor {key!r} ({dtype}, shape {shape}) needs {count * _SAFETENSORS_ITEMSIZE[dtype]} bytes "
                    f"but its data_offsets span {offsets[1] - offsets[0]}")
    return None


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
    problem = _header_problem(header, data_len)
    if problem:
        raise ModelFileError(f"{path.name} has a corrupt safetensors header ({problem}): download it again, or "
                             "re-save it with safetensors.torch.save_file.")
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
    """(object, mapped): the file is memory-mapped while it is read (see load_state_dict for why and what then)."""
    try:
        return torch.load(path, map_location="cpu", weights_only=True, mmap=True), True
    except RuntimeError as exc:  # mmap needs the new zip format; old-format files are small, load them directly
        if "mmap" not in str(exc):
            raise
        return torch.load(path, map_location="cpu", weights_only=True), False


def _load_pickle(path: Path):
    """(object, mapped) from a pickle checkpoint through the restricted unpickler."""
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
                    f"{path.name} was refused by the safe loader ({_first_line(second)}). "
                    "Use a .safetensors version of this model."
                ) from None


# --------------------------------------------------------------------------------------------- public API


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


def _read_pickle(path: Path) -> tuple[dict, bool]:
    """(state dict, mapped) of a .pth/.pt/.bin/.ckpt; every failure is a ModelFileError naming the file."""
    obj, mapped = read_pickle_object(path)
    return _unwrap(obj, path), mapped


def read_pickle_object(path: Path):
    """(object, mapped): whatever a .pth/.pt/.bin/.ckpt holds (a state dict, or e.g. a list of tensors), through the
    restricted unpickler; every failure is a ModelFileError naming the file."""
    path = Path(path)
    if path.stat().st_size == 0:
        raise ModelFileError(f"{path.name} is empty (0 bytes): the download failed; download it again.")
    try:
        obj, mapped = _load_pickle(path)
    except ModelFileError:
        raise
    except Exception as exc:
        raise ModelFileError(
            f"{path.name} could not be read as a PyTorch checkpoint ({_first_line(exc)}). "
            "It may be truncated or not a weights file: download it again."
        ) from None
    return obj, mapped


def _check_exists(path: Path) -> None:
    if not path.exists():
        raise ModelFileError(f"{path} does not exist.")
    if path.is_dir():
        raise ModelFileError(f"{path} is a folder; this loader takes a single weights file.")


def read_keys(path: str | os.PathLike) -> dict[str, tuple[int, ...]]:
    """Key -> shape, without reading tensor data where the format allows (used to recognise a file)."""
    path = Path(path)
    _check_exists(path)
    suffix = path.suffix.lower()
    if suffix in SAFETENSORS_SUFFIXES:
        header = _safetensors_header(path)
        return {k: tuple(v["shape"]) for k, v in header.items() if k != "__metadata__"}
    if suffix in PICKLE_SUFFIXES:  # memory-mapped: only the pages of the pickle itself are read
        return {k: tuple(v.shape) for k, v in _read_pickle(path)[0].items()}
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


def keep_file_mapping() -> bool:
    """CINEMATIC_MMAP=1: loaded weights stay memory-mapped from their files (opt-in; see load_state_dict)."""
    return os.environ.get("CINEMATIC_MMAP", "").strip().lower() in ("1", "true", "yes", "on")


def load_state_dict(
    path: str | os.PathLike,
    dtype: torch.dtype | Callable[[torch.Tensor], torch.dtype] | None = None,
    keep: Callable[[str], bool] | None = None,
    rename: Callable[[str], str | None] | None = None,
) -> dict[str, torch.Tensor]:
    """Read a weights file into a plain `{key: tensor}` dict on the CPU, owned by this process.

    `keep` filters keys before any data is read (so the visual tower of a full CLIP never reaches memory);
    `rename` maps a key to its new name (None drops it); floating tensors are cast to `dtype` one at a time, so the
    peak is the result plus one tensor, never the file twice.

    Ownership: both formats are read through a memory mapping of the file (safetensors' safe_open, torch.load with
    mmap=True). A tensor still backed by that mapping would change when the file is overwritten later (a re-download)
    and kill the process with SIGBUS when it is truncated; so every tensor is copied out of the mapping (cast or
    cloned, one at a time) before this returns, and the mapping is released. Peak memory: the mapped pages are the
    kernel's page cache (clean, reclaimable), so the process holds the result plus one tensor; reading without a
    mapping (torch.load's default) would first hold the whole file in process memory, then the cast result beside it.
    CINEMATIC_MMAP=1 keeps the tensors mapped instead (no copy, for those who know their files never change).
    """
    path = Path(path)
    _check_exists(path)
    suffix = path.suffix.lower()
    out: dict[str, torch.Tensor] = {}
    keep_mapping = keep_file_mapping()

    def take(key: str, get_tensor, mapped: bool):
        if keep is not None and not keep(key):
            return
        new_key = rename(key) if rename is not None else key
        if new_key is None:
            return
        source = get_tensor()
        tensor = source
        target = dtype(tensor) if callable(dtype) else dtype  # a dtype, or tensor -> dtype (fp8 storage)
        if target is not None and tensor.is_floating_point() and tensor.dtype != target:
            tensor = tensor.to(target)  # a new tensor, owned
        if (mapped and not keep_mapping and tensor is source) or tensor.data_ptr() % 64:
            # Copy out of the file mapping (see above). The copy is also 64-byte aligned: safetensors only aligns
            # data to 8 bytes, and SIMD kernels take other paths on misaligned weights and round differently, so the
            # same weights from two files would not give bit-identical results.
            tensor = tensor.clone()
        out[new_key] = tensor

    if suffix in SAFETENSORS_SUFFIXES:
        _safetensors_header(path)
        from safetensors import safe_open

        try:
            with safe_open(str(path), framework="pt", device="cpu") as f:
                for key in f.keys():
                    take(key, lambda key=key: f.get_tensor(key), True)
        except ModelFileError:
            raise
        except Exception as exc:
            raise ModelFileError(f"{path.name} could not be read as safetensors ({_first_line(exc)}): "
                                 "download it again.") from None
        return out

    if suffix in PICKLE_SUFFIXES:
        state, mapped = _read_pickle(path)
        for key, tensor in state.items():
            take(key, lambda tensor=tensor: tensor, mapped)
        return out

    raise ModelFileError(
        f"{path.name}: unsupported file type {suffix or '(none)'}; expected .safetensors, .pth, .pt, .bin or .ckpt."
    )


def read_json(path: str | os.PathLike) -> dict:
    """A model folder's configuration.json / config.json as a dict; a broken one is a ModelFileError naming it."""
    path = Path(path)
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ModelFileError(f"{path} is not valid JSON ({exc}): restore it from the model's download "
                             "(or delete it from a folder whose weights carry their own shapes).") from None
    except OSError as exc:
        raise ModelFileError(f"{path} could not be read ({exc}).") from None
    if not isinstance(data, dict):
        raise ModelFileError(f"{path} holds a JSON {type(data).__name__}, not an object: restore it from the "
                             "model's download.")
    return data


def check_tensors(model: torch.nn.Module, sd: Mapping[str, torch.Tensor], what: str) -> None:
    """Before `load_state_dict(assign=True)`: every tensor has the shape the model (built from the file's own shapes)
    needs, and a floating type where the model holds floats; else a ModelFileError naming the tensor."""
    expected = model.state_dict(keep_vars=True)
    for key, value in sd.items():
        want = expected.get(key)
        if want is None:
            continue
        if tuple(value.shape) != tuple(want.shape):
            raise ModelFileError(
                f"{what}: tensor {key} has shape {tuple(value.shape)}, but the model the file's other tensors "
                f"describe needs {tuple(want.shape)}. The file is damaged or mixes two models: download it again."
            )
        if want.is_floating_point() and not value.is_floating_point():
            raise ModelFileError(
                f"{what}: tensor {key} is stored as {value.dtype}, but it must hold floating-point weights. "
                "The file is damaged or not a weights file for this model: download it again."
            )


@contextmanager
def naming(path: str | os.PathLike):
    """Inside: a ModelFileError whose message does not name `path` gets its name prepended, so every error about a
    file says which file."""
    path = Path(path)
    try:
        yield
    except ModelFileError as exc:
        message = str(exc)
        if path.name and path.name in message:
            raise
        raise ModelFileError(f"{path}: {message}") from None


def strip_prefix(prefix: str) -> Callable[[str], str | None]:
    """A `rename` for load_state_dict that keeps keys under `prefix` and removes it."""

    def rename(key: str) -> str | None:
        return key[len(prefix):] if key.startswith(prefix) else None

    return rename

"""Everything the pack takes from ComfyUI, guarded so the pack imports and runs in plain Python.

Used from ComfyUI: `folder_paths` (model folders, output folder), `comfy.model_management` (devices,
loading/offloading, interrupt), `comfy.utils.ProgressBar`. Outside ComfyUI the same functions fall back to
environment variables (`CINEMATIC_MODELS_DIR`, `CINEMATIC_OUTPUT_DIR`, `CINEMATIC_DEVICE`), tqdm and no-ops.
"""

from __future__ import annotations

import os
from pathlib import Path

try:  # pragma: no cover - exercised only inside ComfyUI
    import folder_paths  # type: ignore
except Exception:  # ImportError, or a half-initialised ComfyUI
    folder_paths = None

try:  # pragma: no cover - exercised only inside ComfyUI
    import comfy.model_management as model_management  # type: ignore
except Exception:
    model_management = None

try:  # pragma: no cover - exercised only inside ComfyUI
    import comfy.utils as comfy_utils  # type: ignore
except Exception:
    comfy_utils = None


IN_COMFYUI = folder_paths is not None and model_management is not None

#: The folder of every kind of model file this pack reads; `text2video` is ours, the rest are ComfyUI's.
TEXT2VIDEO = "text2video"
MODEL_EXTENSIONS = {".safetensors", ".pth", ".pt", ".bin", ".ckpt", ".sft"}


class ModelNotFoundError(FileNotFoundError):
    pass


def _register_text2video_folder():
    if folder_paths is None:
        return
    default_dir = os.path.join(folder_paths.models_dir, TEXT2VIDEO)
    table = folder_paths.folder_names_and_paths
    if TEXT2VIDEO not in table:
        table[TEXT2VIDEO] = ([default_dir], set(MODEL_EXTENSIONS))
    elif default_dir not in table[TEXT2VIDEO][0]:  # extra_model_paths.yaml registered it first: keep both
        table[TEXT2VIDEO][0].append(default_dir)


_register_text2video_folder()


def models_root() -> Path:
    """Outside ComfyUI: the directory holding text2video/, diffusion_models/, text_encoders/, vae/."""
    return Path(os.environ.get("CINEMATIC_MODELS_DIR", "./models")).expanduser()


def folder_dirs(folder: str) -> list[Path]:
    """The directories searched for one folder key (ComfyUI's table inside ComfyUI, else the env var)."""
    if folder_paths is not None:
        try:
            return [Path(p) for p in folder_paths.get_folder_paths(folder)]
        except Exception:
            return []
    return [models_root() / folder]


def _is_model_folder(path: Path) -> bool:
    """A folder entry: original layout (configuration.json) or diffusers layout (model_index.json / unet/)."""
    return (path / "configuration.json").is_file() or (path / "model_index.json").is_file() or (path / "unet").is_dir()


def list_models(*folders: str, include_folders: bool = False, files_in_model_folders: bool = True) -> list[str]:
    """Names for a loader dropdown: files (relative, `/`-separated) and, if asked, model folders.

    `files_in_model_folders=False` lists a model folder as one entry without the files inside it (the checkpoint
    loader takes whole models); the single-part loaders may also pick one file out of a folder."""
    names: set[str] = set()
    for folder in folders:
        for root in folder_dirs(folder):
            if not root.is_dir():
                continue
            for dirpath, dirnames, filenames in os.walk(root, followlinks=True):
                here = Path(dirpath)
                if include_folders and here != root and _is_model_folder(here):
                    names.add(here.relative_to(root).as_posix())
                    if not files_in_model_folders:
                        dirnames[:] = []
                        continue
                for filename in filenames:
                    if Path(filename).suffix.lower() in MODEL_EXTENSIONS:
                        names.add((here / filename).relative_to(root).as_posix())
                dirnames.sort()
    return sorted(names)


def resolve_model(name: str, *folders: str) -> Path:
    """Turn a dropdown name into a path; a clear error names every folder that was searched."""
    if not name:
        raise ModelNotFoundError("No model was chosen: put a model file in one of the model folders and pick it.")
    searched: list[str] = []
    for folder in folders:
        for root in folder_dirs(folder):
            candidate = (root / name).resolve()
            searched.append(str(root))
            try:
                candidate.relative_to(root.resolve())
            except ValueError:
                raise ModelNotFoundError(f"Model name {name!r} points outside the folder {root}.") from None
            if candidate.exists():
                return candidate
    where = ", ".join(searched) if searched else "(no folder is configured)"
    hint = "" if IN_COMFYUI else " Set CINEMATIC_MODELS_DIR to the folder that holds text2video/, diffusion_models/, text_encoders/ and vae/."
    raise ModelNotFoundError(f"Model {name!r} was not found. Searched: {where}.{hint}")


def output_dir() -> Path:
    if folder_paths is not None:
        return Path(folder_paths.get_output_directory())
    return Path(os.environ.get("CINEMATIC_OUTPUT_DIR", "./output")).expanduser()


# ----------------------------------------------------------------------------------------------- devices


def torch_device():
    """The compute device: ComfyUI's choice inside ComfyUI; else CINEMATIC_DEVICE, CUDA, MPS, CPU."""
    import torch

    if model_management is not None:
        return model_management.get_torch_device()
    forced = os.environ.get("CINEMATIC_DEVICE")
    if forced:
        return torch.device(forced)
    if torch.cuda.is_available():
        return torch.device("cuda")
    if getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
        return torch.device("mps")
    return torch.device("cpu")


def offload_device():
    import torch

    if model_management is not None:
        return model_management.unet_offload_device()
    return torch.device("cpu")


def throw_if_interrupted():
    """Raise ComfyUI's interrupt exception when the user pressed Cancel; a no-op outside ComfyUI."""
    if model_management is not None:
        model_management.throw_exception_if_processing_interrupted()


def soft_empty_cache():
    if model_management is not None:
        model_management.soft_empty_cache()


class Progress:
    """Progress on every step: ComfyUI's ProgressBar (with an optional preview) inside ComfyUI, tqdm outside."""

    def __init__(self, total: int, desc: str = "Cinematic"):
        self.total = total
        self._bar = None
        self._tqdm = None
        if comfy_utils is not None:
            self._bar = comfy_utils.ProgressBar(total)
        else:
            try:
                from tqdm.auto import tqdm

                self._tqdm = tqdm(total=total, desc=desc, leave=False)
            except ImportError:  # tqdm ships with transformers; be tolerant anyway
                self._tqdm = None

    @property
    def wants_preview(self) -> bool:
        return self._bar is not None

    def update(self, step: int, preview=None):
        """`step` is the number of steps done so far (1-based after the first step)."""
        if self._bar is not None:
            self._bar.update_absolute(step, self.total, preview)
        elif self._tqdm is not None:
            self._tqdm.update(step - self._tqdm.n)

    def close(self):
        if self._tqdm is not None:
            self._tqdm.close()

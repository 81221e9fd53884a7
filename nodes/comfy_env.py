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


def _walk_real_folders(root: Path):
    """os.walk following links, as ComfyUI's folder_paths does (a linked file or subfolder is listed under its link
    name), but each real folder is visited once: a folder reached again through a link (a loop back to a parent,
    or a second link to the same place) is skipped, so loops end at once and nothing is listed twice."""
    seen: set = set()
    for dirpath, dirnames, filenames in os.walk(root, followlinks=True):
        try:
            st = os.stat(dirpath)
        except OSError:
            dirnames[:] = []
            continue
        # (device, inode) names a real folder; a file system without inode numbers (st_ino 0) gets the real path
        key = (st.st_dev, st.st_ino) if st.st_ino else os.path.realpath(dirpath)
        if key in seen:
            dirnames[:] = []
            continue
        seen.add(key)
        # real subfolders before links, so a folder linked beside itself is listed under its own name
        dirnames.sort(key=lambda d: (os.path.islink(os.path.join(dirpath, d)), d))
        yield Path(dirpath), dirnames, filenames


def list_models(*folders: str, include_folders: bool = False, files_in_model_folders: bool = True) -> list[str]:
    """Names for a loader dropdown: files (relative, `/`-separated) and, if asked, model folders.

    `files_in_model_folders=False` lists a model folder as one entry without the files inside it (the checkpoint
    loader takes whole models); the single-part loaders may also pick one file out of a folder. Links are followed
    (see _walk_real_folders); a link that leads nowhere is left out."""
    names: set[str] = set()
    for folder in folders:
        for root in folder_dirs(folder):
            if not root.is_dir():
                continue
            for here, dirnames, filenames in _walk_real_folders(root):
                if include_folders and here != root and _is_model_folder(here):
                    names.add(here.relative_to(root).as_posix())
                    if not files_in_model_folders:
                        dirnames[:] = []
                        continue
                for filename in filenames:
                    if Path(filename).suffix.lower() in MODEL_EXTENSIONS and (here / filename).exists():
                        names.add((here / filename).relative_to(root).as_posix())
    return sorted(names)


def list_folders_holding(folder: str, marker: str) -> list[str]:
    """Subfolders (relative, `/`-separated) of a model kind's folders that hold the file `marker` (e.g. a PEFT
    adapter's adapter_config.json), for a dropdown."""
    names: set[str] = set()
    for root in folder_dirs(folder):
        if not root.is_dir():
            continue
        for here, _, filenames in _walk_real_folders(root):
            if here != root and marker in filenames:
                names.add(here.relative_to(root).as_posix())
    return sorted(names)


def _unsafe_name(name: str) -> bool:
    """A dropdown name must stay inside its folder by its own spelling: no absolute path, drive or `..` part."""
    from pathlib import PurePosixPath, PureWindowsPath

    return (os.path.isabs(name) or PurePosixPath(name).is_absolute() or bool(PureWindowsPath(name).drive)
            or PureWindowsPath(name).is_absolute() or ".." in name.replace("\\", "/").split("/"))


def resolve_model(name: str, *folders: str) -> Path:
    """Turn a dropdown name into a path; a clear error names every folder that was searched.

    As ComfyUI's folder_paths does: the name is joined to each folder and links are followed from there (a model
    file or folder linked in from elsewhere loads). What is checked is the name itself: an absolute name or one with
    a `..` part is refused, so a name never climbs out of its folder."""
    if not name:
        raise ModelNotFoundError("No model was chosen: put a model file in one of the model folders and pick it.")
    if _unsafe_name(name):
        raise ModelNotFoundError(f"Model name {name!r} points outside the folder: pick a name from the list (a path "
                                 "inside the model folder, without '..' or a leading '/').")
    searched: list[str] = []
    dangling: list[Path] = []
    for folder in folders:
        for root in folder_dirs(folder):
            searched.append(str(root))
            candidate = Path(os.path.abspath(root / name))
            if candidate.exists():
                return candidate
            if candidate.is_symlink():
                dangling.append(candidate)
    if dangling:
        raise ModelNotFoundError(f"Model {name!r} is a link that leads nowhere ({dangling[0]} -> "
                                 f"{os.readlink(dangling[0])}): fix or remove the link.")
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

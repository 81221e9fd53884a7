"""Runs ComfyUI in-process (no server) with this pack installed as a user installs it, for the integration suite.

    comfy = ComfyHarness(comfy_path, base_dir)   # base_dir gets custom_nodes/<pack>, models/, output/
    outputs = comfy.run(api_prompt)              # validate + execute through ComfyUI's real PromptExecutor

ComfyUI stays where it is (COMFYUI_PATH); only `--base-directory` points into a temporary folder, and the pack is
linked into its custom_nodes/ under a folder name, exactly as a clone into custom_nodes/ would be.

Works with ComfyUI v0.3.64 and 0.33.0 (docs/COMFYUI_VERSIONS.md). What changed between them is handled by feature
detection, never by version numbers: PromptExecutor's `cache_size=` became `cache_args={...}` (0.33 reads
cache_args["ram"] on every run), the outputs cache's `get` became a coroutine beside a plain `get_local`, and a cached
entry became `CacheEntry(ui, outputs)` instead of the bare outputs list. `harness.version` is ComfyUI's own
comfyui_version.__version__, for reports only.
"""

from __future__ import annotations

import asyncio
import gc
import inspect
import logging
import os
import sys
import uuid
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
PACK_FOLDER = "ComfyUI-Cinematic"


class _Server:
    """The part of ComfyUI's PromptServer the executor talks to."""

    def __init__(self):
        self.client_id = None
        self.last_node_id = None
        self.last_prompt_id = None
        self.sockets_metadata = {}
        self.messages = []

    def send_sync(self, event, data, sid=None):
        self.messages.append((event, data))

    def queue_updated(self):
        pass


class _LogCapture(logging.Handler):
    def __init__(self):
        super().__init__(logging.DEBUG)
        self.lines = []

    def emit(self, record):
        self.lines.append(record.getMessage())


def place_models(models: Path) -> None:
    """Tiny random-weight models under the names the example workflows use."""
    import shutil

    from . import tiny_checkpoint

    t2v = models / "text2video"
    if (models / "loras" / "text2video_lora.safetensors").is_file():  # placed already (one ComfyUI per process)
        return
    tiny_checkpoint.write_original_folder(t2v / "text-to-video-ms-1.7b", seed=1)
    tiny_checkpoint.write_diffusers_folder(t2v / "zeroscope_v2_576w", seed=2)
    shutil.copytree(t2v / "text-to-video-ms-1.7b", t2v / "zeroscope_v2_XL")
    write_sd2_clip(models / "text_encoders" / "open_clip_vit_h14.safetensors")
    write_lora(t2v / "text-to-video-ms-1.7b" / "text2video_pytorch_model.pth",
               models / "loras" / "text2video_lora.safetensors")
    write_list_loras(t2v / "text-to-video-ms-1.7b" / "text2video_pytorch_model.pth", models / "loras")


def harness_with_unet(comfy_path, base_dir: Path, unet_file: str, seed: int = 31) -> "ComfyHarness":
    """The process's harness with the shared models placed and a tiny UNet3D (original keys, safetensors) as
    models/diffusion_models/<unet_file>."""
    from cinematic_testing import tiny_unet

    harness = ComfyHarness(comfy_path, base_dir)
    place_models(harness.models)
    tiny_unet.write_original_safetensors(tiny_unet.tiny_state_dict(seed=seed),
                                         harness.models / "diffusion_models" / unet_file)
    return harness


def write_motion_gif(path: Path, frames: int = 4, size: int = 64) -> Path:
    """A short clip as an animated GIF (core LoadImage reads it as a frame batch): a square moving right."""
    from PIL import Image

    path.parent.mkdir(parents=True, exist_ok=True)
    images = []
    for f in range(frames):
        img = Image.new("RGB", (size, size), (20, 20, 60))
        img.paste((230, 200, 40), (8 + 10 * f, 20, 28 + 10 * f, 40))
        images.append(img)
    images[0].save(path, save_all=True, append_images=images[1:], duration=125, loop=0)
    return path


def write_list_loras(unet_pth: Path, loras: Path) -> None:
    """The list-format LoRAs the turbo_4_steps and motion_lora workflows name, for the tiny UNet in `unet_pth` (the
    zeroscope entry has the same tiny architecture): T2V-Turbo's (every layer, its guidance embedding included) and
    a MotionDirector temporal one, written as cloneofsimo's saver writes them."""
    import torch
    from diffusers import UNet3DConditionModel

    from . import tiny_lora, tiny_unet

    reference = tiny_unet.diffusers_model(torch.load(unet_pth, weights_only=True))
    turbo = UNet3DConditionModel(**tiny_unet.TINY_DIFFUSERS_CONFIG, time_cond_proj_dim=256)
    turbo.load_state_dict(reference.state_dict(), strict=False)
    tiny_lora.write_list(tiny_lora.saver_walk(turbo, "all"), loras / "T2V-Turbo-MS" / "unet_lora.pt", seed=4)
    motion = loras / "MotionDirector" / "riding_bicycle" / "checkpoint-300" / "temporal" / "lora" / "300_unet.pt"
    tiny_lora.write_list(tiny_lora.saver_walk(reference, "temporal"), motion, seed=5)


def write_lora(unet_pth: Path, path: Path) -> None:
    """A tiny stable_lora file for the UNet in `unet_pth` (the lora_freeu_ksampler workflow's LoRA)."""
    import torch

    from . import tiny_lora

    sd = torch.load(unet_pth, weights_only=True)
    tensors, metadata, _ = tiny_lora.stable_lora(sd, seed=3)
    tiny_lora.write(path, tensors, metadata)


def write_sd2_clip(path: Path) -> None:
    """A random full-size SD2 / OpenCLIP ViT-H/14 text encoder in transformers keys (what core CLIPLoader loads)."""
    import torch
    from safetensors.torch import save_file
    from transformers import CLIPTextConfig, CLIPTextModel

    path.parent.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(0)
    config = CLIPTextConfig(vocab_size=49408, hidden_size=1024, intermediate_size=4096, num_hidden_layers=24,
                            num_attention_heads=16, max_position_embeddings=77, hidden_act="gelu")
    model = CLIPTextModel(config)
    sd = {"text_model." + k.removeprefix("text_model."): v.half().contiguous()
          for k, v in model.state_dict().items() if not k.endswith("position_ids")}
    save_file(sd, str(path))


def prepare_base(base: Path) -> Path:
    """A ComfyUI --base-directory with the pack linked into custom_nodes/ and the standard folders."""
    (base / "custom_nodes").mkdir(parents=True, exist_ok=True)
    link = base / "custom_nodes" / PACK_FOLDER
    if not link.exists():
        os.symlink(REPO, link, target_is_directory=True)
    for sub in ("models/text2video", "models/text_encoders", "models/vae", "models/diffusion_models", "models/loras",
                "output", "input", "temp", "user"):
        (base / sub).mkdir(parents=True, exist_ok=True)
    return base


#: ComfyUI's top-level modules and packages that the harness and the pack import by name.
_COMFY_TOP_LEVEL = ("comfy", "comfy_execution", "comfy_extras", "comfy_api", "nodes", "execution", "folder_paths",
                    "utils", "server", "app", "latent_preview", "node_helpers")


def _drop_shadowing_modules(comfy_path: Path) -> None:
    """pytest (importlib mode) imports the pack's root, which has an __init__.py, as a package named after its folder.
    A checkout in a folder called like one of ComfyUI's modules (`comfy`, `nodes`, `utils`, ...) then shadows
    ComfyUI's own: forget such modules, so the names resolve to the checkout at comfy_path. inspect's module-file
    cache forgets them too: ComfyUI's `comfy` is a namespace package (__file__ None), and inspect.getmodule (torch
    calls it when ComfyUI registers custom ops) fails on a cached name whose file changed to None."""
    cache = getattr(inspect, "_filesbymodname", {})
    for top in _COMFY_TOP_LEVEL:
        module = sys.modules.get(top)
        if module is None:
            continue
        where = [getattr(module, "__file__", None) or "", *getattr(module, "__path__", [])]
        if any(w and Path(w).resolve().is_relative_to(comfy_path) for w in where):
            continue
        for name in [n for n in sys.modules if n == top or n.startswith(top + ".")]:
            del sys.modules[name]
            cache.pop(name, None)


_ACTIVE = None


class ComfyHarness:
    """One per process: ComfyUI's folders, nodes and model manager are process-wide, so a second harness (another
    test module in the same pytest run) is the first one again, with the first one's base directory."""

    def __new__(cls, comfy_path, base_dir):
        return _ACTIVE if _ACTIVE is not None else super().__new__(cls)

    def __init__(self, comfy_path, base_dir):
        global _ACTIVE
        if _ACTIVE is self:
            return
        self.comfy_path = Path(comfy_path).resolve()
        self.base = prepare_base(Path(base_dir))
        _drop_shadowing_modules(self.comfy_path)
        sys.path.insert(0, str(self.comfy_path))
        from comfy.cli_args import args

        args.cpu = True
        args.base_directory = str(self.base)
        if hasattr(args, "disable_api_nodes"):
            args.disable_api_nodes = True
        import utils.extra_config  # noqa: F401  ComfyUI's own utils package, before `nodes` shadows it

        self.log = _LogCapture()
        logging.getLogger().addHandler(self.log)
        logging.getLogger().setLevel(logging.INFO)
        import comfy.model_management  # noqa: F401
        import execution
        import folder_paths
        import nodes

        self.execution, self.nodes, self.folder_paths = execution, nodes, folder_paths
        self.version = _comfy_version(self.comfy_path)
        asyncio.run(nodes.init_extra_nodes(init_custom_nodes=True, init_api_nodes=False))
        self.server = _Server()
        _ACTIVE = self

    def executor(self):
        """A fresh PromptExecutor with the classic cache (everything of one run is kept until the next)."""
        PromptExecutor = self.execution.PromptExecutor
        params = inspect.signature(PromptExecutor.__init__).parameters
        kwargs = {}
        cache_type = getattr(getattr(self.execution, "CacheType", None), "CLASSIC", None)
        if "cache_type" in params and cache_type is not None:
            kwargs["cache_type"] = cache_type
        if "cache_args" in params:  # 0.3.6x had cache_size=None; later ones read cache_args["ram"] on every run
            kwargs["cache_args"] = {"lru": 0, "ram": 0, "ram_inactive": 0}
        return PromptExecutor(self.server, **kwargs)

    @property
    def models(self) -> Path:
        return self.base / "models"

    @property
    def output(self) -> Path:
        return self.base / "output"

    def validate(self, prompt):
        """ComfyUI's validate_prompt: (ok, error, output node ids, node errors)."""
        return _resolve(self.execution.validate_prompt(str(uuid.uuid4()), prompt, None))

    def run(self, prompt):
        """Validate and execute; returns the executor (outputs in .caches.outputs, messages on self.server)."""
        valid = self.validate(prompt)
        assert valid[0], f"prompt failed validation: {valid[1]} {valid[3]}"
        executor = self.executor()
        self.server.messages.clear()
        args = (prompt, str(uuid.uuid4()), {"client_id": None}, valid[2])
        if hasattr(executor, "execute_async"):
            asyncio.run(executor.execute_async(*args))
        else:
            executor.execute(*args)
        return executor

    def output_of(self, executor, node_id: str):
        """The cached output tuple of one node after a run (a list per output slot)."""
        cache = executor.caches.outputs
        entry = cache.get_local(node_id) if hasattr(cache, "get_local") else _resolve(cache.get(node_id))
        if entry is None:
            return None
        return getattr(entry, "outputs", entry)  # CacheEntry(ui, outputs) since ComfyUI 0.3.67, the bare list before


def _resolve(value):
    return asyncio.run(value) if inspect.isawaitable(value) else value


def _comfy_version(comfy_path: Path) -> str:
    """comfyui_version.__version__ of the checkout, read as text (no import)."""
    import re

    try:
        text = (comfy_path / "comfyui_version.py").read_text()
    except OSError:
        return "unknown"
    match = re.search(r"__version__\s*=\s*['\"]([^'\"]+)['\"]", text)
    return match.group(1) if match else "unknown"


def count_live(type_name: str) -> int:
    """How many objects whose class is called `type_name` the garbage collector still tracks (after a collection)."""
    gc.collect()
    return sum(1 for obj in gc.get_objects() if type(obj).__name__ == type_name)


def ui_to_api(workflow: dict, node_class_mappings: dict, overrides: dict | None = None) -> dict:
    """ComfyUI UI-format workflow -> API format, using the nodes' INPUT_TYPES for the widget order.
    `overrides` maps node type -> {input: value} (e.g. smaller sizes for a fast test run)."""
    primitives = {"INT", "FLOAT", "STRING", "BOOLEAN"}
    links = {l[0]: l for l in workflow["links"]}
    prompt = {}
    for node in workflow["nodes"]:
        cls = node_class_mappings[node["type"]]
        spec = cls.INPUT_TYPES()
        widget_names = []
        for section in ("required", "optional"):
            for name, value in spec.get(section, {}).items():
                kind = value[0]
                if isinstance(kind, list) or kind in primitives or kind == "COMBO":
                    widget_names.append(name)
                    opts = value[1] if len(value) > 1 and isinstance(value[1], dict) else {}
                    if opts.get("control_after_generate") or name in ("seed", "noise_seed"):
                        widget_names.append(None)  # the frontend's control_after_generate value
        inputs = {}
        for name, value in zip(widget_names, node.get("widgets_values", [])):
            if name is not None:
                inputs[name] = value
        for inp in node.get("inputs", []):
            if inp.get("link") is not None:
                _, src, slot, _, _, _ = links[inp["link"]]
                inputs[inp["name"]] = [str(src), slot]
        inputs.update((overrides or {}).get(node["type"], {}))
        prompt[str(node["id"])] = {"class_type": node["type"], "inputs": inputs}
    return prompt


def call_node(harness, node_id: str, **inputs) -> tuple:
    """Run one node as ComfyUI does (V1: its FUNCTION method; V3: the `execute` classmethod) and return its outputs
    tuple. Inputs not given take the node's defaults, so a call also fits versions that added inputs."""
    cls = harness.nodes.NODE_CLASS_MAPPINGS[node_id]
    if hasattr(cls, "define_schema"):  # V3 node
        for spec in cls.define_schema().inputs:
            if spec.id not in inputs and getattr(spec, "default", None) is not None:
                inputs[spec.id] = spec.default
        out = cls.execute(**inputs)
        return tuple(out.args) if hasattr(out, "args") else tuple(out)
    for section in ("required", "optional"):
        for name, spec in cls.INPUT_TYPES().get(section, {}).items():
            if name not in inputs and len(spec) > 1 and isinstance(spec[1], dict) and "default" in spec[1]:
                inputs[name] = spec[1]["default"]
    return tuple(getattr(cls(), cls.FUNCTION)(**inputs))


def pack_module(harness, module: str):
    """A module of the pack as ComfyUI loaded it (custom_nodes/<pack folder>), e.g. "samplers.sampling"."""
    import importlib

    loader = harness.nodes.NODE_CLASS_MAPPINGS["CinematicUNet3DLoader"]
    root = loader.__module__.rsplit(".nodes", 1)[0]
    return importlib.import_module(f"{root}.{module}")


def random_cond(seed: int, rows: int = 1, width: int = 1024):
    """A CONDITIONING of random rows, as a text encode node would hand core samplers."""
    import torch

    gen = torch.Generator().manual_seed(seed)
    return [[torch.randn(rows, 77, width, generator=gen), {"pooled_output": torch.zeros(rows, width)}]]


def rel_l2(a, b) -> float:
    """Relative L2 difference of a from b."""
    return ((a.float() - b.float()).norm() / b.float().norm()).item()

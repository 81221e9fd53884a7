"""Runs ComfyUI in-process (no server) with this pack installed as a user installs it, for the integration suite.

    comfy = ComfyHarness(comfy_path, base_dir)   # base_dir gets custom_nodes/<pack>, models/, output/
    outputs = comfy.run(api_prompt)              # validate + execute through ComfyUI's real PromptExecutor

ComfyUI stays where it is (COMFYUI_PATH); only `--base-directory` points into a temporary folder, and the pack is
linked into its custom_nodes/ under a folder name, exactly as a clone into custom_nodes/ would be.
"""

from __future__ import annotations

import asyncio
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
    tiny_checkpoint.write_original_folder(t2v / "text-to-video-ms-1.7b", seed=1)
    tiny_checkpoint.write_diffusers_folder(t2v / "zeroscope_v2_576w", seed=2)
    shutil.copytree(t2v / "text-to-video-ms-1.7b", t2v / "zeroscope_v2_XL")
    write_sd2_clip(models / "text_encoders" / "open_clip_vit_h14.safetensors")


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
    for sub in ("models/text2video", "models/text_encoders", "models/vae", "models/diffusion_models", "output",
                "input", "temp", "user"):
        (base / sub).mkdir(parents=True, exist_ok=True)
    return base


class ComfyHarness:
    def __init__(self, comfy_path, base_dir):
        self.comfy_path = Path(comfy_path).resolve()
        self.base = prepare_base(Path(base_dir))
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
        asyncio.run(nodes.init_extra_nodes(init_custom_nodes=True, init_api_nodes=False))
        self.server = _Server()

    @property
    def models(self) -> Path:
        return self.base / "models"

    @property
    def output(self) -> Path:
        return self.base / "output"

    def validate(self, prompt):
        return asyncio.run(self.execution.validate_prompt(str(uuid.uuid4()), prompt, None))

    def run(self, prompt):
        """Validate and execute; returns the executor (outputs in .caches.outputs, messages on self.server)."""
        valid = self.validate(prompt)
        assert valid[0], f"prompt failed validation: {valid[1]} {valid[3]}"
        executor = self.execution.PromptExecutor(self.server)
        self.server.messages.clear()
        executor.execute(prompt, str(uuid.uuid4()), {"client_id": None}, valid[2])
        return executor

    def output_of(self, executor, node_id: str):
        """The cached output tuple of one node after a run."""
        entry = executor.caches.outputs.get(node_id)
        if entry is None:
            return None
        return getattr(entry, "outputs", entry)


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

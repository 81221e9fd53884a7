"""Example workflows: every node type and input exists (the pack's or a named current core node), every link joins
matching types, widget values fit; and the web extensions parse."""

import json
import shutil
import subprocess
from pathlib import Path

import pytest

from cinematic_testing.comfy_core_nodes import CORE_NODES

ROOT = Path(__file__).resolve().parents[1]
WORKFLOWS = sorted((ROOT / "example_workflows").glob("*.json"))
PRIMITIVES = {"INT", "FLOAT", "STRING", "BOOLEAN"}


def _spec(pack, node_type):
    """(link inputs {name: type}, widgets, outputs, combos {widget index: choices}, optional link input names)"""
    if node_type in pack.NODE_CLASS_MAPPINGS:
        cls = pack.NODE_CLASS_MAPPINGS[node_type]
        inputs, widgets, combos, optional = {}, [], {}, set()
        for section in ("required", "optional"):
            for name, value in cls.INPUT_TYPES().get(section, {}).items():
                kind = value[0]
                if isinstance(kind, list) or kind in PRIMITIVES:
                    widgets.append(name)
                    if isinstance(kind, list):
                        combos[len(widgets) - 1] = kind
                    if len(value) > 1 and isinstance(value[1], dict) and value[1].get("control_after_generate"):
                        widgets.append("control_after_generate")
                else:
                    inputs[name] = kind
                    if section == "optional":
                        optional.add(name)
        return inputs, widgets, list(cls.RETURN_TYPES), combos, optional
    assert node_type in CORE_NODES, f"{node_type} is neither a Cinematic node nor in the named core list"
    core = CORE_NODES[node_type]
    return dict(core["inputs"]), list(core["widgets"]), list(core["outputs"]), {}, set()


def test_there_are_the_promised_workflows():
    names = {p.stem for p in WORKFLOWS}
    assert {"text_to_video", "zeroscope_upscale", "core_nodes_mix", "lora_freeu_ksampler", "turbo_4_steps",
            "motion_lora", "train_motion_lora", "image_to_video", "extend_video", "loop", "demo_model"} <= names
    for p in WORKFLOWS:
        assert p.with_suffix(".jpg").is_file(), f"{p.name} has no thumbnail"


@pytest.mark.parametrize("path", WORKFLOWS, ids=lambda p: p.stem)
def test_workflow_is_consistent(pack, path):
    wf = json.loads(path.read_text())
    nodes = {n["id"]: n for n in wf["nodes"]}
    specs = {nid: _spec(pack, n["type"]) for nid, n in nodes.items()}
    for nid, node in nodes.items():
        inputs, widgets, outputs, combos, _ = specs[nid]
        assert [i["name"] for i in node["inputs"]] == list(inputs), node["type"]
        assert len(node["widgets_values"]) == len(widgets), node["type"]
        for index, choices in combos.items():
            if node["type"].endswith("Loader") and widgets[index].endswith("_name"):
                continue  # model names depend on what the user installed
            assert node["widgets_values"][index] in choices, (node["type"], widgets[index])
        assert [o["type"] for o in node["outputs"]] == outputs, node["type"]
    for link_id, src, src_slot, dst, dst_slot, ltype in wf["links"]:
        assert specs[src][2][src_slot] == ltype, f"link {link_id}: output is {specs[src][2][src_slot]}, not {ltype}"
        dst_inputs = nodes[dst]["inputs"]
        assert dst_inputs[dst_slot]["type"] == ltype and dst_inputs[dst_slot]["link"] == link_id
        assert link_id in nodes[src]["outputs"][src_slot]["links"]
    # every required link input is connected
    for nid, node in nodes.items():
        for inp in node["inputs"]:
            if inp["name"] not in specs[nid][4]:
                assert inp["link"] is not None, f"{node['type']}.{inp['name']} is not connected"


def test_turbo_workflow_has_t2v_turbo_settings():
    """4 steps of the lcm sampler on T2V-Turbo's timesteps, cfg = the guidance scale 7.5, after the LoRA loader."""
    wf = json.loads((ROOT / "example_workflows" / "turbo_4_steps.json").read_text())
    sampler = next(n for n in wf["nodes"] if n["type"] == "CinematicSampler")
    assert sampler["widgets_values"][2:6] == [4, 7.5, "lcm", "t2v_turbo"]
    lora = next(n for n in wf["nodes"] if n["type"] == "CinematicLoraLoader")
    assert lora["widgets_values"][0].endswith("unet_lora.pt")


def test_text_to_video_has_the_original_defaults():
    wf = json.loads((ROOT / "example_workflows" / "text_to_video.json").read_text())
    sampler = next(n for n in wf["nodes"] if n["type"] == "CinematicSampler")
    assert sampler["widgets_values"][:7] == [0, "fixed", 50, 9.0, "ddim", "modelscope", 1.0]
    latent = next(n for n in wf["nodes"] if n["type"] == "CinematicEmptyVideoLatent")
    assert latent["widgets_values"] == [256, 256, 16, 1]


def test_demo_workflow_uses_the_builtin_entry_at_its_native_size(pack, models_dir):
    from cinematic.model_loaders import builtin_demo

    wf = json.loads((ROOT / "example_workflows" / "demo_model.json").read_text())
    loader = next(n for n in wf["nodes"] if n["type"] == "CinematicCheckpointLoader")
    names = pack.NODE_CLASS_MAPPINGS["CinematicCheckpointLoader"].INPUT_TYPES()["required"]["model_name"][0]
    assert loader["widgets_values"][0] == builtin_demo.NAME and names == [builtin_demo.NAME]  # no models installed
    latent = next(n for n in wf["nodes"] if n["type"] == "CinematicEmptyVideoLatent")
    assert latent["widgets_values"][:3] == list(builtin_demo.native_size())


@pytest.mark.skipif(shutil.which("node") is None, reason="node is not installed")
@pytest.mark.parametrize("script", sorted((ROOT / "web" / "js").glob("*.js")), ids=lambda p: p.name)
def test_web_extensions_parse(pack, script, tmp_path):
    # `node --check` parses ES modules when the file ends in .mjs
    copy = tmp_path / (script.stem + ".mjs")
    copy.write_text(script.read_text())
    proc = subprocess.run(["node", "--check", str(copy)], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    text = script.read_text()
    assert 'from "../../../scripts/app.js"' in text
    for node_id in [w for w in text.split('"') if w.startswith("Cinematic") and not w.startswith("Cinematic.")]:
        assert node_id in pack.NODE_CLASS_MAPPINGS, node_id


def test_long_video_runs_64_frames_in_windows_with_a_prompt_schedule(pack):
    wf = json.loads((ROOT / "example_workflows" / "long_video.json").read_text())
    by_type = {n["type"]: n for n in wf["nodes"]}
    widgets = {t: dict(zip(_spec(pack, t)[1], by_type[t]["widgets_values"])) for t in by_type}
    assert widgets["CinematicEmptyVideoLatent"]["frames"] == 64
    assert (widgets["CinematicEmptyVideoLatent"]["width"], widgets["CinematicEmptyVideoLatent"]["height"]) == (256, 256)
    assert widgets["CinematicPromptSchedule"]["frames"] == 64
    assert widgets["CinematicContextOptions"]["context_length"] == 16
    sampler = by_type["CinematicSampler"]
    feeds = {inp["name"]: inp["link"] for inp in sampler["inputs"]}
    links = {l[0]: l for l in wf["links"]}
    assert links[feeds["context_options"]][1] == by_type["CinematicContextOptions"]["id"]
    assert links[feeds["positive"]][1] == by_type["CinematicPromptSchedule"]["id"]
    # the schedule's keyframes parse and lie inside the clip
    from cinematic.samplers.prompt_schedule import parse_schedule

    keyframes = parse_schedule(widgets["CinematicPromptSchedule"]["text"])
    assert len(keyframes) >= 2 and all(f < 64 for f, _ in keyframes)

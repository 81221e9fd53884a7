"""Rewrite a text-to-video LoRA (stable_lora, diffusers/PEFT incl. MCM folders, kohya, list-format .pt from
MotionDirector / T2V-Turbo) in ComfyUI's own naming of this model's keys, so core `LoraLoaderModelOnly` after
`UNet3D to MODEL` applies it:

    python scripts/convert_lora.py my_lora.safetensors my_lora.comfy.safetensors [--unet UNET_FILE] [--dtype fp16]

Layers whose delta is a plain low-rank product become `diffusion_model.<key>.lora_up.weight` / `lora_down.weight` /
`.alpha`; stable_lora's temporal Conv3d layout (an average over its kernel-split axis, which core cannot express) is
written as the full delta, `diffusion_model.<key>.diff`. Text-encoder tensors are left out and reported. The names
are mapped onto the full-size text-to-video-ms-1.7b / zeroscope architecture, or onto `--unet` (any UNet3D file).
Inside Cinematic's own nodes no conversion is needed: `Load Text-to-Video LoRA` reads every format directly.
A T2V-Turbo LoRA also patches a guidance embedding (`time_cond_proj`) that a plain UNet3D lacks: core's loader cannot
create a layer and skips that key, so for T2V-Turbo use `Load Text-to-Video LoRA` (it creates the layer) before
`UNet3D to MODEL`.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from pack_loader import load_pack


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("source", type=Path, help="the LoRA file (.safetensors, .pt, .pth) or PEFT folder")
    parser.add_argument("output", type=Path, help="the .safetensors file to write")
    parser.add_argument("--unet", type=Path, help="a UNet3D file or folder whose architecture the LoRA is for "
                                                  "(default: the full-size text-to-video-ms-1.7b layout)")
    parser.add_argument("--dtype", choices=["fp32", "fp16", "bf16"], default="fp16", help="dtype of the tensors")
    args = parser.parse_args(argv)
    if args.output.suffix != ".safetensors":
        parser.error("the output must end in .safetensors")
    if not args.source.exists():
        parser.error(f"{args.source} does not exist")
    load_pack()
    import torch
    from safetensors.torch import save_file

    from cinematic.model_loaders.lora import read_lora
    from cinematic.model_loaders.safe_load import ModelFileError
    from cinematic.model_loaders.unet3d import UNet3D, UNet3DConfig
    from cinematic.model_loaders.unet_loader import load_unet

    dtype = {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}[args.dtype]
    try:
        if args.unet is not None:
            model = load_unet(args.unet, "fp32")
        else:
            with torch.device("meta"):
                model = UNet3D(UNet3DConfig())
        lora = read_lora(args.source, model)
    except ModelFileError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    shapes = {k: v.shape for k, v in model.state_dict().items()}
    out = {}
    for key, delta in lora.patches.items():
        module = "diffusion_model." + key[: -len(".weight")] if key.endswith(".weight") else None
        if delta.layout == "reshape" and module is not None:
            up, down = delta.up.flatten(1).float(), delta.down.flatten(1).float()
            out[f"{module}.lora_up.weight"] = up.to(dtype).contiguous()
            out[f"{module}.lora_down.weight"] = down.to(dtype).contiguous()
            out[f"{module}.alpha"] = torch.tensor(delta.scale * down.shape[0], dtype=torch.float32)
        else:  # a full delta (core: weight += strength * diff)
            name = module if module is not None else "diffusion_model." + key[: -len(".bias")]
            suffix = ".diff" if key.endswith(".weight") else ".diff_b"
            out[name + suffix] = delta.delta(shapes[key]).to(dtype).contiguous()
    args.output.parent.mkdir(parents=True, exist_ok=True)
    tmp = args.output.with_name(args.output.name + ".partial")
    save_file(out, str(tmp), metadata={"source": args.source.name, "source_format": lora.format})
    tmp.replace(args.output)
    print(f"wrote {args.output}: {len(lora.patches)} layers from a {lora.format} LoRA "
          f"({sum(k.endswith('.diff') for k in out)} as full deltas)")
    if lora.text_encoder_keys:
        print(f"left out {len(lora.text_encoder_keys)} text-encoder tensors (e.g. {lora.text_encoder_keys[0]}): "
              "core's LoraLoaderModelOnly patches the model only")
    return 0


if __name__ == "__main__":
    sys.exit(main())

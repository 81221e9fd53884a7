"""Write one .safetensors holding the UNet3D, the text encoder and the VAE (see model_loaders/checkpoint.py for the
key prefixes) from a model folder in the original ModelScope layout or the diffusers layout.

    python scripts/convert_checkpoint.py models/text2video/text-to-video-ms-1.7b t2v-ms-1.7b.fp16.safetensors --dtype fp16

The tensors are read through the pack's safe loaders (no pickle code runs) and written with safetensors.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from pack_loader import load_pack


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("source", type=Path, help="model folder (original or diffusers layout)")
    parser.add_argument("output", type=Path, help="the .safetensors file to write")
    parser.add_argument("--dtype", choices=["fp32", "fp16", "bf16"], default="fp16")
    args = parser.parse_args(argv)
    load_pack()
    import torch
    from safetensors.torch import save_file

    from cinematic.model_loaders.checkpoint import SINGLE_FILE_FORMAT, load_checkpoint, single_file_state_dict
    from cinematic.model_loaders.safe_load import ModelFileError

    dtype = {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}[args.dtype]
    if args.output.suffix != ".safetensors":
        print("error: the output must end in .safetensors", file=sys.stderr)
        return 2
    if not args.source.is_dir():
        print(f"error: {args.source} is not a model folder", file=sys.stderr)
        return 2
    try:
        unet, text, vae = load_checkpoint(args.source, "fp32")
    except ModelFileError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    sd = single_file_state_dict(unet, text, vae, dtype)
    args.output.parent.mkdir(parents=True, exist_ok=True)
    tmp = args.output.with_name(args.output.name + ".partial")
    save_file(sd, str(tmp), metadata={"cinematic_format": SINGLE_FILE_FORMAT, "dtype": args.dtype,
                                      "source": args.source.name})
    tmp.replace(args.output)
    print(f"wrote {args.output} ({len(sd)} tensors, {args.dtype})")
    return 0


if __name__ == "__main__":
    sys.exit(main())

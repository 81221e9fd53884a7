"""Wall time of one whole clip, as a user waits for it: text encode (prompt and negative) + 50 sampling steps with CFG
+ VAE decode, through the nodes.

    python benchmarks/clip_wall_time.py                        # the built-in tiny model on the CPU, 16 frames 256x256
    python benchmarks/clip_wall_time.py --full --device cuda   # full-size random weights (text-to-video-ms-1.7b shape)

Prints each stage's seconds and the total (after one warm-up clip of 2 steps). `--full` builds the real architecture
with random weights (UNet3D 1.41 B, OpenCLIP ViT-H/14 text tower, SD VAE): needs ~6 GB in fp16 on a GPU.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from unet_forward import DTYPES, load_pack  # noqa: E402


def full_size(dtype, device):
    from transformers import CLIPTextConfig, CLIPTextModel

    from cinematic.model_loaders.ops import skip_init_ops
    from cinematic.model_loaders.text_encoder import EOT, SOT, TextEncoder, Tokenizer
    from cinematic.model_loaders.unet3d import UNet3D, UNet3DConfig
    from cinematic.model_loaders.vae import VAE, AutoencoderKL, VAEConfig

    gen = torch.Generator().manual_seed(0)

    def randomise(module):
        module.load_state_dict({k: (torch.randn(v.shape, generator=gen) * 0.02
                                    + (1.0 if v.ndim == 1 and k.endswith("weight") else 0)).to(dtype)
                                for k, v in module.state_dict().items()}, assign=True)
        return module.eval().requires_grad_(False).to(device)

    with torch.device("meta"):
        unet = UNet3D(UNet3DConfig(), operations=skip_init_ops)
        vae_model = AutoencoderKL(VAEConfig(), operations=skip_init_ops)
    unet = randomise(unet).match_weight_layout()
    vae = VAE(randomise(vae_model))
    config = CLIPTextConfig(vocab_size=49408, hidden_size=1024, intermediate_size=4096, num_hidden_layers=23,
                            num_attention_heads=16, max_position_embeddings=77, hidden_act="gelu",
                            bos_token_id=SOT, eos_token_id=EOT, pad_token_id=0)
    text = TextEncoder(CLIPTextModel(config).to(dtype).to(device).eval().requires_grad_(False), Tokenizer())
    return unet, text, vae


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--full", action="store_true", help="full-size random weights instead of the built-in tiny model")
    p.add_argument("--dtype", default=None, choices=sorted(DTYPES), help="full size: default fp16 on CUDA, fp32 on CPU")
    p.add_argument("--frames", type=int, default=16)
    p.add_argument("--size", type=int, default=256)
    p.add_argument("--steps", type=int, default=50)
    args = p.parse_args()
    os.environ.setdefault("CINEMATIC_DEVICE", args.device)
    pack = load_pack()
    nodes = pack.NODE_CLASS_MAPPINGS
    device = torch.device(args.device)
    if args.full:
        dtype = DTYPES[args.dtype or ("fp16" if device.type == "cuda" else "fp32")]
        unet, text, vae = full_size(dtype, device)
    else:
        from cinematic.model_loaders import builtin_tiny

        unet, text, vae = builtin_tiny.build()
    print(f"device={device} model={'full-size random' if args.full else 'built-in tiny'} "
          f"{args.frames} frames {args.size}x{args.size}, {args.steps} steps, cfg 9")

    def clip(steps):
        times = {}
        start = time.perf_counter()
        (positive,) = nodes["CinematicTextEncode"]().encode(text, "a panda playing guitar on times square")
        (negative,) = nodes["CinematicTextEncode"]().encode(text, "")
        times["text encode"] = time.perf_counter() - start
        (latent,) = nodes["CinematicEmptyVideoLatent"]().generate(args.size, args.size, args.frames, 1)
        start = time.perf_counter()
        (latent,) = nodes["CinematicSampler"]().sample(unet, positive, negative, latent, 0, steps, 9.0, "ddim",
                                                       "modelscope", 1.0)
        times["sample"] = time.perf_counter() - start
        start = time.perf_counter()
        (images,) = nodes["CinematicVAEDecode"]().decode(vae, latent, 8)
        times["decode"] = time.perf_counter() - start
        return times

    clip(2)  # warm-up
    times = clip(args.steps)
    for stage, seconds in times.items():
        extra = f" ({seconds / args.steps * 1000:.0f} ms/step)" if stage == "sample" else ""
        print(f"{stage:>12}: {seconds:8.2f} s{extra}")
    print(f"{'total':>12}: {sum(times.values()):8.2f} s")


if __name__ == "__main__":
    main()

"""Peak memory and time of VAE decoding vs frames_per_batch and frame count (full-size SD VAE, random weights).

    python benchmarks/vae_decode.py                       # 64x64 frames (8x8 latents) on the CPU
    python benchmarks/vae_decode.py --latent 32 --device cuda

Decodes through the CinematicVAEDecode node. Peak memory is measured above the level before the decode (CPU: Linux
VmHWM reset through /proc/self/clear_refs; CUDA: max_memory_allocated), so it shows what decoding itself needs:
it should grow with frames_per_batch and stay flat in the frame count.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from unet_forward import Memory, load_pack  # noqa: E402  (load_pack: scripts/pack_loader.py)


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--latent", type=int, default=8, help="latent height/width (frames are 8x that)")
    p.add_argument("--runs", default="64:1,64:4,64:16,16:4,64:64", help="frames:frames_per_batch,...")
    args = p.parse_args()
    pack = load_pack()
    from cinematic.model_loaders.ops import skip_init_ops
    from cinematic.model_loaders.vae import VAE, AutoencoderKL, VAEConfig

    device = torch.device(args.device)
    with torch.device("meta"):
        model = AutoencoderKL(VAEConfig(), operations=skip_init_ops)  # the real SD VAE: 83.65 M parameters
    gen = torch.Generator().manual_seed(0)
    model.load_state_dict({k: torch.randn(v.shape, generator=gen) * 0.02 + (1.0 if k.endswith("norm.weight") else 0)
                           for k, v in model.state_dict().items()}, assign=True)
    vae = VAE(model.eval().requires_grad_(False).to(device))
    node = pack.NODE_CLASS_MAPPINGS["CinematicVAEDecode"]()
    memory = Memory(device)
    import os

    os.environ.setdefault("CINEMATIC_DEVICE", str(device))
    print(f"device={device} threads={torch.get_num_threads()} frames {args.latent * 8}x{args.latent * 8}")
    print(f"{'frames':>6} {'per batch':>9} {'seconds':>8} {'peak above start':>17}")
    for run in args.runs.split(","):
        frames, per_batch = map(int, run.split(":"))
        latent = {"samples": torch.randn(1, 4, frames, args.latent, args.latent, generator=gen)}
        memory.start()
        start = time.perf_counter()
        (images,) = node.decode(vae, latent, per_batch)
        elapsed = time.perf_counter() - start
        peak, _ = memory.peak()
        print(f"{frames:>6} {per_batch:>9} {elapsed:>8.2f} {peak / 2**20:>14.0f} MB  (output itself: "
              f"{images.numel() * 4 / 2**20:.0f} MB)", flush=True)
        del images


if __name__ == "__main__":
    main()

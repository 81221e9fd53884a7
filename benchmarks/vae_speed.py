"""VAE decode: ours vs diffusers' AutoencoderKL on the same full-size random SD VAE weights, and ours per
frames_per_batch (the decode node's chunking).

    python benchmarks/vae_speed.py                             # 8 frames of 128x128 on the CPU, fp32
    python benchmarks/vae_speed.py --frames 16 --latent 32 --device cuda --dtype fp16

Runs are interleaved (ours, diffusers, ours, ...) after a warm-up; medians and the per-pair ratio ours/diffusers.
diffusers decodes the whole clip in one batch, as its pipeline does; ours decodes `--per-batch` frames at a time
(the node's default 4). Then a sweep of frames_per_batch for ours alone: time and peak memory above the start.
Needs diffusers (test-only dependency).
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from unet_forward import DTYPES, Memory, load_pack  # noqa: E402


def build(dtype, device):
    from diffusers import AutoencoderKL as DiffusersVAE
    from diffusers.loaders.single_file_utils import convert_ldm_vae_checkpoint

    from cinematic.model_loaders.ops import skip_init_ops
    from cinematic.model_loaders.vae import VAE, AutoencoderKL, VAEConfig

    with torch.device("meta"):
        model = AutoencoderKL(VAEConfig(), operations=skip_init_ops)  # the SD VAE: 83.65 M parameters
    gen = torch.Generator().manual_seed(0)
    sd = {k: torch.randn(v.shape, generator=gen) * 0.02 + (1.0 if k.endswith("norm.weight") else 0)
          for k, v in model.state_dict().items()}
    model.load_state_dict(sd, assign=True)
    ours = VAE(model.eval().requires_grad_(False).to(device, dtype))
    theirs = DiffusersVAE(block_out_channels=(128, 256, 512, 512), down_block_types=("DownEncoderBlock2D",) * 4,
                          up_block_types=("UpDecoderBlock2D",) * 4, layers_per_block=2, latent_channels=4,
                          sample_size=256).eval()
    theirs.load_state_dict(convert_ldm_vae_checkpoint(sd, dict(theirs.config)))
    return ours, theirs.requires_grad_(False).to(device, dtype)


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--dtype", default="fp32", choices=sorted(DTYPES))
    p.add_argument("--frames", type=int, default=8)
    p.add_argument("--latent", type=int, default=16, help="latent height/width (frames are 8x that)")
    p.add_argument("--per-batch", type=int, default=4, help="our frames_per_batch in the comparison")
    p.add_argument("--repeats", type=int, default=2)
    p.add_argument("--sweep", default="1,2,4,8,16", help="frames_per_batch values for ours alone ('' to skip)")
    args = p.parse_args()
    load_pack()
    device, dtype = torch.device(args.device), DTYPES[args.dtype]
    ours, theirs = build(dtype, device)
    memory = Memory(device)
    z = torch.randn(args.frames, 4, args.latent, args.latent, generator=torch.Generator().manual_seed(1))

    def run_ours(per_batch):
        return torch.cat([ours.decode(part) for part in z.split(per_batch)])

    def run_theirs():
        with torch.inference_mode():
            return theirs.decode(z.to(device, dtype)).sample.float()

    with torch.inference_mode():
        a, b = run_ours(args.per_batch), run_theirs()
    rel = ((a.cpu() - b.cpu()).abs().max() / b.abs().max()).item()
    print(f"device={device} dtype={args.dtype} threads={torch.get_num_threads()} {args.frames} frames of "
          f"{args.latent * 8}x{args.latent * 8}; ours vs diffusers max relative difference {rel:.1e}")
    times = {"ours": [], "diffusers": []}
    for _ in range(args.repeats):
        for name, call in (("ours", lambda: run_ours(args.per_batch)), ("diffusers", run_theirs)):
            start = time.perf_counter()
            out = call()
            if device.type == "cuda":
                torch.cuda.synchronize()
            times[name].append(time.perf_counter() - start)
            del out
    ratios = [x / y for x, y in zip(times["ours"], times["diffusers"])]
    print(f"decode: ours {statistics.median(times['ours']):.2f} s (frames_per_batch {args.per_batch}), diffusers "
          f"{statistics.median(times['diffusers']):.2f} s (whole clip), ratio {statistics.median(ratios):.2f} "
          f"(speed-up {1 / statistics.median(ratios):.2f}x)", flush=True)
    if args.sweep:
        print(f"{'per batch':>9} {'seconds':>8} {'s/frame':>8} {'peak above start':>17}")
        for per_batch in (int(v) for v in args.sweep.split(",")):
            memory.start()
            start = time.perf_counter()
            out = run_ours(per_batch)
            elapsed = time.perf_counter() - start
            peak, _ = memory.peak()
            del out
            print(f"{per_batch:>9} {elapsed:>8.2f} {elapsed / args.frames:>8.3f} {peak / 2**20:>14.0f} MB", flush=True)


if __name__ == "__main__":
    main()

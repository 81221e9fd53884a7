"""The whole speed table of issue 11 in one command: each benchmark in its own process (clean memory), one after
the other, on this machine's device.

    python benchmarks/all.py                 # CUDA if present, else the CPU
    python benchmarks/all.py --device cpu    # the CPU table: takes about 30 minutes on 2 cores
    python benchmarks/all.py --dry-run       # print the commands only

CPU: UNet3D forward, ours vs diffusers (interleaved A B A B, warm-up discarded, medians, per-pair ratio), bf16 and
fp32 at [2,4,8,32,32] and [2,4,16,32,32]; VAE decode of 16 frames of 256x256 (fp32); one whole 50-step clip with the
built-in tiny model (text encode + sample + decode).
CUDA: the UNet3D forward in fp16 and bf16 at 16x256x256 and 24x576x320 (zeroscope) with CFG batch 2, in ms/step, peak
VRAM and the multiple of the FLOP bound, plus the compiled path, and 64 frames at 256x256 for peak VRAM; VAE decode of
16 frames in fp16 with a frames_per_batch sweep; a whole 50-step clip with full-size random weights (fp16).
Needs diffusers (test-only dependency: `bash scripts/setup.sh --test`).
"""

from __future__ import annotations

import argparse
import shlex
import subprocess
import sys
import time
from pathlib import Path

import torch

HERE = Path(__file__).resolve().parent


def plan(device: str) -> list[tuple[str, list[str]]]:
    if device == "cuda":
        return [
            ("UNet3D forward, CUDA", ["unet_forward.py", "--device", "cuda", "--dtypes", "fp16", "bf16",
                                      "--latents", "16x32x32", "24x40x72", "--repeats", "10", "--compile"]),
            ("UNet3D forward, 64 frames 256x256 (peak VRAM)",
             ["unet_forward.py", "--device", "cuda", "--dtypes", "fp16", "--latents", "64x32x32", "--repeats", "3"]),
            ("VAE decode, 16 frames 256x256, CUDA fp16",
             ["vae_speed.py", "--device", "cuda", "--dtype", "fp16", "--frames", "16", "--latent", "32",
              "--repeats", "5", "--sweep", "1,4,8,16"]),
            ("Whole clip, full-size random weights, CUDA fp16",
             ["clip_wall_time.py", "--device", "cuda", "--full"]),
        ]
    return [
        ("UNet3D forward, CPU", ["unet_forward.py", "--device", "cpu", "--dtypes", "bf16", "fp32",
                                 "--frames", "8", "16", "--repeats", "2"]),
        ("VAE decode, 16 frames 256x256, CPU fp32",
         ["vae_speed.py", "--device", "cpu", "--dtype", "fp32", "--frames", "16", "--latent", "32",
          "--repeats", "2", "--sweep", ""]),
        ("Whole clip, built-in tiny model, CPU", ["clip_wall_time.py", "--device", "cpu"]),
    ]


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--device", choices=["cpu", "cuda"], default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--dry-run", action="store_true", help="print the commands without running them")
    args = p.parse_args()
    failed = []
    for title, command in plan(args.device):
        argv = [sys.executable, str(HERE / command[0]), *command[1:]]
        print(f"\n== {title}\n$ python benchmarks/{shlex.join(command)}", flush=True)
        if args.dry_run:
            continue
        start = time.perf_counter()
        code = subprocess.call(argv)
        print(f"({time.perf_counter() - start:.0f} s{'' if code == 0 else f', exit {code}'})", flush=True)
        if code:
            failed.append(title)
    if failed:
        raise SystemExit(f"failed: {', '.join(failed)}")


if __name__ == "__main__":
    main()

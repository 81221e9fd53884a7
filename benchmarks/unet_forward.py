"""One UNet3D forward: ours vs diffusers' UNet3DConditionModel, same random full-size weights, same inputs.

    python benchmarks/unet_forward.py                      # bf16+fp32 on CPU, [2,4,8,32,32] and [2,4,16,32,32]
    python benchmarks/unet_forward.py --dtypes bf16 --frames 8 --repeats 3
    python benchmarks/unet_forward.py --device cuda --dtypes fp16 bf16

Both models hold the very same weight tensors (diffusers' parameters are pointed at ours), so memory is one copy of
the weights plus each model's activations. Runs are interleaved (A B A B ...) after one warm-up each; the medians
and the per-pair ratio ours/diffusers are printed. Memory: on the CPU, peak RSS during the forward above the RSS
before it (Linux VmHWM, reset through /proc/self/clear_refs); on CUDA, torch.cuda.max_memory_allocated.
Needs diffusers (test-only dependency). Full size in fp32 needs about 6 GB of RAM for the weights.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "scripts"))
from pack_loader import load_pack  # noqa: E402

DTYPES = {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}


def _status(field: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) * 1024
    return 0


class Memory:
    def __init__(self, device):
        self.device = device

    def start(self):
        if self.device.type == "cuda":
            torch.cuda.synchronize()
            torch.cuda.reset_peak_memory_stats()
            self.base = torch.cuda.memory_allocated()
        else:
            try:
                Path("/proc/self/clear_refs").write_text("5")
            except OSError:
                pass
            self.base = _status("VmRSS")

    def peak(self) -> tuple[int, int]:
        """(peak above the start, absolute peak) in bytes."""
        if self.device.type == "cuda":
            torch.cuda.synchronize()
            top = torch.cuda.max_memory_allocated()
        else:
            top = _status("VmHWM")
        return top - self.base, top


def build_models(dtype, device, layout="auto"):
    from diffusers import UNet3DConditionModel

    from cinematic.model_loaders.ops import skip_init_ops
    from cinematic.model_loaders.unet3d import UNet3D, UNet3DConfig
    from cinematic.model_loaders.unet_loader import DiffusersRenamer

    config = UNet3DConfig()  # text-to-video-ms-1.7b
    with torch.device("meta"):
        ours = UNet3D(config, operations=skip_init_ops)
        theirs = UNet3DConditionModel(cross_attention_dim=1024, attention_head_dim=64,
                                      block_out_channels=(320, 640, 1280, 1280))
    gen = torch.Generator().manual_seed(0)
    weights = {}
    for name, p in ours.named_parameters():
        t = torch.randn(p.shape, generator=gen, dtype=torch.float32).mul_(0.02)
        if name.endswith("weight") and p.ndim == 1:
            t.add_(1.0)
        weights[name] = t.to(dtype=dtype, device=device)
    ours.load_state_dict(weights, assign=True)
    rename = DiffusersRenamer(theirs.state_dict().keys())
    shared = {}
    for key, p in theirs.state_dict().items():
        shared[key] = weights[rename(key)].reshape(p.shape)  # a view: the same storage, no copy
    theirs.load_state_dict(shared, assign=True)
    ours.channels_last = {"auto": None, "nhwc": True, "nchw": False}[layout]
    # ours as the loader leaves it (conv weights in the activations' layout; diffusers' keep their own views)
    return ours.eval().requires_grad_(False).match_weight_layout(), theirs.eval().requires_grad_(False)


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--dtypes", nargs="+", default=["bf16", "fp32"], choices=sorted(DTYPES))
    parser.add_argument("--frames", nargs="+", type=int, default=[8, 16])
    parser.add_argument("--size", type=int, default=32, help="latent height and width")
    parser.add_argument("--repeats", type=int, default=2, help="timed runs per model after the warm-up")
    parser.add_argument("--threads", type=int, default=0, help="torch threads on CPU (0: torch's default)")
    parser.add_argument("--layout", choices=["auto", "nhwc", "nchw"], default="auto",
                        help="our activations' layout (auto: channels-last in half precision and on CUDA)")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    load_pack()
    device = torch.device(args.device)
    memory = Memory(device)
    print(f"device={device} threads={torch.get_num_threads()} torch={torch.__version__}")
    print(f"{'dtype':5} {'shape':18} {'ours s':>8} {'diffusers s':>11} {'ratio':>6} "
          f"{'ours peak+':>11} {'diff peak+':>11} {'mem ratio':>9}")
    for dtype_name in args.dtypes:
        dtype = DTYPES[dtype_name]
        ours, theirs = build_models(dtype, device, args.layout)
        for frames in args.frames:
            gen = torch.Generator().manual_seed(1)
            x = torch.randn(2, 4, frames, args.size, args.size, generator=gen).to(device, dtype)
            t = torch.tensor([981, 981], device=device)
            ctx = torch.randn(2, 77, 1024, generator=gen).to(device, dtype)
            calls = {"ours": lambda: ours(x, t, ctx), "diffusers": lambda: theirs(x, t, encoder_hidden_states=ctx).sample}
            times = {k: [] for k in calls}
            peaks = {k: [] for k in calls}
            with torch.inference_mode():
                for run in range(args.repeats + 1):
                    for name, call in calls.items():
                        memory.start()
                        start = time.perf_counter()
                        out = call()
                        if device.type == "cuda":
                            torch.cuda.synchronize()
                        elapsed = time.perf_counter() - start
                        peak, _ = memory.peak()
                        del out
                        if run:  # the first round is the warm-up
                            times[name].append(elapsed)
                            peaks[name].append(peak)
            ratios = [a / b for a, b in zip(times["ours"], times["diffusers"])]
            mo, md = statistics.median(peaks["ours"]), statistics.median(peaks["diffusers"])
            print(f"{dtype_name:5} {str([2, 4, frames, args.size, args.size]):18} "
                  f"{statistics.median(times['ours']):8.2f} {statistics.median(times['diffusers']):11.2f} "
                  f"{statistics.median(ratios):6.2f} {mo / 2**20:9.0f}MB {md / 2**20:9.0f}MB {mo / max(md, 1):9.2f}",
                  flush=True)
        del ours, theirs


if __name__ == "__main__":
    main()

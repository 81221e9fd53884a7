"""One UNet3D forward: ours vs diffusers' UNet3DConditionModel, same random full-size weights, same inputs.

    python benchmarks/unet_forward.py                      # bf16+fp32 on CPU, [2,4,8,32,32] and [2,4,16,32,32]
    python benchmarks/unet_forward.py --dtypes bf16 --frames 8 --repeats 3
    python benchmarks/unet_forward.py --device cuda --dtypes fp16 bf16 --latents 16x32x32 24x40x72 --compile

Both models hold the very same weight tensors (diffusers' parameters are pointed at ours), so memory is one copy of
the weights plus each model's activations. Runs are interleaved (A B A B ...) after one warm-up each; the medians
and the per-pair ratio ours/diffusers are printed. Memory: on the CPU, peak RSS during the forward above the RSS
before it (Linux VmHWM, reset through /proc/self/clear_refs); on CUDA, torch.cuda.max_memory_allocated.
On CUDA (or with --flops) the FLOPs of one forward are counted (torch.utils.flop_counter) and the time is also given
as a multiple of the FLOP bound at --peak-tflops. --compile adds our opt-in compiled path (CINEMATIC_COMPILE's
CompiledForward, backend from CINEMATIC_COMPILE_BACKEND), timed in the same interleaved rounds.
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


def _latents(args) -> list[tuple[int, int, int]]:
    if args.latents:
        try:
            return [tuple(int(v) for v in spec.lower().split("x")) for spec in args.latents]
        except ValueError:
            raise SystemExit("--latents takes FRAMESxHEIGHTxWIDTH in latent pixels, e.g. 16x32x32 (256x256 video)")
    return [(frames, args.size, args.size) for frames in args.frames]


def count_flops(dtype, shape) -> int:
    """FLOPs of one forward of the full-size UNet3D (matmuls, convolutions, attention), counted on the meta device:
    no memory, no time."""
    from torch.utils.flop_counter import FlopCounterMode

    from cinematic.model_loaders.ops import skip_init_ops
    from cinematic.model_loaders.unet3d import UNet3D, UNet3DConfig

    with torch.device("meta"):
        model = UNet3D(UNet3DConfig(), operations=skip_init_ops).to(dtype)
        x = torch.zeros(shape, dtype=dtype)
        t = torch.zeros(shape[0], dtype=torch.long)
        context = torch.zeros(shape[0], 77, 1024, dtype=dtype)
    with FlopCounterMode(display=False) as counter, torch.no_grad():
        model(x, t, context)
    return counter.get_total_flops()


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--dtypes", nargs="+", default=["bf16", "fp32"], choices=sorted(DTYPES))
    parser.add_argument("--frames", nargs="+", type=int, default=[8, 16])
    parser.add_argument("--size", type=int, default=32, help="latent height and width")
    parser.add_argument("--latents", nargs="+", default=None, metavar="FxHxW",
                        help="latent shapes instead of --frames/--size, e.g. 16x32x32 24x40x72 (zeroscope 576x320)")
    parser.add_argument("--batch", type=int, default=2, help="batch (2 = one CFG step: cond and uncond)")
    parser.add_argument("--repeats", type=int, default=2, help="timed runs per model after the warm-up")
    parser.add_argument("--threads", type=int, default=0, help="torch threads on CPU (0: torch's default)")
    parser.add_argument("--layout", choices=["auto", "nhwc", "nchw"], default="auto",
                        help="our activations' layout (auto: channels-last in half precision and on CUDA)")
    parser.add_argument("--compile", action="store_true", help="also time our compiled forward (torch.compile)")
    parser.add_argument("--flops", action="store_true", help="count FLOPs and compare with the bound (CUDA: always)")
    parser.add_argument("--peak-tflops", type=float, default=790.0,
                        help="dense TFLOP/s of the device for the FLOP bound (790: H100 fp16, as in issue 11)")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    load_pack()
    from cinematic.model_loaders.video_unet import compiled_forward

    device = torch.device(args.device)
    flops_wanted = args.flops or device.type == "cuda"
    memory = Memory(device)
    print(f"device={device} threads={torch.get_num_threads()} torch={torch.__version__}"
          + (f" gpu={torch.cuda.get_device_name(device)}" if device.type == "cuda" else ""))
    print("times: medians of interleaved runs; ratio = ours/diffusers per pair (below 1: ours faster); "
          "peak+ = activation peak above the weights")
    header = (f"{'dtype':5} {'batch x shape':20} {'ours s':>8} {'diffusers s':>11} {'ratio':>6} {'speed-up':>8} "
              f"{'ours peak+':>11} {'diff peak+':>11} {'mem ratio':>9}")
    if args.compile:
        header += f" {'compiled s':>10} {'vs eager':>8}"
    if flops_wanted:
        header += f" {'TFLOP':>7} {'bound ms':>8} {'x bound':>7}"
    print(header)
    for dtype_name in args.dtypes:
        dtype = DTYPES[dtype_name]
        ours, theirs = build_models(dtype, device, args.layout)
        compiled = compiled_forward(ours) if args.compile else None
        for frames, height, width in _latents(args):
            gen = torch.Generator().manual_seed(1)
            shape = [args.batch, 4, frames, height, width]
            x = torch.randn(*shape, generator=gen).to(device, dtype)
            t = torch.full((args.batch,), 981, device=device)
            ctx = torch.randn(args.batch, 77, 1024, generator=gen).to(device, dtype)
            calls = {"ours": lambda: ours(x, t, ctx),
                     "diffusers": lambda: theirs(x, t, encoder_hidden_states=ctx).sample}
            if compiled is not None:
                calls["compiled"] = lambda: compiled(x, t, ctx)
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
                        if run:  # the first round is the warm-up (and the compilation)
                            times[name].append(elapsed)
                            peaks[name].append(peak)
            ratios = [a / b for a, b in zip(times["ours"], times["diffusers"])]
            ratio = statistics.median(ratios)
            mo, md = statistics.median(peaks["ours"]), statistics.median(peaks["diffusers"])
            mine = statistics.median(times["ours"])
            line = (f"{dtype_name:5} {str(shape):20} {mine:8.3f} {statistics.median(times['diffusers']):11.3f} "
                    f"{ratio:6.2f} {1 / ratio:7.2f}x {mo / 2**20:9.0f}MB {md / 2**20:9.0f}MB {mo / max(md, 1):9.2f}")
            if compiled is not None:
                fast = statistics.median(times["compiled"])
                line += f" {fast:10.3f} {mine / fast:7.2f}x"
            if flops_wanted:
                flops = count_flops(dtype, shape)
                bound = flops / (args.peak_tflops * 1e12)
                line += f" {flops / 1e12:7.2f} {bound * 1e3:8.1f} {mine / bound:7.1f}"
            print(line, flush=True)
        del ours, theirs, compiled


if __name__ == "__main__":
    main()

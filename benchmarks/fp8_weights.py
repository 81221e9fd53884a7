"""fp8 weight storage vs fp16 / fp32: weight memory, forward time and output difference of the UNet3D.

    python benchmarks/fp8_weights.py [--size tiny|full|both] [--latent B,F,H,W] [--repeats N] [--device cpu|cuda]

Random weights (no model files needed): `tiny` is the test model (64 channels); `full` has the published model's
shapes (1.41 B parameters), weights drawn with std 1/sqrt(fan_in) (the scale trained layers have; norms around 1).
Each dtype is loaded through `unet_from_state_dict` from the same fp32 state dict; the output of one forward
(t = 500) is compared with the fp32 load's (relative L2 difference) and with the fp16 load's. On the CPU fp8 and
fp32 compute in fp32; fp16 computes in fp32 too (its weights cast per layer, so the figure is fp16 storage's own
error; `--fp16-native` computes in fp16 instead, which the CPU does about 10x slower); on CUDA everything computes in
fp16 (`default`).
Prints one line per dtype.
"""

import argparse
import gc
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "scripts"))
from pack_loader import load_pack  # noqa: E402


def random_state_dict(config, seed=0):
    import torch

    from cinematic.model_loaders.ops import skip_init_ops
    from cinematic.model_loaders.unet3d import UNet3D

    with torch.device("meta"):
        shapes = {k: v.shape for k, v in UNet3D(config, operations=skip_init_ops).state_dict().items()}
    gen = torch.Generator().manual_seed(seed)
    sd = {}
    for key, shape in shapes.items():
        if len(shape) >= 2:
            fan_in = int(torch.tensor(shape[1:]).prod())
            sd[key] = torch.randn(shape, generator=gen) / fan_in ** 0.5
        elif key.endswith("weight"):
            sd[key] = 1 + 0.1 * torch.randn(shape, generator=gen)
        else:
            sd[key] = 0.02 * torch.randn(shape, generator=gen)
    return sd


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--size", default="both", choices=["tiny", "full", "both"])
    p.add_argument("--latent", default=None, help="B,F,H,W of the latent (default tiny 2,8,16,16; full 1,4,16,16)")
    p.add_argument("--repeats", type=int, default=2)
    p.add_argument("--device", default="cpu")
    p.add_argument("--fp16-native", action="store_true", help="on the CPU, compute the fp16 load in fp16")
    args = p.parse_args()
    load_pack()
    import torch

    from cinematic.model_loaders.fp8_storage import cast_ops, weight_bytes
    from cinematic.model_loaders.unet3d import UNet3DConfig
    from cinematic.model_loaders.unet_loader import unet_from_state_dict

    sizes = ["tiny", "full"] if args.size == "both" else [args.size]
    device = torch.device(args.device)
    print(f"torch {torch.__version__}, device {device}, threads {torch.get_num_threads()}")
    for size in sizes:
        if size == "tiny":
            config = UNet3DConfig(model_channels=64, channel_mult=(1, 2, 2), num_res_blocks=1, attention_levels=(0, 1))
            shape = (2, 8, 16, 16)
        else:
            config = UNet3DConfig()
            shape = (1, 4, 16, 16)
        if args.latent:
            shape = tuple(int(v) for v in args.latent.split(","))
        sd = random_state_dict(config)
        gen = torch.Generator().manual_seed(1)
        b, f, h, w = shape
        x = torch.randn(b, 4, f, h, w, generator=gen)
        t = torch.full((b,), 500)
        context = torch.randn(b, 77, 1024, generator=gen)
        outs = {}
        print(f"\n{size}: {sum(v.numel() for v in sd.values()) / 1e6:.1f} M parameters, latent {list(x.shape)}")
        for name in ("fp32", "fp16", "fp8_e4m3fn", "fp8_e5m2"):
            if name == "fp16" and device.type == "cpu" and not args.fp16_native:
                model = unet_from_state_dict(sd, name, device=device, operations=cast_ops)
                model.compute_dtype = torch.float32
            else:
                model = unet_from_state_dict(sd, name, device=device).to(device)
            dtype = model.compute_dtype or model.dtype
            mem = weight_bytes(model)
            times = []
            with torch.no_grad():
                for _ in range(args.repeats):
                    if device.type == "cuda":
                        torch.cuda.synchronize()
                    start = time.perf_counter()
                    out = model(x.to(device, dtype), t.to(device), context.to(device, dtype)).float().cpu()
                    if device.type == "cuda":
                        torch.cuda.synchronize()
                    times.append(time.perf_counter() - start)
            outs[name] = out
            ref = outs["fp32"]
            line = (f"  {name:11s} stored {str(model.dtype).replace('torch.', ''):14s} compute "
                    f"{str(dtype).replace('torch.', ''):8s} weights {mem / 2**20:9.1f} MiB "
                    f"({mem / weight_bytes_fp16(sd):.3f} x fp16)  forward {min(times):7.3f} s  "
                    f"rel vs fp32 {rel(out, ref):.4f}")
            if "fp16" in outs and name.startswith("fp8"):
                line += f"  vs fp16 {rel(out, outs['fp16']):.4f}"
            print(line, flush=True)
            del model
            gc.collect()
        del sd
        gc.collect()


def weight_bytes_fp16(sd):
    return sum(v.numel() * 2 for v in sd.values())


def rel(a, b):
    return ((a - b).norm() / b.norm()).item()


if __name__ == "__main__":
    main()

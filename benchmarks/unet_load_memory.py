"""Peak RAM while loading a full-size UNet3D file (the claim: about one copy of the weights, never two).

    python benchmarks/unet_load_memory.py PATH [--weight-dtype fp32|fp16|bf16]

PATH is a full-size UNet3D (e.g. text2video_pytorch_model.pth, 5.65 GB fp32). Prints the file size, the resident
memory after loading, the peak during loading (Linux VmRSS / VmHWM: memory-mapped file pages included, which the
kernel can drop) and the peak of anonymous memory (RssAnon, sampled), and the time.
"""

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "scripts"))
from pack_loader import load_pack  # noqa: E402


def status(field):
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) * 1024
    return 0


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("path", type=Path)
    p.add_argument("--weight-dtype", default="fp32")
    args = p.parse_args()
    load_pack()
    import torch

    from cinematic.model_loaders.unet_loader import load_unet

    import threading

    base, base_anon = status("VmRSS"), status("RssAnon")
    peak_anon = [base_anon]
    done = threading.Event()

    def sample():  # anonymous memory (not file pages the kernel can drop), sampled every 5 ms
        while not done.is_set():
            peak_anon[0] = max(peak_anon[0], status("RssAnon"))
            time.sleep(0.005)

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    start = time.perf_counter()
    model = load_unet(args.path, args.weight_dtype)
    elapsed = time.perf_counter() - start
    done.set()
    sampler.join()
    params = sum(p.numel() * p.element_size() for p in model.parameters())
    gb = 1e9
    print(f"file {args.path.name}: {args.path.stat().st_size / gb:.2f} GB; weights in memory {params / gb:.2f} GB "
          f"({args.weight_dtype}); RSS after load +{(status('VmRSS') - base) / gb:.2f} GB; "
          f"peak RSS during load +{(status('VmHWM') - base) / gb:.2f} GB (file pages included); peak anonymous "
          f"memory +{(peak_anon[0] - base_anon) / gb:.2f} GB; {elapsed:.1f} s; torch {torch.__version__}")


if __name__ == "__main__":
    main()

"""Model-only scoring throughput (images already decoded, uint8 on the device): the default model at 32 px
and ResNet-50 at 224 px, batch 256, fp32 (baseline) vs bf16 autocast + channels-last, same run.

    python benchmarks/inference_throughput.py            # on the GPU when there is one (the issue's figure)
    python benchmarks/inference_throughput.py --device cpu --iters 3

Prints a table last; writes JSON to benchmarks/results/inference_throughput_<device>.json.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))
from report import RESULTS, finish  # noqa: E402


def bench(model, x, bf16: bool, iters: int, device) -> float:
    cl = bf16
    m = model.to(memory_format=torch.channels_last) if cl else model
    ctx = torch.autocast(device.type, dtype=torch.bfloat16) if bf16 else torch.autocast(device.type, enabled=False)

    def step():
        xf = x.float().div_(255)
        if cl:
            xf = xf.contiguous(memory_format=torch.channels_last)
        with ctx:
            return m(xf)

    with torch.inference_mode():
        for _ in range(3):
            step()
        if device.type == "cuda":
            torch.cuda.synchronize()
        t0 = time.perf_counter()
        for _ in range(iters):
            step()
        if device.type == "cuda":
            torch.cuda.synchronize()
    return len(x) * iters / (time.perf_counter() - t0)


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--device", default="auto")
    ap.add_argument("--batch", type=int, default=256)
    ap.add_argument("--iters", type=int, default=50)
    args = ap.parse_args()
    from synthcheck.inference.detector import Detector
    from synthcheck.inference.scoring import pick_device
    from synthcheck.models.registry import build_model, fold_batchnorm

    device = pick_device(args.device)
    if device.type == "cpu":
        torch.set_num_threads(os.cpu_count() or 1)
    models = [("default (fastnet)", Detector.load().model, 32),
              ("resnet50", fold_batchnorm(build_model("resnet50")[0]), 224)]
    rows = []
    for name, model, size in models:
        model = model.to(device).eval()
        x = torch.randint(0, 256, (args.batch, 3, size, size), dtype=torch.uint8, device=device)
        for bf16 in (False, True):
            ips = bench(model, x, bf16, args.iters, device)
            rows.append({"model": name, "size": size, "batch": args.batch, "precision": "bf16+CL" if bf16 else "fp32",
                         "img_s": round(ips, 1)})
            print(rows[-1], file=sys.stderr)
    gpu = torch.cuda.get_device_name(device) if device.type == "cuda" else None
    finish(RESULTS / f"inference_throughput_{device.type}.json", rows,
           [("model", "model", 20), ("size", "px", 4), ("batch", "batch", 6), ("precision", "precision", 10),
            ("img_s", "img/s", 10)], gpu=gpu, torch=torch.__version__)

if __name__ == "__main__":
    main()

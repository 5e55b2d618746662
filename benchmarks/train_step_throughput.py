"""Training-step throughput of the registry's small nets: fp32 (plain baseline) vs bf16 autocast, same run.

Measures the full step SynthCheck's training loop takes (uint8 -> float, batched
augmentation, forward, BCE loss, backward, AdamW step) on random 32x32 batches,
so the figure is about compute, not data loading (the decoded set is in memory).

    python benchmarks/train_step_throughput.py [--models fastnet fastnet_s cnn] [--batch 256] [--steps 8]
"""

from __future__ import annotations

import argparse
import os
import platform
import time

import torch
import torch.nn.functional as F

from synthcheck.data.augment import AugmentConfig, augment
from synthcheck.inference.scoring import autocast_for, pick_device, to_input
from synthcheck.models.registry import build_model, count_parameters


def measure(name: str, device: torch.device, bf16: bool, batch: int, steps: int) -> float:
    torch.manual_seed(0)
    model, _ = build_model(name)
    model.to(device).train()
    opt = torch.optim.AdamW(model.parameters(), 1e-3)
    x_u8 = torch.randint(0, 256, (batch, 3, 32, 32), dtype=torch.uint8, device=device)
    y = (torch.rand(batch, device=device) > 0.5).float()
    cfg = AugmentConfig()
    times = []
    for i in range(steps + 2):  # two warm-up steps
        t0 = time.perf_counter()
        x = augment(to_input(x_u8), cfg)
        with autocast_for(device, bf16, cpu=bf16):
            loss = F.binary_cross_entropy_with_logits(model(x).float(), y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        if device.type == "cuda":
            torch.cuda.synchronize()
        if i >= 2:
            times.append(time.perf_counter() - t0)
    times.sort()
    return batch / times[len(times) // 2]


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--models", nargs="+", default=["fastnet", "fastnet_s", "cnn"])
    ap.add_argument("--batch", type=int, default=256)
    ap.add_argument("--steps", type=int, default=8)
    ap.add_argument("--device", default="auto")
    a = ap.parse_args()
    device = pick_device(a.device)
    if device.type == "cpu":
        torch.set_num_threads(os.cpu_count() or 1)
    print(f"# {platform.processor() or platform.machine()}, {os.cpu_count()} cores, torch {torch.__version__}, "
          f"device {device}, batch {a.batch}, median of {a.steps} steps")
    print("| model | params | fp32 img/s (baseline) | bf16 autocast img/s | speed-up |")
    print("|---|---|---|---|---|")
    for name in a.models:
        fp32 = measure(name, device, False, a.batch, a.steps)
        bf16 = measure(name, device, True, a.batch, a.steps)
        params = count_parameters(build_model(name)[0])
        print(f"| {name} | {params / 1e6:.2f} M | {fp32:,.0f} | {bf16:,.0f} | {bf16 / fp32:.2f}x |", flush=True)


if __name__ == "__main__":
    main()

"""Seconds per explanation, per method, on a CIFAKE image and a 512-px photo, through `Detector.explain`.

Runs the bundled default model and, for a torchvision backbone, any model directory
given with --model (e.g. a mobilenet_v2 run). Median of --repeat runs after one warm-up.

    python benchmarks/explain_timing.py [--model runs/mnv2/model] [--repeat 3]
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
from pathlib import Path

import torch

from synthcheck import Detector
from synthcheck.inference.explain import METHODS

SAMPLES = Path(__file__).resolve().parents[1] / "src" / "synthcheck" / "samples"
IMAGES = {"CIFAKE 32 px": SAMPLES / "ai_cifake_102_9.jpg", "photo 512 px": SAMPLES / "ai_diffusiondb_diffusion_000225.jpg"}


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", action="append", default=[], help="extra model directories (default model always)")
    ap.add_argument("--repeat", type=int, default=3)
    a = ap.parse_args()
    torch.set_num_threads(os.cpu_count() or 1)
    print(f"# {platform.processor() or platform.machine()}, {os.cpu_count()} cores, torch {torch.__version__}, "
          f"median of {a.repeat} after a warm-up; LIME/SHAP at their default sample counts")
    print("| model | image | " + " | ".join(f"{m} s" for m in METHODS) + " |")
    print("|---|---|" + "---|" * len(METHODS))
    for name in [None, *a.model]:
        det = Detector.load(name)
        for label, path in IMAGES.items():
            cells = []
            for m in METHODS:
                det.explain(path, [m])  # warm-up
                runs = [det.explain(path, [m])[0].seconds for _ in range(a.repeat)]
                cells.append(f"{statistics.median(runs):.3f}")
            print(f"| {det.model_id} | {label} | " + " | ".join(cells) + " |", flush=True)


if __name__ == "__main__":
    main()

"""`synthcheck pairs` on 512-px photos: the real command against a plain PyTorch loop, in one run.

    python benchmarks/pairs_throughput.py --n 1000          # goal: 1,000 photos of 512 px in under 10 minutes
    python benchmarks/pairs_throughput.py --n 40            # quick look

The photos: the 512 x 512 real JPEGs of ../shared/data (photo-train's and COCO/ImageNet's, about 800 distinct),
repeated under new names up to --n; each file is decoded, reconstructed and encoded in full.
Rows:
  plain    one process, torch's default threads, fp32, NCHW: decode -> autoencoder round trip -> PNG, a loop
  pairs    the real command (`synthcheck pairs DIR --out OUT`), timed from launch to exit, start-up included
Both use TAEF2 from ../shared/weights.
"""

from __future__ import annotations

import argparse
import io
import shutil
import subprocess
import sys
import tarfile
import time
from pathlib import Path

from report import ROOT, RESULTS, finish

SHARED = ROOT.parent / "shared"
DATA = ROOT / "benchmarks" / ".data" / "pairs_photos"


def ensure_photos(n: int) -> Path:
    """n real 512-px JPEGs in one folder (extracted once)."""
    from PIL import Image

    folder = DATA / f"n{n}"
    if len(list(folder.glob("*.jpg"))) >= n:
        return folder
    folder.mkdir(parents=True, exist_ok=True)
    files = []
    for tar, prefix in ((SHARED / "data/photo-train/photo-train.tar", "real/"),
                        (SHARED / "data/ood-dev/diffusiondb-vs-coco-imagenet.tar", "diffusiondb-vs-coco-imagenet/real/")):
        with tarfile.open(tar) as t:
            for m in t:
                if m.isfile() and m.name.startswith(prefix):
                    data = t.extractfile(m).read()
                    if Image.open(io.BytesIO(data)).size == (512, 512):
                        files.append(data)
    for i in range(n):
        (folder / f"photo_{i:05d}.jpg").write_bytes(files[i % len(files)])
    return folder


def plain(folder: Path, limit: int) -> float:
    """The baseline a user would write first: fp32, NCHW, one process, a Python loop."""
    import numpy as np
    import torch
    from PIL import Image

    from synthcheck.data.autoencoders import load_autoencoder

    model = load_autoencoder("taef2", SHARED / "weights")
    out = DATA / "plain_out"
    out.mkdir(exist_ok=True)
    t0 = time.perf_counter()
    for p in sorted(folder.glob("*.jpg"))[:limit]:
        x = torch.from_numpy(np.array(Image.open(p).convert("RGB"))).permute(2, 0, 1)[None].float() / 255
        with torch.no_grad():
            y = model(x)[0].permute(1, 2, 0).mul(255).round().byte().numpy()
        Image.fromarray(y).save(out / (p.stem + ".png"))
    return time.perf_counter() - t0


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--n", type=int, default=1000)
    ap.add_argument("--plain-n", type=int, default=40, help="images for the (slow) plain loop; its rate is scaled")
    args = ap.parse_args(argv)
    folder = ensure_photos(args.n)
    rows = []
    secs = plain(folder, args.plain_n)
    rows.append({"run": "plain (fp32, NCHW, 1 process)", "images": args.plain_n, "seconds": round(secs, 1),
                 "img_s": round(args.plain_n / secs, 2), "minutes_per_1000": round(1000 / (args.plain_n / secs) / 60, 1)})
    out = DATA / "pairs_out"
    shutil.rmtree(out, ignore_errors=True)
    t0 = time.perf_counter()
    subprocess.run([sys.executable, "-m", "synthcheck.cli", "pairs", str(folder), "--out", str(out), "--weights-dir",
                    str(SHARED / "weights"), "-q"], check=True)
    secs = time.perf_counter() - t0
    rows.append({"run": "synthcheck pairs (bf16, channels-last, 1 process/core)", "images": args.n,
                 "seconds": round(secs, 1), "img_s": round(args.n / secs, 2),
                 "minutes_per_1000": round(1000 / (args.n / secs) / 60, 1)})
    rows[1]["speedup_vs_plain"] = round(rows[1]["img_s"] / rows[0]["img_s"], 2)
    finish(RESULTS / "pairs_throughput.json", rows,
           [("run", "run", 52), ("images", "images", 7), ("seconds", "s", 8), ("img_s", "img/s", 7),
            ("minutes_per_1000", "min/1000", 9), ("speedup_vs_plain", "x plain", 8)])


if __name__ == "__main__":
    main()

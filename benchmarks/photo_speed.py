"""Photo-model scoring speed on 512-px photos: the bundled model, the same without its attribution head, and
another photo model (e.g. the previous one), `Detector.predict` on files (decode + tiles + model + verdicts), same files, same process, alternating.

    git show <old commit>:src/synthcheck/weights/photo/...  ->  /tmp/photo_v1/   (every file of the folder)
    python benchmarks/photo_speed.py --against /tmp/photo_v1 --n 200

Files: the first N images of the DiffusionDB set (512 x 512 JPEGs), extracted once to a temporary folder.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import tarfile
import tempfile
import time
from pathlib import Path

import torch

from synthcheck import Detector

DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "ood-dev" / "diffusiondb-vs-coco-imagenet.tar"


def files(n: int) -> list[str]:
    out = Path(tempfile.gettempdir()) / "synthcheck_photo_speed"
    if len(list(out.rglob("*.jpg"))) < n:
        with tarfile.open(DATA) as tar:
            members = [m for m in tar.getmembers() if m.isfile() and m.name.lower().endswith(".jpg")][:n]
            tar.extractall(out, members=members, filter="data")
    return sorted(str(p) for p in out.rglob("*.jpg"))[:n]


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--against", type=Path, required=True, help="another photo model directory")
    ap.add_argument("--n", type=int, default=200)
    ap.add_argument("--repeats", type=int, default=2)
    args = ap.parse_args(argv)
    paths = files(args.n)
    plain = Detector.load("photo")
    plain.attribution = None  # the same model without its attribution head: does naming the generator cost time?
    dets = {"bundled photo": Detector.load("photo"), "bundled photo, attribution off": plain,
            str(args.against): Detector.load(args.against)}
    for d in dets.values():
        d.predict(paths[:8])  # warm-up
    times, probs = {k: [] for k in dets}, {}
    for _ in range(args.repeats):
        for k, d in dets.items():
            t = time.perf_counter()
            preds = d.predict(paths)
            times[k].append(time.perf_counter() - t)
            assert all(p.ok for p in preds)
            probs[k] = [p.prob_ai for p in preds]
    res = {"n": len(paths), "machine": f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores, "
           f"torch {torch.__version__}, {torch.get_num_threads()} threads",
           "img_s": {k: round(len(paths) / min(v), 2) for k, v in times.items()},
           "tiles": {k: f"{d.spec.n_tiles} x {d.spec.image_size} px" for k, d in dets.items()},
           "attribution_changes_scores_max_abs": max(abs(a - b) for a, b in zip(probs["bundled photo"],
                                                                                probs["bundled photo, attribution off"]))}
    print(json.dumps(res, indent=2))


if __name__ == "__main__":
    main()

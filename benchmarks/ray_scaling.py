"""`synthcheck predict --engine ray` with 1 vs 2 Detector actors against the local engine, same files, same run.

    python benchmarks/ray_scaling.py                     # the 20,000-file CIFAKE test folder (extracted once)
    python benchmarks/ray_scaling.py --limit 2000

Every row is the whole command (start-up, and for Ray the local instance's start, included).
Prints a table last; writes JSON to benchmarks/results/ray_scaling.json.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))
from predict_throughput import ARCHIVE, DATA, ensure_folder, list_files  # noqa: E402
from report import RESULTS, finish  # noqa: E402


def timed(cmd: list[str]) -> float:
    env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}
    t0 = time.perf_counter()
    subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env)
    return time.perf_counter() - t0


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--limit", type=int, default=None)
    ap.add_argument("--precision", default="fp32")
    args = ap.parse_args()
    folder = ensure_folder(ARCHIVE, DATA)
    files = list_files(folder, args.limit)
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        manifest = Path(tmp) / "files.txt"
        manifest.write_text("\n".join(map(str, files)))
        base = [sys.executable, "-m", "synthcheck.cli", "predict", "--manifest", str(manifest), "--precision",
                args.precision]
        runs = [("local engine (threads, one process)", base + ["--out", f"{tmp}/local.jsonl"])]
        for w in (1, 2):
            runs.append((f"ray, {w} actor(s)", base + ["--engine", "ray", "--ray-workers", str(w), "--out",
                                                       f"{tmp}/ray{w}"]))
        for name, cmd in runs:
            s = timed(cmd)
            rows.append({"row": name, "images": len(files), "seconds": round(s, 2), "img_s": round(len(files) / s, 1)})
            print(rows[-1], file=sys.stderr)
            shutil.rmtree(f"{tmp}/ray1", ignore_errors=True)
    finish(RESULTS / "ray_scaling.json", rows,
           [("row", "row", 40), ("images", "images", 7), ("seconds", "s", 8), ("img_s", "img/s", 8)])

if __name__ == "__main__":
    main()

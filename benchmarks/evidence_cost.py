"""What the file evidence (watermark check, JPEG history) costs on the photo path: the bundled auto detector's
`predict` on files (decode, inspect, tiles, model, verdicts), with
- metadata off (`--no-metadata`),
- metadata as before this change (C2PA, EXIF/XMP, PNG text; the two new checks switched off): the baseline,
- metadata with the watermark check and the JPEG header history (today's default),
- the same with the pixel re-save trace (`--resave-check`; what `inspect` and the server run),
same files, same process, alternating. Files: unseen-source images, i.e. photo-train-2 and the real photos of
photo-train (not DiffusionDB), extracted once to a temporary folder.

    python benchmarks/evidence_cost.py --n 200 --repeats 3
"""

from __future__ import annotations

import argparse
import json
import tarfile
import tempfile
import time
from pathlib import Path

from report import machine

from synthcheck import Detector
from synthcheck.inference import metadata

SHARED = Path(__file__).resolve().parents[1].parent / "shared" / "data"


def files(n: int) -> list[str]:
    out = Path(tempfile.gettempdir()) / "synthcheck_evidence_cost"
    if len(list(out.rglob("*.jpg"))) < n:
        for tar_path, prefix in ((SHARED / "photo-train-2" / "photo-train-2.tar", ""),
                                 (SHARED / "photo-train" / "photo-train.tar", "real/")):
            with tarfile.open(tar_path) as tar:
                members = [m for m in tar.getmembers() if m.isfile() and m.name.startswith(prefix)]
                tar.extractall(out / tar_path.stem, members=members, filter="data")
    return sorted(str(p) for p in out.rglob("*.jpg"))[:n]


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--n", type=int, default=200)
    ap.add_argument("--repeats", type=int, default=3)
    args = ap.parse_args(argv)
    paths = files(args.n)
    det = Detector.load()
    det.predict(paths[:8])  # warm-up: loads the photo model
    keep = metadata._watermark, metadata._history
    configs = {"metadata off": (False, True, False),
               "metadata as before (no watermark, no JPEG history)": (True, False, False),
               "default: + watermark + JPEG header history": (True, True, False),
               "--resave-check: + re-save trace (inspect, serve)": (True, True, True)}
    times, cpu = {k: [] for k in configs}, {k: [] for k in configs}
    for rep in range(args.repeats):
        order = list(configs) if rep % 2 == 0 else list(configs)[::-1]  # no config always runs on a warmer machine
        for name in order:
            meta, new, resave = configs[name]
            det.metadata, det.resave_check = meta, resave
            metadata._watermark, metadata._history = keep if new else (lambda *a: [], lambda *a: [])
            t, c = time.perf_counter(), time.process_time()
            preds = det.predict(paths)
            times[name].append(time.perf_counter() - t)
            cpu[name].append(time.process_time() - c)
            assert all(p.ok for p in preds)
    metadata._watermark, metadata._history = keep
    rate = {k: round(len(paths) / min(v), 2) for k, v in times.items()}
    before = "metadata as before (no watermark, no JPEG history)"

    def ratios(name):  # throughput ratio to the baseline within each repeat: median and range
        r = sorted(b / a for a, b in zip(times[name], times[before]))
        return {"median": round(r[len(r) // 2], 3), "min": round(r[0], 3), "max": round(r[-1], 3)}

    res = {"command": "python benchmarks/evidence_cost.py " + " ".join(f"--{k} {v}" for k, v in vars(args).items()),
           "n": len(paths), "files": "photo-train-2 (134) and photo-train's real photos, 512 x 512 JPEGs",
           "machine": machine(), "img_s": rate,
           "cpu_ms_per_image": {k: round(1000 * min(v) / len(paths), 2) for k, v in cpu.items()},
           "default_vs_before": ratios("default: + watermark + JPEG header history"),
           "resave_check_vs_before": ratios("--resave-check: + re-save trace (inspect, serve)")}
    print(json.dumps(res, indent=2))
    out = Path(__file__).parent / "results" / "evidence_cost.json"
    out.write_text(json.dumps(res, indent=2) + "\n")


if __name__ == "__main__":
    main()

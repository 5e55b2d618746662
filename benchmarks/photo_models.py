"""Photo model against photo model on the images users bring: `Detector.predict` with default flags (decode,
metadata, tiles, model, verdicts, generator) on unseen-source files, i.e. photo-train-2 and photo-train's real
photos (not DiffusionDB, which both models trained on), the same files, one process, the models alternating.

    python benchmarks/photo_models.py --model "v2.1=/tmp/photo_v21" --model "v3=photo" --repeats 3

The first model is the baseline each other one is compared with (the issue's speed goal: no worse than half of
today's). Also reported per model: the share of images a second, more expensive stage scored again (the
bf16-then-fp32 cascade on CPUs with native bf16; no other stage exists). No accuracy column: these files are
in photo model v3's training pool, so what it answers on them says nothing about unseen sources.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

from evidence_cost import files
from report import RESULTS, finish

from synthcheck import Detector


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", action="append", required=True, help="NAME=bundled name or model directory")
    ap.add_argument("--n", type=int, default=200)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--out", type=Path, default=RESULTS / "photo_models.json")
    args = ap.parse_args(argv)
    try:
        paths = files(args.n)
    except (FileNotFoundError, OSError) as e:
        raise SystemExit(f"the unseen-source files could not be read ({e}); they come from ../shared/data")
    if not paths:
        raise SystemExit("no 512-px JPEGs found in photo-train-2 and photo-train's real photos (../shared/data)")
    dets = {}
    for spec in args.model:
        name, _, where = spec.partition("=")
        dets[name] = Detector.load(where)
        dets[name].predict(paths[:8])  # warm-up
    times = {k: [] for k in dets}
    rescored = {}
    for rep in range(args.repeats):
        for name in (list(dets) if rep % 2 == 0 else list(dets)[::-1]):  # no model always on a warmer machine
            scorer = getattr(dets[name], "_onnx", None)  # the cascade counts the images it scored twice
            before = getattr(scorer, "rescored", 0)
            t = time.perf_counter()
            preds = dets[name].predict(paths)
            times[name].append(time.perf_counter() - t)
            if not all(p.ok for p in preds):
                raise SystemExit(f"{name}: {sum(not p.ok for p in preds)} file(s) failed")
            rescored[name] = (getattr(scorer, "rescored", 0) - before) / len(preds)
    base = next(iter(dets))
    rows = [{"model": name, "img_s": round(len(paths) / min(t), 2),
             "vs_first": round(min(times[base]) / min(t), 3),
             "second_stage_share": round(rescored[name], 3),
             "backend": f"{dets[name].backend} {dets[name].precision}"}
            for name, t in times.items()]
    finish(args.out, rows, [("model", "model", 8), ("img_s", "img/s", 8), ("vs_first", "x first", 8),
                            ("second_stage_share", "2nd stage", 10), ("backend", "backend", 24)],
           n=len(paths), files="photo-train-2 and photo-train's real photos, 512 x 512 JPEGs (unseen-source images)",
           repeats=args.repeats, rate="files / fastest of the repeats")


if __name__ == "__main__":
    main()

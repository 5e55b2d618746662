"""How far bf16 moves a model's logits, measured on its own images: sets `bf16_margin` for the bf16-then-fp32
cascade (`inference.export.CascadeScorer`), the default CPU path of an ONNX-shipping model on CPUs with native
bf16.

    python scripts/bf16_margin.py src/synthcheck/weights/photo ../shared/data/photo-train/photo-train.tar --write

Every image is scored by ONNX Runtime in fp32 and by OpenVINO in bf16 (the same model.onnx). The margin is the
largest image-level |logit difference| times `--safety`: an image whose bf16 logit is farther than that from
a verdict edge cannot have another verdict in fp32 (as far as these images tell), so only the images nearer
an edge are scored again in fp32. Use images the speed and accuracy figures are NOT reported on (the photo
benchmark reports on DiffusionDB vs COCO/ImageNet; this measures on photo-train).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("model", type=Path)
    ap.add_argument("data", nargs="+")
    ap.add_argument("--safety", type=float, default=1.5, help="margin = largest difference x this")
    ap.add_argument("--write", action="store_true", help="store bf16_margin (and how it was measured) in config.json")
    args = ap.parse_args(argv)

    from synthcheck.data.store import save_json
    from synthcheck.inference.detector import Detector, stack_decoded
    from synthcheck.inference.export import ONNX_FILE, OpenVinoScorer, verdict_edges
    from synthcheck.inference.scoring import cpu_has_bf16

    if not cpu_has_bf16():
        sys.exit("this CPU has no native bf16 (AMX/AVX512-BF16): nothing to measure")
    det = Detector.load(args.model, backend="onnx")
    fast = OpenVinoScorer(det.directory / ONNX_FILE, "bf16")
    from synthcheck.data.folders import iter_source

    items = ((it.data, it.name) for src in args.data for it in iter_source(src))  # the project's one file reader
    decoded = [d for d in (det.decode(item) for item in items) if "pixels" in d]
    pixels = stack_decoded(decoded)
    exact, bf16 = det.logits(pixels), fast(pixels)
    diff = np.abs(exact.astype(np.float64) - bf16)
    edges = np.array(verdict_edges(det.config))
    dist = np.abs(bf16[:, None] - edges[None]).min(1) if len(edges) else np.full(len(bf16), np.inf)
    margin = float(np.ceil(diff.max() * args.safety * 100) / 100)
    cmd = "python " + " ".join([str(Path(sys.argv[0]))] + (argv if argv is not None else sys.argv[1:]))
    report = {"images": int(len(diff)), "max_abs_logit_diff": round(float(diff.max()), 4),
              "p99_abs_logit_diff": round(float(np.quantile(diff, 0.99)), 4),
              "mean_abs_logit_diff": round(float(diff.mean()), 4), "safety": args.safety, "bf16_margin": margin,
              "share_rescored": round(float((dist <= margin).mean()), 4),
              "verdict_changed_by_bf16_alone": round(float(np.mean(
                  [det.verdict(a) != det.verdict(b) for a, b in zip(det.calibrated(exact), det.calibrated(bf16))])), 4),
              "data": args.data, "command": cmd}
    print(json.dumps(report, indent=2))
    if args.write:
        config = json.loads((args.model / "config.json").read_text())
        config["bf16_margin"] = margin
        config["bf16_margin_measured"] = report
        save_json(args.model / "config.json", config)


if __name__ == "__main__":
    main()

"""Does the default fast path change a bundled model's figures? fp32 vs bf16 on the model's test split, the
same files through `evaluate_sets` (train-identical files excluded), compared image by image.

    python benchmarks/precision_check.py default ../shared/data/cifake/cifake_test_jpg.tar.gz --write
    python benchmarks/precision_check.py photo ../shared/data/ood-dev/diffusiondb-vs-coco-imagenet.tar --write

--write records the result as `precision_check` in the bundled model's config.json and regenerates its card
(the card's "Precision" section); without it, prints only.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path

import numpy as np

from synthcheck.analysis.card import write_model_card
from synthcheck.analysis.evaluate import evaluate_sets
from synthcheck.data.store import save_json
from synthcheck.inference.detector import Detector
from synthcheck.models.bundled import resolve_model


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("model")
    ap.add_argument("data")
    ap.add_argument("--write", action="store_true")
    args = ap.parse_args(argv)
    res = {}
    with tempfile.TemporaryDirectory() as tmp:
        for precision in ("fp32", "bf16"):
            det = Detector.load(args.model, precision=precision)
            (m,) = evaluate_sets(det, [args.data], Path(tmp) / precision, progress=False, plots=False)["sets"].values()
            (scores,) = (Path(tmp) / precision).rglob("scores.npz")
            probs = np.load(scores)["probs"]
            res[precision] = {"accuracy": m["accuracy"], "roc_auc": m["roc_auc"], "n": m["n"], "probs": probs,
                              "verdicts": [det.verdict(float(p)) for p in probs]}
    a, b = res["fp32"], res["bf16"]
    check = {"set": f"test split of {Path(args.data).name}", "n": a["n"],
             "fp32": {k: round(a[k], 6) for k in ("accuracy", "roc_auc")},
             "bf16": {k: round(b[k], 6) for k in ("accuracy", "roc_auc")},
             "same_verdict": round(float(np.mean([x == y for x, y in zip(a["verdicts"], b["verdicts"])])), 6),
             "max_abs_prob_diff": round(float(np.abs(a["probs"] - b["probs"]).max()), 6),
             "command": "python benchmarks/precision_check.py " + " ".join(sys.argv[1:] if argv is None else argv)}
    print(json.dumps(check, indent=2))
    if args.write:
        d = resolve_model(args.model)
        config = json.loads((d / "config.json").read_text())
        config["precision_check"] = check
        save_json(d / "config.json", config)
        write_model_card(d, config)
        print(f"wrote {d / 'config.json'} and {d / 'MODEL_CARD.md'}")


if __name__ == "__main__":
    main()

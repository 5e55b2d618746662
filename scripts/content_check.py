"""Is a content word what ranks a set's AI images? Left-out ROC-AUC of the AI images whose manifest category names it
against every left-out real image, beside the same for the set's other AI images (photo-train-2: a quarter of its AI
crops are cats and no real crop is; issue "Answer on photos it never saw").

    python scripts/content_check.py runs/cv_v3_base ../shared/data/photo-train-2/manifest.csv --words cat kitten \
        --out reports/photo_v3/ablation/v2_1_recipe/cats.json

RUN is a crossval (or stack) output folder: its loso_scores.npz holds every pool image's left-out score.
"""

from __future__ import annotations

import argparse
import csv
import json
from pathlib import Path

import numpy as np


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("run", type=Path)
    ap.add_argument("manifest", type=Path)
    ap.add_argument("--words", nargs="+", required=True)
    ap.add_argument("--out", type=Path)
    args = ap.parse_args(argv)
    from sklearn.metrics import roc_auc_score

    words = [w.lower() for w in args.words]
    names = {Path(r["path_in_tar"]).name: any(w in r["category"].lower() for w in words)
             for r in csv.DictReader(args.manifest.open()) if r["label"] == "ai"}
    z = np.load(args.run / "loso_scores.npz")
    base = [Path(str(n)).name for n in z["names"]]
    if not set(base) & set(names):
        raise SystemExit(f"{args.manifest}: none of its AI files is among {args.run}'s {len(base)} scored images "
                         "(another data set's manifest?)")
    y, s = z["labels"], z["logits"]
    real = s[y == 0]
    out = {"run": str(args.run), "manifest": str(args.manifest), "words": words, "n_real": int(len(real))}
    for key, want in (("naming", True), ("not_naming", False)):
        m = np.array([names.get(n) is want for n in base]) & (y == 1)
        out[key] = {"n": int(m.sum()), "roc_auc_vs_all_left_out_real": float(roc_auc_score(
            np.r_[np.zeros(len(real)), np.ones(m.sum())], np.r_[real, s[m]])) if m.any() else None}
    print(json.dumps(out, indent=2))
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(out, indent=2) + "\n")


if __name__ == "__main__":
    main()

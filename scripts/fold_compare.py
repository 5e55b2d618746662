"""One fold of two cross-validation runs side by side: the same left-out sources, two recipes.

1. Does the proxy track the shipped recipe? The bundled photo model may train longer than the folds
   (`synthcheck crossval --final-epochs N`); its temperature, threshold and band come from the folds' left-out
   scores, so they hold only if a fold trained the long way scores its left-out sources as the proxy fold did:

    synthcheck crossval configs/crossval_photo.toml --out runs/cv_e24 --fold 0 --epochs 24
    python scripts/fold_compare.py runs/cv_both_social runs/cv_e24 --out reports/photo_v2/proxy_tracking.json

2. What does social-media augmentation buy? The same fold without it, both scored as is and after what
   social media does to the left-out images (JPEG 75, half size):

    synthcheck crossval configs/crossval_photo.toml --out runs/cv_plain --fold 0 --no-social-aug
    python scripts/fold_compare.py runs/cv_both_social runs/cv_plain --conditions "as is" "JPEG 75 (social)" \
        "half size (social)" --out reports/photo_v2/social_aug.json
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
from sklearn.metrics import roc_auc_score

from synthcheck.analysis.loso import own_calibration
from synthcheck.inference.calibration import probabilities, selective_figures
from synthcheck.training.crossval import _fold_calibration


def fold_scores(run: Path, k: int) -> tuple[np.ndarray, np.ndarray]:
    z = np.load(run / f"fold_{k}" / "scores.npz")
    return z["index"], own_calibration(z["logits"], *_fold_calibration(run / f"fold_{k}", z))


def figures(logits: np.ndarray, labels: np.ndarray, groups: np.ndarray, op: dict) -> dict:
    real = logits[labels == 0]
    per = {}
    for g in np.unique(groups):
        if g.startswith("ai:") and len(real):
            s = np.r_[real, logits[groups == g]]
            per[g] = float(roc_auc_score(np.r_[np.zeros(len(real)), np.ones((groups == g).sum())], s))
    sel = selective_figures(probabilities(logits, op["temperature"]), labels, op["low"], op["high"])
    return {"roc_auc": float(roc_auc_score(labels, logits)), "per_ai_group_roc_auc": per,
            "coverage": sel["coverage"], "confidently_wrong": sel["confidently_wrong"]}


def conditions(args, index: np.ndarray, labels, groups, op) -> dict:
    """Both fold models on the left-out images after each transformation (scored, centred and judged as in the
    report)."""
    import sys

    sys.path.insert(0, str(Path(__file__).parent))
    from shortcut_study import load_run

    from synthcheck.data.preprocess import PreprocessSpec
    from synthcheck.inference.scoring import score_logits
    from synthcheck.models.checkpoint import load_model
    from synthcheck.training.crossval import condition_tiles, load_pool

    cfg, _ = load_run(args.proxy)
    cfg.pairs = []
    pool = load_pool(cfg, progress=False).pool
    spec = PreprocessSpec(cfg.train.crop, "tiles", tiles=cfg.train.tiles)
    fdirs = {"a": args.proxy / f"fold_{args.fold}", "b": args.full / f"fold_{args.fold}"}
    models = {t: load_model(d / "model")[0] for t, d in fdirs.items()}  # once, not per condition
    centres = {t: _fold_calibration(d, np.load(d / "scores.npz")) for t, d in fdirs.items()}
    out = {}
    for name in args.conditions:
        tiles = condition_tiles(pool, index, name, spec)  # label-free conditions (no swap here: no fold tables)
        row = {}
        for tag, model in models.items():
            lg = own_calibration(score_logits(model, tiles, 256), *centres[tag])
            row[tag] = figures(lg, labels, groups, op)
        out[name] = row
        print(name, {t: round(r["roc_auc"], 3) for t, r in row.items()}, flush=True)
    return out


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("proxy", type=Path, help="a finished crossval run (a); its operating point judges both")
    ap.add_argument("full", type=Path, help="the same config with --fold K and one change (b)")
    ap.add_argument("--fold", type=int, default=0)
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--conditions", nargs="*", default=[], help="also re-score under these (scripts/shortcut_study.py)")
    args = ap.parse_args(argv)
    z = np.load(args.proxy / "loso_scores.npz")
    op = json.loads((args.proxy / "crossval.json").read_text())["operating_point"]
    (i_p, l_p), (i_f, l_f) = fold_scores(args.proxy, args.fold), fold_scores(args.full, args.fold)
    if not np.array_equal(i_p, i_f):
        raise SystemExit("the two runs left out different images: not the same fold")
    labels, groups = z["labels"][i_p], z["groups"][i_p]
    cut = op["temperature"] * np.log(op["threshold"] / (1 - op["threshold"]))
    res = {"fold": args.fold, "n": int(len(i_p)), "left_out_groups": sorted(set(groups.tolist())),
           "a": str(args.proxy), "b": str(args.full),
           "figures_a": figures(l_p, labels, groups, op), "figures_b": figures(l_f, labels, groups, op),
           "spearman_logits": float(np.corrcoef(np.argsort(np.argsort(l_p)), np.argsort(np.argsort(l_f)))[0, 1]),
           "same_side_of_threshold": float(np.mean((l_p > cut) == (l_f > cut))),
           "operating_point": "the proxy run's (what the shipped model carries)"}
    if args.conditions:
        res["conditions"] = conditions(args, i_p, labels, groups, op)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(res, indent=2))
    p, f = res["figures_a"], res["figures_b"]
    print(f"fold {args.fold}: {res['n']} left-out images; ROC-AUC {args.proxy} {p['roc_auc']:.3f} vs {args.full} {f['roc_auc']:.3f}; "
          f"answered {p['coverage']:.3f} vs {f['coverage']:.3f}; confidently wrong {p['confidently_wrong']:.3f} vs "
          f"{f['confidently_wrong']:.3f}; rank correlation {res['spearman_logits']:.3f}")
    for g in p["per_ai_group_roc_auc"]:
        print(f"  {g}: {p['per_ai_group_roc_auc'][g]:.3f} vs {f['per_ai_group_roc_auc'][g]:.3f}")


if __name__ == "__main__":
    main()

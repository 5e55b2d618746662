"""A hand-made second signal for the photo model, measured leave-sources-out (photo model v3, direction 1): does a
residual/spectrum description of the pixels rank unseen sources, and does it add to the CNN's left-out scores?

    python scripts/residual_signal.py configs/crossval_photo_v3.toml runs/cv_v3_base \
        --cache data/residual_v3.npz --out reports/photo_v3/ablation/residual_signal.json

Per image (native pixels, no resizing): the averaged log power spectrum of a second-order residual over 32-px
patches (16 x 16 quadrant), co-occurrences of truncated first differences (T = 2, horizontal and vertical: 50 bins;
SPAM-like), the residuals' inter-channel correlations (demosaicing leaves them high in camera photos) and the
residual's log-std and kurtosis. A standardised logistic regression (C fixed at 0.05 before any score was seen) is
fitted per fold on the other folds' images (and, in a second variant, their aligned pairs) and scores the fold's
images; then the repo's cross-fitted combiner (`training.stacking`) stacks it with the CNN run's left-out scores.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np


def residual_features(x: np.ndarray) -> np.ndarray:
    """uint8 [3,H,W] -> 311 numbers describing the residual left after a local prediction of each pixel."""
    x = x.astype(np.float32)
    g = 0.299 * x[0] + 0.587 * x[1] + 0.114 * x[2]

    def res(a):
        return 4 * a[1:-1, 1:-1] - a[:-2, 1:-1] - a[2:, 1:-1] - a[1:-1, :-2] - a[1:-1, 2:]

    rg, p = res(g), 32
    nh, nw = rg.shape[0] // p, rg.shape[1] // p
    patches = rg[:nh * p, :nw * p].reshape(nh, p, nw, p).transpose(0, 2, 1, 3).reshape(-1, p, p)
    spec = np.fft.fftshift(np.log((np.abs(np.fft.fft2(patches)) ** 2).mean(0) + 1e-6))[p // 2:, p // 2:]
    co = []
    for d in (np.diff(g, axis=1), np.diff(g, axis=0).T):
        q = np.clip(np.round(d), -2, 2).astype(int) + 2
        co.append(np.bincount((q[:, :-1] * 5 + q[:, 1:]).ravel(), minlength=25))
    co = np.concatenate(co).astype(np.float64)
    co /= co.sum()
    cc = np.corrcoef(np.stack([res(x[c]).ravel() for c in range(3)]))[[0, 0, 1], [1, 2, 2]]
    stats = [np.log(rg.std() + 1e-3), ((rg - rg.mean()) ** 4).mean() / (rg.var() ** 2 + 1e-6)]
    return np.concatenate([(spec - spec.mean()).ravel(), np.log(co + 1e-6), cc, stats]).astype(np.float32)


def features_of(s) -> np.ndarray:
    side = s.images.shape[-1]
    return np.stack([residual_features(s.images[i][:, :min(h, side), :min(w, side)]) for i, (h, w) in enumerate(s.sizes)])


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("config", type=Path, help="the crossval TOML of the pool")
    ap.add_argument("run", type=Path, help="a finished crossval run on that pool (its left-out scores are stacked)")
    ap.add_argument("--cache", type=Path, help="features kept here (recomputed when missing)")
    ap.add_argument("--out", type=Path, required=True)
    args = ap.parse_args(argv)
    from scipy.stats import spearmanr
    from sklearn.linear_model import LogisticRegression
    from sklearn.metrics import roc_auc_score
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    from synthcheck.analysis.loso import mean_ai_auc
    from synthcheck.training.crossval import CrossvalConfig, assign_folds, limit_units, load_pool
    from synthcheck.training.stacking import cross_fit

    cfg = CrossvalConfig.load(args.config)
    pool = load_pool(cfg, progress=False)
    if args.cache and args.cache.exists():
        z = np.load(args.cache)
        fp, fe = z["pool"], z["extra"]
    else:
        fp, fe = features_of(pool.pool), features_of(pool.extra)
        if args.cache:
            args.cache.parent.mkdir(parents=True, exist_ok=True)
            np.savez(args.cache, pool=fp, extra=fe)
    y = pool.pool.labels.astype(int)
    fold_of = assign_folds(pool.families, cfg.folds, cfg.seed)
    fold = np.array([fold_of[f] for f in pool.families])
    units = limit_units(cfg, pool) or pool.pool.groups  # the families the report averages over
    cnn = np.load(args.run / "loso_scores.npz")
    if not np.array_equal(cnn["digests"], pool.pool.digests):
        raise SystemExit(f"{args.run}: its scores are of another pool")

    def family_mean(s):
        return mean_ai_auc(s, y, units)

    result = {"command": "python scripts/residual_signal.py " + " ".join(str(a) for a in (argv or [])) if argv else None,
              "cnn": {"roc_auc": float(roc_auc_score(y, cnn["logits"])), "mean_ai_family_roc_auc": family_mean(cnn["logits"])}}
    for variant, with_pairs in (("residual", False), ("residual + aligned pairs in its fit", True)):
        s = np.zeros(len(y))
        for k in range(cfg.folds):
            x, t = fp[fold != k], y[fold != k]
            if with_pairs and len(fe):
                ok = np.array([b == "" or fold_of.get(b, -1) != k for b in pool.extra_blocked])
                x, t = np.r_[x, fe[ok]], np.r_[t, pool.extra.labels[ok]]
            m = make_pipeline(StandardScaler(), LogisticRegression(C=0.05, max_iter=3000)).fit(x, t)
            s[fold == k] = m.decision_function(fp[fold == k])
        stacked, _, fits = cross_fit(np.c_[cnn["logits"], s], y, fold)
        result[variant] = {"roc_auc": float(roc_auc_score(y, s)), "mean_ai_family_roc_auc": family_mean(s),
                           "spearman_with_cnn": float(spearmanr(s, cnn["logits"]).statistic),
                           "stack_with_cnn": {"roc_auc": float(roc_auc_score(y, stacked)),
                                              "mean_ai_family_roc_auc": family_mean(stacked),
                                              "weights_per_fold": {k: f["weights"] for k, f in fits.items()}}}
    print(json.dumps(result, indent=2))
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    import sys

    main(sys.argv[1:])

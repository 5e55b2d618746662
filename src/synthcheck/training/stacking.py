"""Stacking the left-out scores of several cross-validation runs over one pool and one set of folds.

Signals that fail on different families (a generated-image model and an aligned-pairs-only model, which never sees a
generated image) can rank unseen sources better together than either alone. The combiner is a logistic regression on
the runs' centred left-out logits, cross-fitted by fold: the stack's score of an image in fold k comes from a combiner
fitted only on the other folds' left-out scores, so no image's own family (folds hold whole families) is in the fit
that scores it, as the band already is. The band, temperature and threshold are then fitted on the stack's left-out
scores by the same `analysis.loso.loso_report`, and the report has the same shape as a single run's.
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np

from .crossval import CrossvalConfig, assign_folds, left_out_scores, limit_units, load_pool, save_run_report

log = logging.getLogger("synthcheck")

STACK_C = 1.0  # the combiner's inverse regularisation, fixed before any stack was scored (two to three inputs)


def fit_combiner(x: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, float]:
    """(weights, intercept) of the stack: the direction of a class-balanced logistic regression on the signals'
    centred logits, scaled so that the weights' magnitudes sum to one, and no intercept. Each input is centred on its
    model's own operating point, so a weighted mean of them is a centred logit too. A free intercept and scale, fitted
    anew for each fold, shift whole folds against each other: stacking the base run with itself that way (sklearn's
    default LogisticRegression, C 1, during development) took its pooled ROC-AUC from 0.771 to 0.688 while every
    image ranked the same within its fold; this form leaves it at 0.771 (`synthcheck stack runs/cv_v3_base
    runs/cv_v3_base`, and the test that a signal stacked with itself is itself)."""
    from sklearn.linear_model import LogisticRegression

    m = LogisticRegression(C=STACK_C, fit_intercept=False, class_weight="balanced", max_iter=1000).fit(x, y)
    w = m.coef_[0].astype(np.float64)
    return w / max(np.abs(w).sum(), 1e-12), 0.0


def combine(x: np.ndarray, weights, intercept: float) -> np.ndarray:
    """The stack's logit: one linear function of the signals' centred logits (what the shipped model computes)."""
    return np.asarray(x, np.float64) @ np.asarray(weights, np.float64) + float(intercept)


def cross_fit(x: np.ndarray, y: np.ndarray, fold: np.ndarray, conditions: dict[str, np.ndarray] | None = None
              ) -> tuple[np.ndarray, dict[str, np.ndarray], dict]:
    """Each fold's images scored by a combiner fitted on the other folds' images only; the same combiner scores
    that fold's copies under each condition. -> (stacked logits, stacked condition logits, per-fold weights)."""
    out = np.full(len(y), np.nan)
    cond_out = {c: np.full(len(y), np.nan) for c in (conditions or {})}
    fits = {}
    for k in np.unique(fold):
        test, fit = fold == k, fold != k
        w, b = fit_combiner(x[fit], y[fit])
        out[test] = combine(x[test], w, b)
        for c, xc in (conditions or {}).items():
            cond_out[c][test] = combine(xc[test], w, b)
        fits[int(k)] = {"weights": [float(v) for v in w], "intercept": b, "fitted_on": int(fit.sum())}
    return out, cond_out, fits


def run_stack(runs: list[str | Path], out: str | Path, progress: bool = True) -> dict:
    """Stack the left-out scores of `runs` (crossval output folders over the same pool, families and folds) and
    report the stack as crossval reports one run."""
    from ..analysis.loso import loso_report
    from .config import model_spec

    if len(runs) < 2:
        raise ValueError("stack needs two or more crossval runs")
    cfgs = [CrossvalConfig.from_run(r) for r in runs]
    base = cfgs[0]
    base.validate()
    for r, c in zip(runs[1:], cfgs[1:]):
        if (list(c.sources), c.folds, c.seed, c.merge, c.limit_by) != (list(base.sources), base.folds, base.seed,
                                                                      base.merge, base.limit_by):
            raise ValueError(f"{r}: another pool, families or folds than {runs[0]}; stacking needs the same ones")
    conditions = [c for c in base.band_conditions if all(c in k.band_conditions for k in cfgs[1:])]
    pool = load_pool(base, progress)
    fold_of = assign_folds(pool.families, base.folds, base.seed)
    fold = np.array([fold_of[f] for f in pool.families])
    signals, cond_signals = [], {c: [] for c in conditions}
    for r, c in zip(runs, cfgs):
        logits, _, cond = left_out_scores(c, pool, Path(r), model_spec(c.train))
        if np.isnan(logits).any():
            raise ValueError(f"{r}: not every fold has its scores yet; finish that crossval first")
        signals.append(logits)
        for name in conditions:
            cond_signals[name].append(cond[name])
    x = np.stack(signals, 1)
    xc = {c: np.stack(v, 1) for c, v in cond_signals.items()}
    y = pool.pool.labels.astype(int)
    stacked, stacked_cond, fits = cross_fit(x, y, fold, xc)
    report = loso_report(stacked, y, pool.pool.groups, pool.families, pool.categories, base.max_wrong_group,
                         base.max_wrong_pooled, conditions=stacked_cond, limit_groups=limit_units(base, pool))
    w, b = fit_combiner(x, y)  # what a shipped stack uses: fitted on every left-out score
    from scipy.stats import spearmanr
    from sklearn.metrics import roc_auc_score

    report["stack"] = {
        "runs": [str(r) for r in runs], "C": STACK_C, "per_fold": fits,
        "shipped": {"weights": [float(v) for v in w], "intercept": b},
        "signals": {str(r): {"roc_auc": float(roc_auc_score(y, s))} for r, s in zip(runs, signals)},
        "rank_correlation": float(spearmanr(x[:, 0], x[:, 1]).statistic) if x.shape[1] == 2 else
        [[float(v) for v in row] for row in spearmanr(x).statistic],
        "conditions": conditions,
    }
    report["folds"] = {str(k): sorted(f for f, v in fold_of.items() if v == k) for k in range(base.folds)}
    report["config"] = {"stack_of": [c.to_dict() for c in cfgs]}
    save_run_report(Path(out), report, pool, logits=stacked, signals=x)
    return report

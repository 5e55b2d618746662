"""Turning logits into probabilities that mean what they say, and choosing the operating threshold."""

from __future__ import annotations

import numpy as np
import torch


def fit_temperature(logits: np.ndarray, labels: np.ndarray, max_iter: int = 200) -> float:
    """Temperature scaling (Guo et al., 2017): one scalar T minimising validation NLL of sigmoid(z/T)."""
    z = torch.as_tensor(logits, dtype=torch.float64)
    y = torch.as_tensor(labels, dtype=torch.float64)
    log_t = torch.zeros(1, dtype=torch.float64, requires_grad=True)
    opt = torch.optim.LBFGS([log_t], lr=0.1, max_iter=max_iter, line_search_fn="strong_wolfe")

    def closure():
        opt.zero_grad()
        loss = torch.nn.functional.binary_cross_entropy_with_logits(z / log_t.exp(), y)
        loss.backward()
        return loss

    opt.step(closure)
    t = float(log_t.detach().exp())
    return t if np.isfinite(t) and t > 0 else 1.0


def probabilities(logits: np.ndarray, temperature: float = 1.0) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-np.asarray(logits, dtype=np.float64) / temperature))


def choose_threshold(probs: np.ndarray, labels: np.ndarray, max_fpr: float | None = None) -> dict:
    """Threshold on P(AI): equal error rate by default, or the lowest threshold whose FPR <= max_fpr.

    FPR here is the share of real images called AI, the error users fear most.
    """
    from sklearn.metrics import roc_curve  # here, not at import: scoring never needs scikit-learn (~1 s)

    if len(np.unique(labels)) < 2:
        return {"threshold": 0.5, "rule": "default (validation has one class)"}
    fpr, tpr, thr = roc_curve(labels, probs)
    thr = np.clip(thr, 0.0, 1.0)
    if max_fpr is not None:
        i = int(np.flatnonzero(fpr <= max_fpr)[-1])
        rule = {"rule": f"max_fpr={max_fpr}"}
    else:
        i = int(np.argmin(np.abs((1 - tpr) - fpr)))
        rule = {"rule": "equal_error_rate", "val_eer": float((fpr[i] + 1 - tpr[i]) / 2)}
    return {"threshold": _between(thr, i), **rule, "val_fpr": float(fpr[i]), "val_tpr": float(tpr[i])}


def _between(thr: np.ndarray, i: int) -> float:
    """Every threshold in (thr[i+1], thr[i]] classifies validation alike; take the middle (in logit space),
    not the edge, so a cleanly separated validation set does not yield a threshold of 0.99999."""
    hi = thr[i] if i > 0 else 1.0
    lo = thr[i + 1] if i + 1 < len(thr) else 0.0
    eps = 1e-6
    logit = lambda p: np.log(np.clip(p, eps, 1 - eps) / (1 - np.clip(p, eps, 1 - eps)))
    mid = (logit(hi) + logit(lo)) / 2
    return float(1 / (1 + np.exp(-mid)))


def expected_calibration_error(probs: np.ndarray, labels: np.ndarray, bins: int = 15) -> float:
    """ECE over `bins` equal-width bins of [0,1] on top-label confidence (Guo et al., 2017)."""
    probs = np.asarray(probs, dtype=np.float64)
    labels = np.asarray(labels)
    pred = (probs >= 0.5).astype(int)
    conf = np.where(pred == 1, probs, 1 - probs)
    correct = (pred == labels).astype(float)
    edges = np.linspace(0.0, 1.0, bins + 1)
    ece = 0.0
    for lo, hi in zip(edges[:-1], edges[1:]):
        m = (conf > lo) & (conf <= hi)
        if m.any():
            ece += m.mean() * abs(correct[m].mean() - conf[m].mean())
    return float(ece)


def calibrate_detector(detector, sources, out, max_fpr: float | None = None, uncertain_band: float | None = None) -> dict:
    """Refit temperature + threshold of a loaded Detector on labelled sets; save a copy of the model to `out`."""
    import shutil
    from pathlib import Path

    from ..data.folders import load_imageset
    from ..models.checkpoint import load_model, save_model

    sets = [load_imageset(s, detector.spec) for s in sources]
    images = np.concatenate([s.images for s in sets])
    labels = np.concatenate([s.labels for s in sets])
    logits = detector.logits(images)
    t = fit_temperature(logits, labels)
    thr = choose_threshold(probabilities(logits, t), labels, max_fpr)
    config = dict(detector.config)
    config.pop("abstain", None)  # a band fitted on other data no longer applies
    config.update({"temperature": t, "threshold": thr["threshold"], "threshold_rule": thr,
                   "uncertain_band": detector.uncertain_band if uncertain_band is None else uncertain_band,
                   "calibrated_on": [str(s) for s in sources]})
    out = Path(out)
    # the stored (unfolded) weights, not the Detector's BatchNorm-folded copy: config.json describes those
    model, _ = load_model(detector.directory)
    save_model(model, out, config)
    if detector.directory is not None:
        for extra in ("train_digests.safetensors",):
            if (Path(detector.directory) / extra).exists():
                shutil.copy(Path(detector.directory) / extra, out / extra)
    return config


def verdicts(probs: np.ndarray, low: float, high: float) -> np.ndarray:
    """1 = "ai" (p >= high), 0 = "real" (p <= low), -1 = "uncertain" (in between)."""
    p = np.asarray(probs, dtype=np.float64)
    return np.where(p >= high, 1, np.where(p <= low, 0, -1))


def selective_figures(probs: np.ndarray, labels: np.ndarray, low: float, high: float) -> dict:
    """At an operating band: share answered (coverage), share confidently wrong (of all images), and the
    error among the answered."""
    v = verdicts(probs, low, high)
    labels = np.asarray(labels)
    answered = v >= 0
    wrong = answered & (v != labels)
    n = max(len(labels), 1)
    return {"n": int(len(labels)), "coverage": float(answered.mean()) if len(labels) else None,
            "confidently_wrong": float(wrong.sum() / n), "called_ai": float((v == 1).mean()) if len(labels) else None,
            "error_when_answered": float(wrong.sum() / answered.sum()) if answered.any() else None}


def fit_abstention(probs: np.ndarray, labels: np.ndarray, groups: np.ndarray, threshold: float,
                   max_wrong_pooled: float = 0.05, max_wrong_group: float = 0.10, grid: int = 400) -> dict:
    """The widest-answering band [low, high] around `threshold` (verdict "ai" at p >= high, "real" at
    p <= low, "uncertain" between) whose confidently wrong share is at most `max_wrong_group` in every
    group and `max_wrong_pooled` over all images. Meant for scores of sources the model never saw
    (leave-sources-out), so that "confident" means "right on sources it never saw".

    Answering nothing (low 0, high 1) always meets the limits: that is the result when nothing else does.
    """
    p = np.asarray(probs, dtype=np.float64)
    y = np.asarray(labels).astype(int)
    g = np.asarray(groups, dtype=str)
    qs = np.unique(np.quantile(p, np.linspace(0, 1, grid)))
    lows = np.concatenate([[-np.inf], qs[qs <= threshold]])   # -inf: never answer "real"
    highs = np.concatenate([qs[qs >= threshold], [np.inf]])   # inf: never answer "ai"
    n = len(p)
    # per group: AI images at or below each low are wrong "real"s; real images at or above each high wrong "ai"s
    names = np.unique(g)
    wrong_low = np.stack([((p[:, None] <= lows[None]) & ((g == k) & (y == 1))[:, None]).sum(0) for k in names])
    wrong_high = np.stack([((p[:, None] >= highs[None]) & ((g == k) & (y == 0))[:, None]).sum(0) for k in names])
    size = np.array([(g == k).sum() for k in names])[:, None]
    ok_low = (wrong_low / size <= max_wrong_group).all(0)      # groups hold one label, so low and high
    ok_high = (wrong_high / size <= max_wrong_group).all(0)    # constrain different groups
    pooled = (wrong_low.sum(0)[:, None] + wrong_high.sum(0)[None, :]) / n
    cover = ((p[:, None] <= lows[None]).sum(0)[:, None] + (p[:, None] >= highs[None]).sum(0)[None, :]) / n
    feasible = ok_low[:, None] & ok_high[None, :] & (pooled <= max_wrong_pooled)
    score = np.where(feasible, cover, -1.0)
    i, j = np.unravel_index(int(np.argmax(score)), score.shape)
    # a side that never answers gets the edge 0 or 1 (P(AI) reaches neither in float64 at any sane logit)
    return {"low": float(lows[i]) if np.isfinite(lows[i]) else 0.0,
            "high": float(highs[j]) if np.isfinite(highs[j]) else 1.0,
            "coverage": float(cover[i, j]), "confidently_wrong": float(pooled[i, j])}


def unseen_reading(centred_logits: np.ndarray, labels: np.ndarray, bins: int = 10) -> dict:
    """What a score meant on sources the models never saw: the left-out images cut into `bins` score ranges of
    equal size, and in each the share that was AI-generated had AI and real images been equally many (each class
    weighted to half, so the table does not depend on how this pool happened to be mixed). The shares are made
    non-decreasing (isotonic, weighted by the images in each range), since a higher score meaning "less likely
    AI" would be noise. Keyed on the centred logit, the scale every fold model and the shipped model share
    (`analysis.loso.own_calibration`), so one table reads any of them."""
    from sklearn.isotonic import IsotonicRegression

    z = np.asarray(centred_logits, np.float64)
    y = np.asarray(labels).astype(int)
    if not ((y == 0).any() and (y == 1).any()):
        raise ValueError("unseen_reading needs left-out images of both labels")
    edges = np.quantile(z, np.linspace(0, 1, bins + 1))
    edges[0], edges[-1] = -np.inf, np.inf
    edges = np.unique(edges)
    b = np.clip(np.searchsorted(edges, z, side="right") - 1, 0, len(edges) - 2)
    n_ai = np.bincount(b[y == 1], minlength=len(edges) - 1)
    n_real = np.bincount(b[y == 0], minlength=len(edges) - 1)
    rate_ai, rate_real = n_ai / n_ai.sum(), n_real / n_real.sum()
    share = np.divide(rate_ai, rate_ai + rate_real, out=np.full(len(n_ai), 0.5), where=rate_ai + rate_real > 0)
    share = IsotonicRegression(y_min=0, y_max=1).fit(np.arange(len(share)), share, sample_weight=n_ai + n_real + 1e-9
                                                     ).predict(np.arange(len(share)))
    return {"edges": [float(e) for e in edges[1:-1]], "ai_share": [round(float(s), 4) for s in share],
            "n": [int(k) for k in n_ai + n_real], "n_ai": [int(k) for k in n_ai], "n_real": [int(k) for k in n_real],
            "images": int(len(z)), "mix": "AI and real weighted to half each"}


def measured_reading(reading: dict, centred_logits: np.ndarray, labels: np.ndarray) -> list[dict]:
    """A reading table checked on other images: per range of `reading` (its own edges), the share it claims beside
    the share measured here, with the same half-and-half weighting as `unseen_reading` (no isotonic smoothing: this
    is the check, not the fit)."""
    z, y = np.asarray(centred_logits, np.float64), np.asarray(labels).astype(int)
    if not ((y == 0).any() and (y == 1).any()):
        raise ValueError("a reading check needs images of both labels")
    edges = np.r_[-np.inf, np.asarray(reading["edges"], np.float64), np.inf]
    b = np.clip(np.searchsorted(edges, z, side="right") - 1, 0, len(edges) - 2)
    n_ai, n_real = (np.bincount(b[y == k], minlength=len(edges) - 1) for k in (1, 0))
    rate_ai, rate_real = n_ai / n_ai.sum(), n_real / n_real.sum()
    return [{"range_logit": [None if np.isinf(edges[i]) else float(edges[i]),
                             None if np.isinf(edges[i + 1]) else float(edges[i + 1])],
             "claimed": float(reading["ai_share"][i]), "n_ai": int(n_ai[i]), "n_real": int(n_real[i]),
             "measured": (float(rate_ai[i] / (rate_ai[i] + rate_real[i])) if rate_ai[i] + rate_real[i] > 0 else None)}
            for i in range(len(edges) - 1)]


def read_score(reading: dict, centred_logit: float) -> dict:
    """One score's row of an `unseen_reading` table: its range (as centred logits) and the share of AI there."""
    edges = reading["edges"]
    i = int(np.searchsorted(np.asarray(edges), centred_logit, side="right"))
    lo = edges[i - 1] if i > 0 else None
    hi = edges[i] if i < len(edges) else None
    return {"ai_share": reading["ai_share"][i], "n": reading["n"][i], "range_logit": [lo, hi],
            "images": reading["images"], "copies": reading.get("copies", ["as is"])}

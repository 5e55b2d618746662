"""Turning logits into probabilities that mean what they say, and choosing the operating threshold."""

from __future__ import annotations

import numpy as np
import torch
from sklearn.metrics import roc_curve


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
    if len(np.unique(labels)) < 2:
        return {"threshold": 0.5, "rule": "default (validation has one class)"}
    fpr, tpr, thr = roc_curve(labels, probs)
    thr = np.clip(thr, 0.0, 1.0)
    if max_fpr is not None:
        ok = np.flatnonzero(fpr <= max_fpr)
        i = ok[-1]
        return {"threshold": float(np.nextafter(thr[i], 2.0)) if i == 0 else float(thr[i]), "rule": f"max_fpr={max_fpr}",
                "val_fpr": float(fpr[i]), "val_tpr": float(tpr[i])}
    fnr = 1 - tpr
    i = int(np.argmin(np.abs(fnr - fpr)))
    return {"threshold": float(thr[i]), "rule": "equal_error_rate", "val_fpr": float(fpr[i]), "val_tpr": float(tpr[i]),
            "val_eer": float((fpr[i] + fnr[i]) / 2)}


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

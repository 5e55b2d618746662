"""Classification metrics through scikit-learn (no hand-rolled formulas) and their plots."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from sklearn import metrics as skm

from ..data.folders import CLASS_NAMES
from ..inference.calibration import expected_calibration_error


def compute_metrics(labels: np.ndarray, probs: np.ndarray, threshold: float = 0.5,
                    uncertain_band: float = 0.0, uncertain_range=None) -> dict:
    """Everything a user asks of a binary detector, on one labelled set (label 1 = AI-generated).

    `uncertain_range` (low, high; scalars or one per image) overrides threshold ± uncertain_band for the
    coverage figures: "real" at P(AI) <= low, "ai" at >= high, "uncertain" between."""
    labels = np.asarray(labels).astype(int)
    probs = np.asarray(probs, dtype=np.float64)
    pred = (probs >= threshold).astype(int)
    both = len(np.unique(labels)) == 2
    p, r, f, s = skm.precision_recall_fscore_support(labels, pred, labels=[0, 1], zero_division=0)
    out = {
        "n": int(len(labels)),
        "n_real": int((labels == 0).sum()),
        "n_ai": int((labels == 1).sum()),
        "threshold": float(threshold),
        "accuracy": float(skm.accuracy_score(labels, pred)),
        "precision": float(p[1]), "recall": float(r[1]), "f1": float(f[1]),
        "per_class": {CLASS_NAMES[c]: {"precision": float(p[c]), "recall": float(r[c]), "f1": float(f[c]),
                                       "support": int(s[c])} for c in (0, 1)},
        "macro_f1": float(np.mean(f)),
        "roc_auc": float(skm.roc_auc_score(labels, probs)) if both else None,
        "average_precision": float(skm.average_precision_score(labels, probs)) if both else None,
        "log_loss": float(skm.log_loss(labels, np.clip(probs, 1e-7, 1 - 1e-7), labels=[0, 1])),
        "ece": expected_calibration_error(probs, labels),
        "confusion_matrix": skm.confusion_matrix(labels, pred, labels=[0, 1]).tolist(),
        "classification_report": skm.classification_report(labels, pred, labels=[0, 1], target_names=list(CLASS_NAMES),
                                                            digits=4, zero_division=0),
    }
    if uncertain_range is None and uncertain_band > 0:
        uncertain_range = (threshold - uncertain_band, threshold + uncertain_band)
    if uncertain_range is not None:
        low, high = (np.broadcast_to(np.asarray(v, dtype=np.float64), probs.shape) for v in uncertain_range)
        confident = (probs <= low) | (probs >= high)
        said = (probs >= high).astype(int)
        out["uncertain_band"] = float(uncertain_band)
        if np.ndim(uncertain_range[0]) == 0:
            out["uncertain_range"] = [float(uncertain_range[0]), float(uncertain_range[1])]
        out["coverage"] = float(confident.mean())
        out["confident_accuracy"] = float((said[confident] == labels[confident]).mean()) if confident.any() else None
        out["confidently_wrong"] = float((confident & (said != labels)).mean())
    return out


def plot_metrics(labels: np.ndarray, probs: np.ndarray, m: dict, out_dir: Path, title: str) -> list[Path]:
    """Confusion matrix, ROC, precision-recall and reliability diagram as PNGs."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = []

    fig, ax = plt.subplots(figsize=(4, 4))
    skm.ConfusionMatrixDisplay(np.array(m["confusion_matrix"]), display_labels=list(CLASS_NAMES)).plot(
        ax=ax, colorbar=False, values_format="d")
    ax.set_title(f"{title}\naccuracy {m['accuracy']:.4f} @ t={m['threshold']:.3f}", fontsize=9)
    paths.append(out_dir / "confusion_matrix.png")
    fig.tight_layout(); fig.savefig(paths[-1], dpi=120); plt.close(fig)

    if m.get("roc_auc") is not None:
        fig, ax = plt.subplots(figsize=(4, 4))
        skm.RocCurveDisplay.from_predictions(labels, probs, ax=ax, name=f"AUC {m['roc_auc']:.4f}")
        ax.plot([0, 1], [0, 1], "k:", lw=0.8)
        ax.set_title(f"ROC — {title}", fontsize=9)
        paths.append(out_dir / "roc.png")
        fig.tight_layout(); fig.savefig(paths[-1], dpi=120); plt.close(fig)

        fig, ax = plt.subplots(figsize=(4, 4))
        skm.PrecisionRecallDisplay.from_predictions(labels, probs, ax=ax, name=f"AP {m['average_precision']:.4f}")
        ax.set_title(f"Precision-recall — {title}", fontsize=9)
        paths.append(out_dir / "precision_recall.png")
        fig.tight_layout(); fig.savefig(paths[-1], dpi=120); plt.close(fig)

    from sklearn.calibration import calibration_curve

    frac, mean_pred = calibration_curve(labels, probs, n_bins=15, strategy="uniform")
    fig, ax = plt.subplots(figsize=(4, 4))
    ax.plot([0, 1], [0, 1], "k:", lw=0.8, label="perfect")
    ax.plot(mean_pred, frac, "o-", label=f"model (ECE {m['ece']:.4f})")
    ax.set_xlabel("predicted P(AI)"); ax.set_ylabel("observed share AI"); ax.legend(fontsize=8)
    ax.set_title(f"Reliability — {title}", fontsize=9)
    paths.append(out_dir / "reliability.png")
    fig.tight_layout(); fig.savefig(paths[-1], dpi=120); plt.close(fig)
    return paths


def wilson(k: int, n: int) -> tuple[float, float] | None:
    """Wilson score 95% interval of a share k/n (None for n = 0; scipy's binomtest): unlike k/n +- 2 SE, it
    stays inside [0, 1] and is honest for the small counts most collections give."""
    if n == 0:
        return None
    from scipy.stats import binomtest

    ci = binomtest(int(k), int(n)).proportion_ci(confidence_level=0.95, method="wilson")
    return float(ci.low), float(ci.high)


def share_text(k: int, n: int, min_n: int = 20) -> str:
    """k of n as a percentage with its interval only from `min_n` up; below that, only the counts."""
    if n < min_n:
        return f"{k} of {n}"
    lo, hi = wilson(k, n)
    return f"{k / n:.0%} ({k}/{n}; 95% {lo:.0%}–{hi:.0%})"

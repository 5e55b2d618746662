"""Evaluation of a Detector on one or more labelled sets: metrics JSON, PNG plots, one summary table."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np

from ..data.folders import ImageSet, load_imageset
from ..data.groups import family_of, generator_of
from ..data.store import save_json
from ..inference.attribution import UNKNOWN, AttributionHead
from ..inference.detector import Detector
from .metrics import compute_metrics, plot_metrics


def _slug(source: str) -> str:
    name = Path(source).name
    for ext in (".tar.gz", ".tgz", ".tar"):
        if name.endswith(ext):
            name = name[: -len(ext)]
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", name) or "set"


def evaluation_part(s: ImageSet) -> ImageSet:
    """The part of a set to score: its test split if it has one, else all of it."""
    return s.split("test") if s.has_split("test") else s


def drop_train_identical(detector: Detector, s: ImageSet) -> tuple[ImageSet, int]:
    """Remove files byte-identical to the model's training data (so no figure scores a trained-on image)."""
    train = detector.train_digests()
    if not train:
        return s, 0
    mask = np.array([d[:8].tobytes() in train for d in s.digests], dtype=bool)
    return s.subset(np.flatnonzero(~mask)), int(mask.sum())


def evaluate_sets(detector: Detector, sources: list[str | Path], out_dir: Path | None = None,
                  exclude_train: bool = True, progress: bool = True, plots: bool = True) -> dict:
    """Score every set; drop files byte-identical to the model's training data; write JSON + PNGs per set."""
    results = {}
    for src in sources:
        full = load_imageset(src, _first(detector).spec, progress=progress)
        part, excluded = evaluation_part(full), 0
        if exclude_train:
            part, excluded = drop_train_identical(detector, part)
        feats = None
        if getattr(detector, "attribution", None) is not None:
            # the same call Detector.score_decoded makes when predicting: identical logits, features from that pass
            logits, feats = detector.logits_and_features(part.images, 256)
        if feats is not None:
            probs, routed, thr, rng = detector.calibrated(logits), None, detector.threshold, detector.uncertain_range
            attribution = evaluate_attribution(detector.attribution, feats, part.groups, part.labels, probs)
        else:
            probs, routed, thr, rng = score_part(detector, src, part, progress)
            attribution = None
        m = compute_metrics(part.labels, probs, thr, uncertain_range=rng)
        if routed is not None:
            m["routed"] = routed
        m["source"] = str(src)
        m["excluded_train_identical"] = excluded
        m["skipped_files"] = [f"{n}: {p}" for n, p in full.skipped]
        groups = by_source([family_of(g) for g in part.groups], part.labels, probs, thr)
        if groups:
            m["by_generator"] = groups
        if attribution:
            m["attribution"] = attribution
        key = _slug(str(src))
        while key in results:
            key += "_"
        if out_dir is not None:
            d = Path(out_dir) / key
            d.mkdir(parents=True, exist_ok=True)
            if plots:
                m["plots"] = [str(p) for p in plot_metrics(part.labels, probs, m, d, key)]
                if attribution:
                    m["plots"].append(str(_plot_confusion(attribution, d / f"{key}_attribution.png")))
            np.savez(d / "scores.npz", probs=probs, labels=part.labels, names=np.array(part.names, dtype=str))
            save_json(d / "metrics.json", m)
        results[key] = m
    summary = summarize(results)
    if out_dir is not None:
        save_json(Path(out_dir) / "evaluation.json", {"model": detector.model_id, "sets": results, "summary": summary})
    return {"model": detector.model_id, "sets": results, "summary": summary}


def _first(detector: Detector) -> Detector:
    """The detector whose spec loads a set first: a single model, or the auto detector's smallest-input member
    (cheap to decode, and its decoded sizes say where every file is routed)."""
    members = getattr(detector, "members", None)
    return min(members.values(), key=lambda m: m.spec.image_size * m.spec.n_tiles) if members else detector


def score_part(detector: Detector, src, part: ImageSet, progress: bool):
    """Calibrated P(AI) for every image of `part` (loaded with `_first(detector).spec`).

    For the auto detector each image is scored by the model `route` picks for its decoded size, the rest of
    the set re-decoded for that model only; the threshold is then per image (P(AI) is calibrated per model,
    and metrics use a shared 0.5 after shifting each model's threshold there: see `_to_common_threshold`).
    -> probs, {model: count} or None, threshold, (low, high) of the uncertain verdicts (per image for auto).
    """
    members = getattr(detector, "members", None)
    if not members:
        return detector.probabilities_from_arrays(part.images), None, detector.threshold, detector.uncertain_range
    routes = np.array([detector.route_name(int(h), int(w)) for h, w in part.sizes])
    probs, low, high = np.zeros(len(part)), np.zeros(len(part)), np.zeros(len(part))
    first = _first(detector)
    for name, member in members.items():
        idx = np.flatnonzero(routes == name)
        if not len(idx):
            continue
        if member is first:
            images = part.images[idx]
        else:
            wanted = [part.names[i] for i in idx]
            other = load_imageset(src, member.spec, progress=progress, only=set(wanted))
            pos = {n: j for j, n in enumerate(other.names)}
            keep = [k for k, n in enumerate(wanted) if n in pos]
            idx = idx[keep]
            images = other.images[[pos[wanted[k]] for k in keep]]
        probs[idx] = _to_common_threshold(member.probabilities_from_arrays(images), member.threshold)
        lo, hi = (_to_common_threshold(np.array([v]), member.threshold)[0] for v in member.uncertain_range)
        low[idx], high[idx] = lo, hi
    return probs, {k: int((routes == k).sum()) for k in members}, 0.5, (low, high)


def _to_common_threshold(p: np.ndarray, threshold: float) -> np.ndarray:
    """Shift calibrated probabilities in logit space so that `threshold` lands on 0.5: verdicts and ranking
    within one model are unchanged, and models with different operating points share one set of metrics."""
    p = np.clip(p, 1e-7, 1 - 1e-7)
    t = min(max(threshold, 1e-7), 1 - 1e-7)
    z = np.log(p / (1 - p)) - np.log(t / (1 - t))
    return 1 / (1 + np.exp(-z))


def by_generator(names: list[str], labels: np.ndarray, probs: np.ndarray, threshold: float) -> dict | None:
    """Per-generator breakdown when only file names say the generator (see `by_source`)."""
    return by_source([generator_of(n) or "" for n in names], labels, probs, threshold)


def by_source(sources: list[str], labels: np.ndarray, probs: np.ndarray, threshold: float) -> dict | None:
    """Per source (a generator and its real counterparts: the set's groups without their label): accuracy,
    ROC-AUC where the source holds both classes, and for a generator with no real images of its own, ROC-AUC
    against all the set's real images."""
    from sklearn.metrics import roc_auc_score

    gens = np.array(sources, dtype=object)
    kinds = sorted(set(gens) - {""})
    if len(kinds) < 2 or (gens == "").mean() > 0.5:
        return None
    real = probs[labels == 0]
    out = {}
    for g in kinds:
        m = gens == g
        y, p = labels[m], probs[m]
        both = len(np.unique(y)) == 2
        row = {"n": int(m.sum()), "n_ai": int(y.sum()), "accuracy": float(((p >= threshold) == (y == 1)).mean()),
               "roc_auc": float(roc_auc_score(y, p)) if both else None}
        if not both and y[0] == 1 and len(real):
            row["roc_auc_vs_all_real"] = float(roc_auc_score(np.r_[np.zeros(len(real)), np.ones(len(p))], np.r_[real, p]))
        out[g] = row
    return out


def summarize(results: dict) -> dict:
    keys = ("accuracy", "roc_auc", "average_precision", "f1", "ece", "coverage", "confident_accuracy")
    mean = {}
    for k in keys:
        vals = [r[k] for r in results.values() if r.get(k) is not None]
        mean[k] = float(np.mean(vals)) if vals else None
    return {"mean": mean, "n_sets": len(results)}


def _plot_confusion(a: dict, path: Path) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    cm, names = np.array(a["confusion_matrix"]), a["labels"]
    fig, ax = plt.subplots(figsize=(1.2 * len(names) + 2, 1.1 * len(names) + 1.5))
    ax.imshow(cm, cmap="Blues")
    ax.set_xticks(range(len(names)), names, rotation=30, ha="right")
    ax.set_yticks(range(len(names)), names)
    for i in range(len(names)):
        for j in range(len(names)):
            ax.text(j, i, str(cm[i, j]), ha="center", va="center")
    ax.set_xlabel("answer (family or unknown)")
    ax.set_ylabel("expected")
    ax.set_title("attribution of the set's AI images")
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def evaluate_attribution(head: AttributionHead, feats: np.ndarray, groups, labels: np.ndarray,
                         p_ai: np.ndarray | None = None) -> dict | None:
    """Attribution on an evaluated set: for its AI images whose group the head's fit mapped to a family (or to
    "unknown"), top-1 over the known families, share named (under the head's naming rule, with each image's
    P(AI) `p_ai`), share of unknown-family images rejected, and the confusion matrix; None when no AI image of
    the set has a known expected answer."""
    from sklearn.metrics import confusion_matrix

    table = head.info.get("group_family", {})
    want = np.array([table.get(family_of(str(g)), "") if y == 1 else "" for g, y in zip(groups, labels)], dtype=object)
    use = want != ""
    if not use.any():
        return None
    got = np.array([p["name"] for p in head.predict(feats[use], None if p_ai is None else np.asarray(p_ai)[use])],
                   dtype=object)
    want = want[use]
    known = want != UNKNOWN
    top = np.array(head.families)[head.probabilities(feats[use]).argmax(1)]
    labels_cm = head.families + [UNKNOWN]
    return {"n": int(use.sum()), "n_known": int(known.sum()), "n_unknown": int((~known).sum()),
            "top1": float((top[known] == want[known]).mean()) if known.any() else None,
            "named_correctly": float((got[known] == want[known]).mean()) if known.any() else None,
            "unknown_rejected": float((got[~known] == UNKNOWN).mean()) if (~known).any() else None,
            "labels": labels_cm, "confusion_matrix": confusion_matrix(want.astype(str), got.astype(str),
                                                                      labels=labels_cm).tolist(),
            "leave_one_family_out": head.info.get("open_set")}

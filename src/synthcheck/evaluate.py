"""Evaluation of a Detector on one or more labelled sets: metrics JSON, PNG plots, one summary table."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np

from .checkpoint import load_train_digests
from .data import ImageSet, load_imageset, save_json
from .detector import Detector
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
    train = load_train_digests(detector.directory) if detector.directory is not None else set()
    if not train:
        return s, 0
    mask = np.array([d[:8].tobytes() in train for d in s.digests], dtype=bool)
    return s.subset(np.flatnonzero(~mask)), int(mask.sum())


def evaluate_sets(detector: Detector, sources: list[str | Path], out_dir: Path | None = None,
                  exclude_train: bool = True, progress: bool = True, plots: bool = True) -> dict:
    """Score every set; drop files byte-identical to the model's training data; write JSON + PNGs per set."""
    results = {}
    for src in sources:
        full = load_imageset(src, detector.spec, progress=progress)
        part, excluded = evaluation_part(full), 0
        if exclude_train:
            part, excluded = drop_train_identical(detector, part)
        probs = detector.probabilities_from_arrays(part.images)
        m = compute_metrics(part.labels, probs, detector.threshold, detector.uncertain_band)
        m["source"] = str(src)
        m["excluded_train_identical"] = excluded
        m["skipped_files"] = [f"{n}: {p}" for n, p in full.skipped]
        groups = by_generator(part.names, part.labels, probs, detector.threshold)
        if groups:
            m["by_generator"] = groups
        key = _slug(str(src))
        while key in results:
            key += "_"
        if out_dir is not None:
            d = Path(out_dir) / key
            if plots:
                m["plots"] = [str(p) for p in plot_metrics(part.labels, probs, m, d, key)]
            np.savez(d / "scores.npz", probs=probs, labels=part.labels)
            save_json(d / "metrics.json", m)
        results[key] = m
    summary = summarize(results)
    if out_dir is not None:
        save_json(Path(out_dir) / "evaluation.json", {"model": detector.model_id, "sets": results, "summary": summary})
    return {"model": detector.model_id, "sets": results, "summary": summary}


_LABEL_WORDS = {"real", "fake", "ai", "img", "image", "jpg", "jpeg", "png", "webp", "synthetic", "generated"}


def generator_of(name: str) -> str | None:
    """The generator or source a file name carries ('372_stylegan_fake.png' -> 'stylegan',
    'diffusion_000225.jpg' -> 'diffusion', 'coco_0012.jpg' -> 'coco'); None when it carries none."""
    stem = Path(name).stem.lower()
    words = [w for w in re.split(r"[^a-z0-9]+", stem) if w.isalpha() and w not in _LABEL_WORDS and len(w) > 1]
    return "_".join(words) or None


def by_generator(names: list[str], labels: np.ndarray, probs: np.ndarray, threshold: float) -> dict | None:
    """Per-generator accuracy (and ROC-AUC where a group holds both classes), when names say the generator."""
    from sklearn.metrics import roc_auc_score

    gens = np.array([generator_of(n) or "" for n in names])
    kinds = sorted(set(gens) - {""})
    if len(kinds) < 2 or (gens == "").mean() > 0.5:
        return None
    out = {}
    for g in kinds:
        m = gens == g
        y, p = labels[m], probs[m]
        both = len(np.unique(y)) == 2
        out[g] = {"n": int(m.sum()), "n_ai": int(y.sum()), "accuracy": float(((p >= threshold) == (y == 1)).mean()),
                  "roc_auc": float(roc_auc_score(y, p)) if both else None}
    return out


def summarize(results: dict) -> dict:
    keys = ("accuracy", "roc_auc", "average_precision", "f1", "ece", "coverage", "confident_accuracy")
    mean = {}
    for k in keys:
        vals = [r[k] for r in results.values() if r.get(k) is not None]
        mean[k] = float(np.mean(vals)) if vals else None
    return {"mean": mean, "n_sets": len(results)}

"""Shortcuts measured, not assumed: for a finished `synthcheck crossval` run,

1. one-feature classifiers (file format, JPEG quality, size, aspect, bits per pixel, EXIF presence, and the
   manifest's photo/illustration look), each trained and scored leave-sources-out on the same folds as the
   model: if one alone separated unseen sources, the model's figures could come from it;
2. the model's leave-sources-out figures with a feature equalised (every image re-encoded at one JPEG
   quality, every image cut to one size) and under what social media do (JPEG 75, half size): each pool
   image re-scored by the fold model that never saw its source.

    python scripts/shortcut_study.py runs/cv_both_social [runs/cv_other ...] --out reports/photo_v2/shortcuts
"""

from __future__ import annotations

import argparse
import io
import json
from pathlib import Path

import numpy as np
from PIL import Image

from synthcheck.analysis.audit import _features
from synthcheck.analysis.loso import own_calibration
from synthcheck.data.folders import iter_source
from synthcheck.data.groups import lookup, manifest_path, read_manifest
from synthcheck.data.preprocess import PreprocessSpec
from synthcheck.data.store import digest, save_json
from synthcheck.data.transforms import CONDITIONS
from synthcheck.inference.calibration import probabilities, selective_figures
from synthcheck.inference.scoring import score_logits
from synthcheck.models.checkpoint import load_model
from synthcheck.training.crossval import (CrossvalConfig, _fold_calibration, assign_folds, condition_tiles, fold_save_context,
                                         load_pool, pool_camera_tables)


def load_run(run: Path) -> tuple[CrossvalConfig, dict]:
    raw = json.loads((run / "config.json").read_text())
    from synthcheck.data.augment import AugmentConfig
    from synthcheck.training.config import TrainConfig

    tr = dict(raw.pop("train"))
    aug = AugmentConfig(**tr.pop("augment"))
    cfg = CrossvalConfig(train=TrainConfig.from_dict({**tr, "augment": aug}), **raw)
    return cfg, json.loads((run / "crossval.json").read_text())


def file_features(cfg: CrossvalConfig, digests: np.ndarray) -> list[dict]:
    """Per pool image (in pool order): file-level features a detector could cheat on."""
    by_digest = {}
    for src in cfg.sources:
        manifest = read_manifest(manifest_path(src))
        for r in iter_source(src):
            f = _features((r.name, r.data))
            try:
                f["exif"] = int(len(Image.open(io.BytesIO(r.data)).getexif()) > 0)
            except Exception:
                f["exif"] = 0
            f["looks"] = (lookup(manifest, r.name) or {}).get("looks", "")
            by_digest[digest(r.data)] = f
    return [by_digest[d.tobytes()] for d in digests]


FEATURES = {
    "file format": lambda f: {"JPEG": 0, "PNG": 1}.get(f.get("format"), 2),
    "JPEG quality": lambda f: f.get("jpeg_quality") or -1,
    "size (pixels)": lambda f: f.get("width", 0) * f.get("height", 0),
    "aspect ratio": lambda f: max(f.get("width", 1), f.get("height", 1)) / max(1, min(f.get("width", 1), f.get("height", 1))),
    "bits per pixel": lambda f: 8 * f["file_size"] / max(1, f.get("width", 1) * f.get("height", 1)),
    "EXIF present": lambda f: f["exif"],
    "looks (photo / illustration)": lambda f: {"photo": 0, "illustration": 1}.get(f["looks"], 2),
}


def aucs(scores: np.ndarray, labels: np.ndarray, groups: np.ndarray) -> dict:
    """Pooled ROC-AUC and the mean over AI groups of each group's ROC-AUC against all real images."""
    from sklearn.metrics import roc_auc_score

    real = scores[labels == 0]
    per = {g: float(roc_auc_score(np.r_[np.zeros(len(real)), np.ones((groups == g).sum())], np.r_[real, scores[groups == g]]))
           for g in np.unique(groups) if g.startswith("ai:")}
    return {"roc_auc": float(roc_auc_score(labels, scores)), "mean_ai_group_roc_auc": float(np.mean(list(per.values()))),
            "per_ai_group": per}


def one_feature_study(feats: list[dict], labels, groups, folds: np.ndarray) -> dict:
    """Each feature alone, as a depth-3 decision tree trained on the folds' training sources (generated and
    real images of the pool, as the model) and scored on the left-out ones."""
    from sklearn.tree import DecisionTreeClassifier

    out = {}
    for name, fn in FEATURES.items():
        x = np.array([[fn(f)] for f in feats], dtype=np.float64)
        s = np.zeros(len(labels))
        for k in np.unique(folds):
            tr, te = folds != k, folds == k
            tree = DecisionTreeClassifier(max_depth=3, min_samples_leaf=10, class_weight="balanced", random_state=0).fit(x[tr], labels[tr])
            s[te] = tree.predict_proba(x[te])[:, 1] if len(tree.classes_) == 2 else 0.5
        a = aucs(s + 1e-9 * np.random.default_rng(0).random(len(s)), labels, groups)  # ties broken, not ordered
        out[name] = {"roc_auc": a["roc_auc"], "mean_ai_group_roc_auc": a["mean_ai_group_roc_auc"]}
    return out


def condition_study(run: Path, cfg: CrossvalConfig, pool, folds: np.ndarray, op: dict, conditions) -> dict:
    """The model's leave-sources-out figures when every image is transformed the same way."""
    spec = PreprocessSpec(cfg.train.crop, "tiles", tiles=cfg.train.tiles)
    labels, groups = pool.pool.labels, np.asarray(pool.pool.groups, dtype=str)
    out = {}
    models = {k: load_model(run / f"fold_{k}" / "model")[0] for k in np.unique(folds)}
    # the processing swap (label-dependent) takes each fold's camera tables from its training real photos only
    tables = pool_camera_tables(cfg, pool) if any(CONDITIONS[c].label_dependent for c in conditions) else None
    fold_of = assign_folds(pool.families, cfg.folds, cfg.seed)
    for name in conditions:
        logits = np.zeros(len(labels))
        for k, model in models.items():
            idx = np.flatnonzero(folds == k)
            ctx = None if tables is None else fold_save_context(pool, tables, fold_of, k, cfg.seed)
            tiles = condition_tiles(pool.pool, idx, name, spec, ctx)
            # centred on the fold's own operating point, as the report's left-out scores are
            z = np.load(run / f"fold_{k}" / "scores.npz")
            logits[idx] = own_calibration(score_logits(model, tiles, 256), *_fold_calibration(run / f"fold_{k}", z))
        a = aucs(logits, labels, groups)
        p = probabilities(logits, op["temperature"])
        sel = selective_figures(p, labels, op["low"], op["high"])
        worst = max(selective_figures(p[groups == g], labels[groups == g], op["low"], op["high"])["confidently_wrong"]
                    for g in np.unique(groups))
        out[name] = {**a, "coverage": sel["coverage"], "confidently_wrong": sel["confidently_wrong"],
                     "worst_group_confidently_wrong": worst}
        print(run.name, name, {k: round(v, 3) for k, v in out[name].items() if isinstance(v, float)}, flush=True)
    return out


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("runs", nargs="+", type=Path)
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--conditions", nargs="*", default=list(CONDITIONS))
    args = ap.parse_args(argv)
    result = {"runs": {}}
    for i, run in enumerate(args.runs):
        cfg, rep = load_run(run)
        pool = load_pool(cfg, progress=False)
        fold_of = assign_folds(pool.families, cfg.folds, cfg.seed)
        folds = np.array([fold_of[f] for f in pool.families])
        entry = {"conditions": condition_study(run, cfg, pool, folds, rep["operating_point"], args.conditions)}
        if i == 0:  # file features do not depend on the model: once
            feats = file_features(cfg, pool.pool.digests)
            result["one_feature"] = one_feature_study(feats, pool.pool.labels, np.asarray(pool.pool.groups, str), folds)
        result["runs"][run.name] = entry
        save_json(args.out / "shortcuts.json", result)
    write_markdown(result, args.out / "shortcuts.md")


def write_markdown(res: dict, path: Path) -> None:
    lines = ["# Shortcuts, measured leave-sources-out", ""]
    if "one_feature" in res:
        lines += ["One feature alone (a depth-3 tree trained on the same folds' training sources, scored on the left-out "
                  "ones). Near 0.5 means the feature does not separate unseen sources:", "",
                  "| feature | pooled ROC-AUC | mean ROC-AUC over AI groups |", "|---|---|---|"]
        lines += [f"| {k} | {v['roc_auc']:.3f} | {v['mean_ai_group_roc_auc']:.3f} |" for k, v in res["one_feature"].items()]
    for run, entry in res["runs"].items():
        lines += ["", f"Model `{run}`, every image transformed the same way, scored by the fold model that never saw its "
                  "source (operating point: the run's own, from its crossval.json, fitted on all families' left-out scores; "
                  "not cross-fitted):", "",
                  "| condition | pooled ROC-AUC | mean ROC-AUC over AI groups | answered | confidently wrong | worst group |",
                  "|---|---|---|---|---|---|"]
        lines += [f"| {k} | {v['roc_auc']:.3f} | {v['mean_ai_group_roc_auc']:.3f} | {v['coverage']:.2f} | "
                  f"{v['confidently_wrong']:.3f} | {v['worst_group_confidently_wrong']:.2f} |" for k, v in entry["conditions"].items()]
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("\n".join(lines) + "\n")


if __name__ == "__main__":
    main()

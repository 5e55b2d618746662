"""Dataset audit: duplicates within/across splits and shortcut features a detector could cheat on.

A detector that scores well because AI images are PNG and real ones JPEG, or
because test files also sit in the training set, has learnt nothing useful.
The audit measures both before anyone trusts a figure.
"""

from __future__ import annotations

import io
import os
from collections import Counter, defaultdict
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import numpy as np
from PIL import Image

from ..data.folders import CLASS_NAMES, iter_source
from ..data.store import digest, save_json

# IJG standard luminance table (quality 50), for estimating JPEG quality from a file's own table
_IJG_LUMA = np.array([16, 11, 10, 16, 24, 40, 51, 61, 12, 12, 14, 19, 26, 58, 60, 55, 14, 13, 16, 24, 40, 57, 69, 56,
                      14, 17, 22, 29, 51, 87, 80, 62, 18, 22, 37, 56, 68, 109, 103, 77, 24, 35, 55, 64, 81, 104, 113, 92,
                      49, 64, 78, 87, 103, 121, 120, 101, 72, 92, 95, 98, 112, 100, 103, 99], dtype=np.float64)


def jpeg_quality(img: Image.Image) -> float | None:
    """Estimate IJG quality (1-100) from the luminance quantization table; None if not a JPEG."""
    q = getattr(img, "quantization", None)
    if not q or 0 not in q:
        return None
    table = np.array(q[0], dtype=np.float64)  # Pillow gives it in natural (zigzag-agnostic) order for comparison of sums
    scale = 100.0 * table.sum() / _IJG_LUMA.sum()
    quality = (200.0 - scale) / 2.0 if scale <= 100 else 5000.0 / scale
    return float(np.clip(round(quality), 1, 100))


def phash(img: Image.Image) -> str:
    """The 64-bit perceptual hash (DCT of a 32 x 32 grey copy) every duplicate check here compares."""
    import imagehash

    return str(imagehash.phash(img.convert("RGB")))


def _features(args) -> dict:
    name, data = args
    row = {"name": name, "file_size": len(data), "digest": digest(data).hex()}
    try:
        img = Image.open(io.BytesIO(data))
        row.update(format=img.format or "?", mode=img.mode, width=img.size[0], height=img.size[1],
                   jpeg_quality=jpeg_quality(img))
        img.load()
        row["phash"] = phash(img)
    except Exception as e:
        row.update(format="unreadable", error=f"{type(e).__name__}: {e}")
    return row


def _single_feature_auroc(values, labels) -> float | None:
    """How well one feature alone separates the classes: max(AUROC, 1-AUROC); categorical values are
    scored by their share of AI images (an in-sample, optimistic figure: that is the point of a warning)."""
    from sklearn.metrics import roc_auc_score

    labels = np.asarray(labels)
    if len(np.unique(labels)) < 2:
        return None
    vals = list(values)
    if any(isinstance(v, str) or v is None for v in vals):
        keys = ["<none>" if v is None else str(v) for v in vals]
        share = defaultdict(list)
        for k, y in zip(keys, labels):
            share[k].append(y)
        mean = {k: float(np.mean(v)) for k, v in share.items()}  # once per category, not once per file
        score = np.array([mean[k] for k in keys])
    else:
        score = np.asarray(vals, dtype=np.float64)
    if np.all(score == score[0]):
        return 0.5
    auc = roc_auc_score(labels, score)
    return float(max(auc, 1 - auc))


def audit(sources: list[str | Path], out_dir: Path | None = None, workers: int | None = None,
          progress: bool = True, flag_at: float = 0.75) -> dict:
    from tqdm.auto import tqdm

    items = []
    for s in sources:
        for r in iter_source(s):
            split = r.split or Path(str(s)).name
            items.append((r.name, r.data, r.label, split, str(s)))
    if not items:
        raise ValueError("no labelled images found in " + ", ".join(map(str, sources)))
    workers = workers or os.cpu_count() or 1
    jobs = [(n, d) for n, d, *_ in items]
    with ProcessPoolExecutor(workers) as pool:
        rows = list(tqdm(pool.map(_features, jobs, chunksize=256), total=len(jobs), desc="auditing", unit="img",
                         disable=not progress))
    for row, (_, _, label, split, src) in zip(rows, items):
        row.update(label=label, split=split, source=src)
    labels = np.array([r["label"] for r in rows])

    # exact duplicates
    by_digest = defaultdict(list)
    for i, r in enumerate(rows):
        by_digest[r["digest"]].append(i)
    groups = [g for g in by_digest.values() if len(g) > 1]
    within = Counter()
    across = Counter()
    conflicting = 0
    examples = []
    for g in groups:
        splits = {rows[i]["split"] for i in g}
        if len({rows[i]["label"] for i in g}) > 1:
            conflicting += 1
        for sp in splits:
            n_sp = sum(rows[i]["split"] == sp for i in g)
            if n_sp > 1:
                within[sp] += n_sp - 1
        if len(splits) > 1:
            key = " & ".join(sorted(splits))
            across[key] += 1
            if len(examples) < 10:
                examples.append([f"{rows[i]['split']}/{rows[i]['name'].split('/', 1)[-1]}" for i in g])
    # near duplicates across splits: identical perceptual hash, different bytes
    by_phash = defaultdict(list)
    for i, r in enumerate(rows):
        if "phash" in r:
            by_phash[r["phash"]].append(i)
    near = Counter()
    near_examples = []
    for g in by_phash.values():
        if len({rows[i]["split"] for i in g}) > 1 and len({rows[i]["digest"] for i in g}) > 1:
            near[" & ".join(sorted({rows[i]["split"] for i in g}))] += 1
            if len(near_examples) < 10:
                near_examples.append([f"{rows[i]['split']}/{rows[i]['name'].split('/', 1)[-1]}" for i in g])

    # shortcut features
    feats = {}
    for f in ("width", "height", "format", "mode", "file_size", "jpeg_quality"):
        vals = [r.get(f) for r in rows]
        per_class = {}
        for c in (0, 1):
            v = [x for x, y in zip(vals, labels) if y == c]
            if f in ("format", "mode"):
                per_class[CLASS_NAMES[c]] = dict(Counter(map(str, v)).most_common(5))
            else:
                num = np.array([x for x in v if x is not None], dtype=np.float64)
                per_class[CLASS_NAMES[c]] = ({"median": float(np.median(num)), "p05": float(np.percentile(num, 5)),
                                              "p95": float(np.percentile(num, 95)), "missing": len(v) - len(num)}
                                             if len(num) else {"missing": len(v)})
        auc = _single_feature_auroc(vals, labels)
        feats[f] = {"per_class": per_class, "single_feature_auroc": auc, "flagged": bool(auc is not None and auc >= flag_at)}

    report = {
        "sources": [str(s) for s in sources],
        "n_files": len(rows),
        "per_split": {sp: dict(Counter(CLASS_NAMES[r["label"]] for r in rows if r["split"] == sp))
                      for sp in sorted({r["split"] for r in rows})},
        "unreadable": [r["name"] for r in rows if r.get("format") == "unreadable"][:50],
        "exact_duplicates": {"groups": len(groups), "extra_copies_within_split": dict(within),
                             "groups_across_splits": dict(across), "groups_with_conflicting_labels": conflicting,
                             "examples_across_splits": examples},
        "near_duplicates_across_splits": {"groups": dict(near), "rule": "identical 64-bit pHash, different bytes",
                                          "examples": near_examples},
        "shortcut_features": feats,
        "flag_threshold_auroc": flag_at,
    }
    if out_dir is not None:
        out_dir = Path(out_dir)
        save_json(out_dir / "audit.json", report)
        _plot(rows, out_dir)
    return report


def _plot(rows, out_dir: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(9, 3.5))
    for ax, f in zip(axes, ("file_size", "jpeg_quality")):
        for c in (0, 1):
            v = [r.get(f) for r in rows if r["label"] == c and r.get(f) is not None]
            if v:
                ax.hist(v, bins=40, alpha=0.6, label=CLASS_NAMES[c], density=True)
        ax.set_title(f"{f} by class"); ax.legend()
    fig.tight_layout()
    fig.savefig(out_dir / "audit_features.png", dpi=110)
    plt.close(fig)

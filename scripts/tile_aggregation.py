"""Are an image's tile scores best combined by their mean? (issue "Answer on photos it never saw", direction 2)

For a finished `synthcheck crossval` run, every left-out image's per-tile logits -- from the fold model that never
saw its source, on the files as they came and on the band's copies -- combined by several rules, each reported
as crossval reports a run (same pool, folds, per-fold centre and cross-fitted band), plus the rule chosen nested:
each fold's images combined by the rule that ranked the *other* folds' left-out images best (mean ROC-AUC over
AI families). The per-fold centre is the fold's own (fitted for the mean), so rules that shift scores are not
re-centred: that is what a shipped change of rule would get without refitting calibration.

    python scripts/tile_aggregation.py runs/cv_v3_base --out reports/photo_v3/ablation/tile_aggregation
    python scripts/ablation_table.py --families "mean (v2.1 recipe)=.../tile_aggregation/mean/crossval.json" ...
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np

from synthcheck.analysis.loso import loso_report, mean_ai_auc, own_calibration
from synthcheck.data.store import save_json
from synthcheck.inference.scoring import score_logits
from synthcheck.models.checkpoint import load_model
from synthcheck.training.config import as_tiles, model_spec
from synthcheck.training.crossval import CrossvalConfig, _fold_calibration, condition_tiles, limit_units, load_pool


def _trimmed(z: np.ndarray) -> np.ndarray:
    k = z.shape[1] // 4
    s = np.sort(z, 1)
    return s[:, k:z.shape[1] - k].mean(1)


def _top_half(z: np.ndarray) -> np.ndarray:
    s = np.sort(z, 1)
    return s[:, s.shape[1] // 2:].mean(1)


def _prob_mean(z: np.ndarray) -> np.ndarray:
    p = np.clip((1 / (1 + np.exp(-z))).mean(1), 1e-6, 1 - 1e-6)
    return np.log(p / (1 - p))


RULES = {"mean": lambda z: z.mean(1), "median": lambda z: np.median(z, 1), "trimmed mean (middle half)": _trimmed,
         "top half mean": _top_half, "max": lambda z: z.max(1), "mean probability": _prob_mean}


def tile_logits(run: Path, cfg: CrossvalConfig, pool, k: int, conditions: list[str]) -> dict[str, np.ndarray]:
    """[n, T] logits of fold k's left-out images, as they came and per condition; cached beside the fold."""
    fdir = run / f"fold_{k}"
    z = np.load(fdir / "scores.npz")
    idx, spec = z["index"], model_spec(cfg.train)
    cache = fdir / "tile_logits.npz"
    if cache.exists():
        c = np.load(cache)
        if np.array_equal(c["index"], idx) and all(f"c{i}" in c for i in range(len(conditions))):
            return {"as is": c["as_is"], **{n: c[f"c{i}"] for i, n in enumerate(conditions)}}
    model = load_model(fdir / "model")[0]

    def per_tile(tiles: np.ndarray) -> np.ndarray:
        n, t = tiles.shape[:2]
        flat = tiles.reshape(n * t, *tiles.shape[2:])
        return np.concatenate([score_logits(model, flat[i:i + 1024], 256) for i in range(0, len(flat), 1024)]).reshape(n, t)

    out = {"as is": per_tile(as_tiles(pool.pool.subset(idx), spec).images)}
    # the mean of these is the fold's stored left-out logit: the same pixels, the same network
    if not np.allclose(out["as is"].mean(1), z["logits"], atol=2e-2):
        raise SystemExit(f"{fdir}: per-tile logits do not average to the stored scores; the run changed")
    for c in conditions:
        out[c] = np.concatenate([per_tile(condition_tiles(pool.pool, part, c, spec))
                                 for part in np.array_split(idx, max(1, len(idx) // 128))])
    np.savez(cache, index=idx, as_is=out["as is"], **{f"c{i}": out[c] for i, c in enumerate(conditions)})
    return out


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("run", type=Path)
    ap.add_argument("--out", type=Path, required=True)
    args = ap.parse_args()
    cfg = CrossvalConfig.from_run(args.run)
    cfg.validate()
    pool = load_pool(cfg, progress=False)
    conds = list(cfg.band_conditions)
    n = len(pool.pool)
    fold = np.full(n, -1)
    per = {r: {c: np.full(n, np.nan) for c in ["as is"] + conds} for r in RULES}
    for k in range(cfg.folds):
        z = np.load(args.run / f"fold_{k}" / "scores.npz")
        idx = z["index"]
        fold[idx] = k
        centre = _fold_calibration(args.run / f"fold_{k}", z)
        for c, t in tile_logits(args.run, cfg, pool, k, conds).items():
            for r, fn in RULES.items():
                per[r][c][idx] = own_calibration(fn(t), *centre)
        print(f"fold {k}: {len(idx)} images", flush=True)
    y, fam = pool.pool.labels.astype(int), pool.families
    units = limit_units(cfg, pool)

    def report(scores: dict[str, np.ndarray]) -> dict:
        return loso_report(scores["as is"], y, pool.pool.groups, fam, pool.categories, cfg.max_wrong_group,
                           cfg.max_wrong_pooled, conditions={c: scores[c] for c in conds}, limit_groups=units)

    # nested: fold k takes the rule that ranks the other folds' left-out images best
    chosen, nested = {}, {c: np.full(n, np.nan) for c in ["as is"] + conds}
    for k in range(cfg.folds):
        rest = fold != k
        lim = np.asarray(units if units is not None else pool.pool.groups, dtype=object)
        score = {r: mean_ai_auc(per[r]["as is"][rest], y[rest], lim[rest]) for r in RULES}
        chosen[k] = max(score, key=score.get)
        for c in nested:
            nested[c][fold == k] = per[chosen[k]][c][fold == k]
    args.out.mkdir(parents=True, exist_ok=True)
    summary = {}
    for name, scores in [*per.items(), ("nested choice", nested)]:
        rep = report(scores)
        d = args.out / name.replace(" ", "_").replace("(", "").replace(")", "")
        d.mkdir(exist_ok=True)
        save_json(d / "crossval.json", rep)
        summary[name] = {"pooled_roc_auc": rep["pooled"]["roc_auc"], "mean_ai_family_roc_auc": rep["pooled"]["mean_ai_group_roc_auc"],
                         "answered": rep["pooled"]["coverage"],
                         **{f"{c} roc_auc": rep["conditions"][c]["roc_auc"] for c in conds}}
        print(name, json.dumps({k: round(v, 3) for k, v in summary[name].items()}), flush=True)
    save_json(args.out / "tile_aggregation.json", {"run": str(args.run), "rules": summary,
                                                   "nested_choice_by_fold": chosen,
                                                   "command": f"python scripts/tile_aggregation.py {args.run} --out {args.out}"})


if __name__ == "__main__":
    main()

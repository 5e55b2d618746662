"""Is one ablation row really better than another? A paired bootstrap over families on two crossval runs of the
same pool (issue "Answer on photos it never saw"): families (each label's family, the unit the folds leave out
whole) are drawn with replacement, both runs' left-out scores are judged on the same draw, and the 95% interval
of the difference in pooled ROC-AUC and in the mean ROC-AUC over AI families is reported. An interval that holds
zero says the two rows are not told apart by this pool, whatever their point figures.

    python scripts/paired_bootstrap.py runs/cv_v3_base runs/photo_v3 runs/cv_v3_224 runs/stack_base_pairs \
        --out reports/photo_v3/ablation/paired_bootstrap.json

The first run is the reference; each other run is compared with it. Runs are folders holding loso_scores.npz.
Where both runs reported the everyday panel (crossval `report_conditions`), the mean over AI families of each
family's worst-of-panel ROC-AUC is compared too: the crossval gate for a new photo model.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np
from sklearn.metrics import roc_auc_score

from synthcheck.analysis.loso import mean_ai_auc, worst_per_unit


def load(run: Path) -> dict:
    if not (run / "loso_scores.npz").exists():
        raise SystemExit(f"{run}: no loso_scores.npz (not a finished crossval or stack run)")
    z = np.load(run / "loso_scores.npz", allow_pickle=False)
    from synthcheck.data.transforms import PANEL

    names = [str(c) for c in z["condition_names"]] if "condition_names" in z else []
    panel = {c: z["condition_logits"][i].astype(np.float64) for i, c in enumerate(names) if c in PANEL}
    return {"logits": z["logits"].astype(np.float64), "labels": z["labels"], "families": z["families"].astype(str),
            "digests": z["digests"], "panel": panel}


def worst_of_panel(panel: dict, y: np.ndarray, u: np.ndarray) -> float:
    """Mean over AI units of each unit's worst ROC-AUC over the panel's copies (the crossval report's own
    `worst_per_unit`): the crossval gate of issue "Learn the generator, not the file"."""
    return float(np.mean(list(worst_per_unit(panel, y, u).values())))


def figures(logits: np.ndarray, labels: np.ndarray, units: np.ndarray) -> tuple[float, float]:
    """Pooled ROC-AUC and the mean over AI units of each one's ROC-AUC against every real image (the
    crossval report's own `mean_ai_auc`)."""
    return float(roc_auc_score(labels, logits)), mean_ai_auc(logits, labels, units)


def paired(a: dict, b: dict, n_boot: int, seed: int) -> dict:
    units = np.array([f"{'ai' if y else 'real'}:{f}" for y, f in zip(a["labels"], a["families"])])
    names = np.unique(units)
    members = {u: np.flatnonzero(units == u) for u in names}
    rng = np.random.default_rng(seed)
    both = sorted(set(a["panel"]) & set(b["panel"]))
    pa, pb = ({c: a["panel"][c] for c in both}, {c: b["panel"][c] for c in both}) if both else ({}, {})
    fa, fb = figures(a["logits"], a["labels"], units), figures(b["logits"], a["labels"], units)
    if both:
        fa += (worst_of_panel(pa, a["labels"], units),)
        fb += (worst_of_panel(pb, a["labels"], units),)
    diffs = []
    for _ in range(n_boot):
        draw = rng.choice(names, len(names), replace=True)
        while not (any(d.startswith("ai:") for d in draw) and any(d.startswith("real:") for d in draw)):
            draw = rng.choice(names, len(names), replace=True)
        idx = np.concatenate([members[u] for u in draw])
        # each drawn copy of a family is its own unit in the mean over AI families
        copy = np.concatenate([np.full(len(members[u]), f"{u}#{i}") for i, u in enumerate(draw)])
        ra = figures(a["logits"][idx], a["labels"][idx], copy)
        rb = figures(b["logits"][idx], a["labels"][idx], copy)
        row = [rb[0] - ra[0], rb[1] - ra[1]]
        if both:
            y = a["labels"][idx]
            row.append(worst_of_panel({c: v[idx] for c, v in pb.items()}, y, copy)
                       - worst_of_panel({c: v[idx] for c, v in pa.items()}, y, copy))
        diffs.append(row)
    d = np.array(diffs)
    out = {"panel_conditions": both}
    keys = ("pooled_roc_auc", "mean_ai_family_roc_auc") + (("worst_of_panel_mean_ai_family_roc_auc",) if both else ())
    for j, key in enumerate(keys):
        lo, hi = np.percentile(d[:, j], [2.5, 97.5])
        out[key] = {"reference": round(fa[j], 4), "other": round(fb[j], 4), "difference": round(fb[j] - fa[j], 4),
                    "ci95": [round(float(lo), 4), round(float(hi), 4)],
                    "share_of_draws_other_better": round(float((d[:, j] > 0).mean()), 3)}
    return out


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("runs", nargs="+", type=Path, help="crossval run folders; the first is the reference")
    ap.add_argument("--n-boot", type=int, default=1000)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", type=Path, required=True)
    args = ap.parse_args(argv)
    if len(args.runs) < 2:
        ap.error("give a reference run and at least one other")
    ref = load(args.runs[0])
    res = {"command": "python scripts/paired_bootstrap.py " + " ".join(sys.argv[1:]), "reference": str(args.runs[0]),
           "unit": "each label's family (families drawn with replacement)", "n_boot": args.n_boot, "comparisons": {}}
    for run in args.runs[1:]:
        other = load(run)
        if not np.array_equal(other["digests"], ref["digests"]):
            raise SystemExit(f"{run}: its pool is not {args.runs[0]}'s (other images or order)")
        res["comparisons"][str(run)] = c = paired(ref, other, args.n_boot, args.seed)
        print(f"{run}: " + "; ".join(f"{k} {v['other']:.3f} vs {v['reference']:.3f}, difference {v['difference']:+.3f} "
                                      f"(95% {v['ci95'][0]:+.3f} to {v['ci95'][1]:+.3f})" for k, v in c.items()
                                      if isinstance(v, dict)))
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(res, indent=2) + "\n")


if __name__ == "__main__":
    main()

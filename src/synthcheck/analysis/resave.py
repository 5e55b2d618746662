"""The re-save checks of the issue "Learn the generator, not the file", per set: does saving every file again the
same way move the verdict (paired median shift of P(AI)) or take ranking away (ROC-AUC change)?

One function for every place they are measured (crossval's yardstick per real source and AI family, the lockbox per
collection), so the limits are read the same way everywhere. A unit's ROC-AUC is the lockbox's definition: an AI unit
against every real image, a real unit against every AI image, on the same copy of both classes.
"""

from __future__ import annotations

import numpy as np

# The Musts: |median shift| of real photos and of AI images re-saved as Pillow JPEG 92 4:2:0, and the ROC-AUC
# change with both classes re-saved at q92 and at q75 ("no worse than").
LIMITS = {"real_shift": ("JPEG 92 4:2:0", 0.03), "ai_shift": ("JPEG 92 4:2:0", 0.05),
          "auc_change": {"JPEG 92 4:2:0": -0.03, "JPEG 75 4:2:0": -0.05}}
MIN_N = 20


def unit_auc(p, labels, units, unit: str) -> float | None:
    """One unit's ROC-AUC against every image of the other label (None when the other label is absent)."""
    from sklearn.metrics import roc_auc_score

    m = units == unit
    lab = int(labels[m][0])
    other = p[labels != lab]
    if not len(other):
        return None
    y = np.r_[np.full(m.sum(), lab), np.full(len(other), 1 - lab)]
    return float(roc_auc_score(y, np.r_[p[m], other]))


def resave_checks(p_as_is, copies: dict, labels, units, min_n: int = MIN_N) -> dict:
    """Per unit with at least `min_n` images: the paired median shift of P(AI) and the ROC-AUC change under each of
    the issue's copies present in `copies` ({condition: P(AI) in the same order}); then each limit's worst unit and
    whether every unit holds it. Units smaller than `min_n` are listed by name, not judged."""
    p0 = np.asarray(p_as_is, np.float64)
    labels, units = np.asarray(labels).astype(int), np.asarray(units, dtype=str)
    conds = [c for c in LIMITS["auc_change"] if c in copies]
    rows, small = {}, []
    for u in sorted(np.unique(units)):
        m = units == u
        if len(set(labels[m])) != 1:
            raise ValueError(f"unit {u} holds both labels")
        if m.sum() < min_n:
            small.append(u)
            continue
        row = {"label": "ai" if labels[m][0] else "real", "n": int(m.sum()), "roc_auc": unit_auc(p0, labels, units, u)}
        for c in conds:
            p1 = np.asarray(copies[c], np.float64)
            auc = unit_auc(p1, labels, units, u)
            row[c] = {"median_shift": float(np.median(p1[m] - p0[m])), "roc_auc": auc,
                      "auc_change": None if auc is None or row["roc_auc"] is None else auc - row["roc_auc"]}
        rows[u] = row
    checks = {}
    for kind, label in (("real_shift", "real"), ("ai_shift", "ai")):
        c, limit = LIMITS[kind]
        vals = {u: r[c]["median_shift"] for u, r in rows.items() if r["label"] == label and c in r}
        if vals:
            worst = max(vals, key=lambda u: abs(vals[u]))
            checks[kind] = {"copy": c, "limit": limit, "worst_unit": worst, "worst": vals[worst],
                            "passed": bool(all(abs(v) <= limit for v in vals.values()))}
    for c in conds:
        limit = LIMITS["auc_change"][c]
        vals = {u: r[c]["auc_change"] for u, r in rows.items() if r[c]["auc_change"] is not None}
        if vals:
            worst = min(vals, key=vals.get)
            checks[f"auc_change {c}"] = {"copy": c, "limit": limit, "worst_unit": worst, "worst": vals[worst],
                                         "passed": bool(all(v >= limit for v in vals.values()))}
    return {"min_n": min_n, "units": rows, "too_small": small, "checks": checks}


def resave_lines(r: dict | None, what: str = "unit") -> list[str]:
    """Markdown: the checks (limit, worst unit, passed) and the per-unit table."""
    if not r or not r["units"]:
        return []
    conds = [c for c in LIMITS["auc_change"] if any(c in v for v in r["units"].values())]
    lines = ["", f"## Re-saved the same way: the issue's limits per {what} (n ≥ {r['min_n']})", "",
             "| check | limit | worst | held everywhere |", "|---|---|---|---|"]
    for k, v in r["checks"].items():
        name = {"real_shift": "real photos' median shift of P(AI)", "ai_shift": "AI images' median shift of P(AI)"
                }.get(k, "ROC-AUC change")
        lim = f"\\|shift\\| ≤ {v['limit']:.2f}" if "shift" in k else f"≥ {v['limit']:+.2f}"
        lines.append(f"| {name}, {v['copy']} | {lim} | {v['worst']:+.3f} ({v['worst_unit']}) | "
                     f"{'yes' if v['passed'] else '**no**'} |")
    f = lambda x: "-" if x is None else f"{x:+.3f}"
    head = " | ".join(f"{c}: shift | {c}: ROC-AUC change" for c in conds)
    lines += ["", f"| {what} | label | n | ROC-AUC as is | {head} |", "|---|---|---|---|" + "---|---|" * len(conds)]
    for u, v in r["units"].items():
        cells = " | ".join(f"{f(v[c]['median_shift'])} | {f(v[c]['auc_change'])}" for c in conds)
        auc = "-" if v["roc_auc"] is None else f"{v['roc_auc']:.3f}"
        lines.append(f"| {u} | {v['label']} | {v['n']} | {auc} | {cells} |")
    if r["too_small"]:
        lines += ["", f"Not judged (fewer than {r['min_n']} images): " + ", ".join(r["too_small"]) + "."]
    return lines

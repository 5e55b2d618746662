"""Leave-sources-out figures: fold models' left-out scores pooled (each centred on its own operating point),
the operating point (temperature, threshold, uncertain band) fitted on them and cross-fitted by family, per-group
and pooled figures at that point, and the report as JSON, Markdown and a plot. `training.crossval` makes the
scores; this module only measures them."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from ..data.groups import CLASS_NAMES, family_of
from ..inference.calibration import (choose_threshold, fit_abstention, fit_temperature, probabilities,
                                     selective_figures, unseen_reading)
from .resave import LIMITS as RESAVE_LIMITS, resave_checks, resave_lines


def own_centre(temperature: float, threshold: float) -> float:
    """A model's operating point (equal error rate on its same-source validation split) as a raw logit."""
    t = min(max(threshold, 1e-6), 1 - 1e-6)
    return float(temperature * np.log(t / (1 - t)))


def own_calibration(logits: np.ndarray, temperature: float, threshold: float) -> np.ndarray:
    """A model's raw logits centred on its own operating point. Fold models differ in the class balance and
    sources they saw, which shifts their logits; pooling uncentred logits across folds measures those shifts
    as much as transfer (on the first run: pooled ROC-AUC 0.554 uncentred, 0.642 centred, 0.648 when also
    divided by each fold's temperature, which is unstable when a validation split is separable). The shipped
    model is centred the same way (`logit_shift`)."""
    return np.asarray(logits, np.float64) - own_centre(temperature, threshold)


def operating_point(logits: np.ndarray, labels: np.ndarray, groups: np.ndarray, max_wrong_group: float,
                    max_wrong_pooled: float, as_is: np.ndarray | None = None) -> dict:
    """Temperature, threshold (equal error rate) and uncertain band, all fitted on these (left-out) scores.
    With `as_is` (a mask), temperature and threshold come from those rows only (the files as they came) and
    the band from every row (their re-sized copies too): P(AI) stays calibrated for the files, and the band
    is widened until it also holds on the copies."""
    m = np.ones(len(labels), bool) if as_is is None else as_is
    t = fit_temperature(logits[m], labels[m])
    p = probabilities(logits, t)
    thr = choose_threshold(p[m], labels[m])["threshold"]
    band = fit_abstention(p, labels, groups, thr, max_wrong_pooled, max_wrong_group)
    return {"temperature": t, "threshold": thr, "low": band["low"], "high": band["high"],
            "fit_coverage": band["coverage"]}


MARGINS = (1.0, 0.7, 0.5, 0.3, 0.2, 0.1, 0.0)


def _cross_fitted(logits, labels, groups, families, wg: float, wp: float, as_is: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Verdicts (1 ai, 0 real, -1 uncertain) and P(AI) of each family under an operating point fitted on the
    other families' left-out scores."""
    probs = np.zeros(len(labels))
    low, high = np.zeros(len(labels)), np.zeros(len(labels))
    for f in np.unique(families):
        m = families == f
        op = operating_point(logits[~m], labels[~m], groups[~m], wg, wp, as_is[~m])
        probs[m] = probabilities(logits[m], op["temperature"])
        low[m], high[m] = op["low"], op["high"]
    return np.where(probs >= high, 1, np.where(probs <= low, 0, -1)), probs


def _wrong(v, labels, groups) -> tuple[float, float]:
    """(worst group's, pooled) share of confidently wrong verdicts."""
    wrong = (v >= 0) & (v != labels)
    return max(wrong[groups == g].mean() for g in np.unique(groups)), wrong.mean()


def loso_report(logits, labels, groups, families, categories, max_wrong_group: float = 0.10,
                max_wrong_pooled: float = 0.05, conditions: dict[str, np.ndarray] | None = None,
                limit_groups=None) -> dict:
    """Per-group and pooled figures of leave-sources-out scores, at an operating point cross-fitted by family
    (each family judged by a band fitted on the other families' scores), and the point fitted on all.

    `conditions`: the same images' left-out logits under other conditions (re-sized, re-encoded copies, in the
    same order). The band is then fitted on all copies at once, each (group, condition) held to the per-group
    limit (temperature and threshold on the files as they came), so that a band safe on the files as they came is also safe on the copies users share; the rows and
    pooled figures stay those of the files as they came, and `conditions` in the report gives each copy's.

    `limit_groups`: the units held to the per-group limit when they are not the groups themselves (e.g. each
    label's family, "ai:flux" over flux1-dev, chroma, ...); the report then also has a row per limit group."""
    from sklearn.metrics import average_precision_score, roc_auc_score

    n = len(logits)
    labels = np.asarray(labels).astype(int)
    groups = np.asarray(groups, dtype=str)
    families = np.asarray(families, dtype=str)
    limits = groups if limit_groups is None else np.asarray(limit_groups, dtype=str)
    conditions = conditions or {}
    fit_logits = np.concatenate([np.asarray(logits, np.float64)] + [np.asarray(c, np.float64) for c in conditions.values()])
    fit_labels = np.tile(labels, 1 + len(conditions))
    fit_groups = np.concatenate([limits] + [np.char.add(limits, f" @ {c}") for c in conditions])
    fit_families = np.tile(families, 1 + len(conditions))
    as_is = np.arange(len(fit_logits)) < n
    # The band is fitted with limits tightened (a fraction of the goal's) until the cross-fitted verdicts --
    # each family judged by a band fitted on the other families' scores -- meet the goal itself: a band that
    # only just meets the limits on the scores it was fitted on does not meet them on a new source.
    for margin in MARGINS:
        wg, wp = max_wrong_group * margin, max_wrong_pooled * margin
        v_all, _ = _cross_fitted(fit_logits, fit_labels, fit_groups, fit_families, wg, wp, as_is)
        worst, pooled_wrong = _wrong(v_all, fit_labels, fit_groups)
        if worst <= max_wrong_group and pooled_wrong <= max_wrong_pooled:
            break
    v = v_all[:n]
    final = operating_point(fit_logits, fit_labels, fit_groups, wg, wp, as_is)
    final["fit_limits"] = {"max_wrong_group": wg, "max_wrong_pooled": wp, "margin": margin}
    probs_final = probabilities(logits, final["temperature"])
    real_scores = logits[labels == 0]
    rows = {}
    for g in sorted(np.unique(groups)):
        m = groups == g
        y = labels[m][0]
        answered = v[m] >= 0
        wrong = answered & (v[m] != y)
        row = {"label": CLASS_NAMES[y], "family": str(families[m][0]), "n": int(m.sum()),
               "coverage": float(answered.mean()), "confidently_wrong": float(wrong.mean()),
               "called_ai": float((v[m] == 1).mean()), "mean_p_ai": float(probs_final[m].mean()),
               "called_ai_at_threshold": float((probs_final[m] >= final["threshold"]).mean())}
        if y == 1:  # how well this generator's images rank above real photos the model never saw either
            yy = np.r_[np.zeros(len(real_scores)), np.ones(m.sum())]
            row["roc_auc"] = float(roc_auc_score(yy, np.r_[real_scores, logits[m]]))
        cats = np.asarray(categories, dtype=str)[m]
        if 1 < len(set(cats)) <= 8:
            row["by_category"] = {c: {"n": int((cats == c).sum()), "mean_p_ai": float(probs_final[m][cats == c].mean()),
                                      "called_ai_at_threshold": float((probs_final[m][cats == c] >= final["threshold"]).mean())}
                                  for c in sorted(set(cats))}
        rows[g] = row
    limit_rows = {}
    if limit_groups is not None:
        for g in sorted(np.unique(limits)):
            m = limits == g
            y = labels[m][0]
            answered = v[m] >= 0
            row = {"label": CLASS_NAMES[y], "n": int(m.sum()), "groups": sorted(set(groups[m])),
                   "coverage": float(answered.mean()), "confidently_wrong": float((answered & (v[m] != y)).mean())}
            if y == 1:
                yy = np.r_[np.zeros(len(real_scores)), np.ones(m.sum())]
                row["roc_auc"] = float(roc_auc_score(yy, np.r_[real_scores, logits[m]]))
            limit_rows[g] = row
    answered = v >= 0
    pooled = {"n": int(len(labels)), "roc_auc": float(roc_auc_score(labels, logits)),
              "average_precision": float(average_precision_score(labels, logits)),
              "mean_ai_group_roc_auc": mean_ai_auc(logits, labels, limits),
              "coverage": float(answered.mean()), "confidently_wrong": float((answered & (v != labels)).mean()),
              "error_when_answered": float((v[answered] != labels[answered]).mean()) if answered.any() else None,
              "max_group_confidently_wrong": float(max(r["confidently_wrong"] for r in (limit_rows or rows).values())),
              "max_source_confidently_wrong": float(max(r["confidently_wrong"] for r in rows.values())),
              "real_groups_over_10pct_false_ai": [g for g, r in rows.items()
                                                  if r["label"] == "real" and r["called_ai"] > 0.10],
              # coverage must not come from large groups alone: the share of units answering at least 10% each
              "ai_units_answering_10pct": _share_answering(limit_rows or rows, "ai"),
              "real_units_answering_10pct": _share_answering(limit_rows or rows, "real")}
    in_sample = selective_figures(probs_final, labels, final["low"], final["high"])
    by_condition = {}
    for i, c in enumerate(conditions):
        vc, lc = v_all[(i + 1) * n:(i + 2) * n], fit_logits[(i + 1) * n:(i + 2) * n]
        worst_c, wrong_c = _wrong(vc, labels, limits)
        by_condition[c] = {"roc_auc": float(roc_auc_score(labels, lc)), "coverage": float((vc >= 0).mean()),
                           "mean_ai_group_roc_auc": mean_ai_auc(lc, labels, limits),
                           "confidently_wrong": float(wrong_c), "max_group_confidently_wrong": float(worst_c)}
    return {"groups": rows, **({"limit_groups": limit_rows} if limit_rows else {}), "pooled": pooled,
            "operating_point": final, "conditions": by_condition,
            "operating_point_in_sample": in_sample,
            # fitted on the band's copies too, so a range's share holds whatever the save (issue 37)
            "unseen_reading": {**unseen_reading(fit_logits, fit_labels), "copies": ["as is"] + list(conditions)},
            "limits": {"max_wrong_group": max_wrong_group, "max_wrong_pooled": max_wrong_pooled},
            "by_category": _by_category(probs_final, labels, groups, categories, final["threshold"])}


def _share_answering(rows: dict, label: str, at_least: float = 0.10) -> float:
    units = [r for r in rows.values() if r["label"] == label]
    return float(np.mean([r["coverage"] >= at_least for r in units])) if units else 0.0


def mean_ai_auc(logits, labels, units) -> float:
    """Mean over AI units (groups or families) of each one's ROC-AUC against every real image."""
    from sklearn.metrics import roc_auc_score

    logits, labels, units = np.asarray(logits, np.float64), np.asarray(labels), np.asarray(units, dtype=str)
    real = logits[labels == 0]
    aucs = [roc_auc_score(np.r_[np.zeros(len(real)), np.ones(m.sum())], np.r_[real, logits[m]])
            for m in (units == u for u in np.unique(units[labels == 1]))]
    return float(np.mean(aucs))


def ai_unit_aucs(z, labels, units) -> dict:
    """Each AI unit's ROC-AUC against every real image."""
    from sklearn.metrics import roc_auc_score

    z, labels, units = np.asarray(z, np.float64), np.asarray(labels), np.asarray(units, dtype=str)
    real = z[labels == 0]
    return {u: float(roc_auc_score(np.r_[np.zeros(len(real)), np.ones((units == u).sum())], np.r_[real, z[units == u]]))
            for u in sorted(np.unique(units[labels == 1]))}


def worst_per_unit(conditioned: dict, labels, units) -> dict:
    """Each AI unit's lowest ROC-AUC over the copies given (the worst-of-panel figure, before its mean)."""
    per = [ai_unit_aucs(z, labels, units) for z in conditioned.values()]
    return {u: min(p[u] for p in per) for u in per[0]}


def yardstick(logits, conditioned: dict, labels, units, temperature: float) -> dict:
    """The figures recipes are chosen on (issue "Learn the generator, not the file"): per condition the pooled
    ROC-AUC and the mean over AI units; the panel's worst, pooled and as the mean over AI units of each unit's
    worst; and under the processing swap, each unit's paired median shift of P(AI) against the files as they came.
    All on the same centred left-out logits (`units`: each label's family, or the groups)."""
    from sklearn.metrics import roc_auc_score

    from ..data.transforms import CONDITIONS, SWAP

    labels, units = np.asarray(labels).astype(int), np.asarray(units, dtype=str)
    out, per_unit = {"conditions": {}}, {}
    for c, z in conditioned.items():
        z = np.asarray(z, np.float64)
        per_unit[c] = ai_unit_aucs(z, labels, units)
        out["conditions"][c] = {"roc_auc": float(roc_auc_score(labels, z)),
                                "mean_ai_unit_roc_auc": float(np.mean(list(per_unit[c].values()))),
                                "panel": CONDITIONS[c].panel}
    panel = [c for c in conditioned if CONDITIONS[c].panel]
    if panel:
        worst_unit = worst_per_unit({c: conditioned[c] for c in panel}, labels, units)
        out["worst_of_panel"] = {"roc_auc": min(out["conditions"][c]["roc_auc"] for c in panel),
                                 "mean_ai_unit_roc_auc": float(np.mean(list(worst_unit.values()))),
                                 "per_ai_unit": worst_unit, "conditions": panel}
    if SWAP in conditioned:
        p0 = probabilities(np.asarray(logits, np.float64), temperature)
        p1 = probabilities(np.asarray(conditioned[SWAP], np.float64), temperature)
        out["swap_shift"] = {u: {"n": int((units == u).sum()), "median_shift": float(np.median((p1 - p0)[units == u]))}
                             for u in sorted(np.unique(units))}
    resaved = {c: probabilities(np.asarray(conditioned[c], np.float64), temperature)
               for c in RESAVE_LIMITS["auc_change"] if c in conditioned}
    if resaved:
        out["resave"] = resave_checks(probabilities(np.asarray(logits, np.float64), temperature), resaved,
                                      labels, units)
    return out


def yardstick_lines(y: dict | None) -> list[str]:
    """Markdown: the yardstick's table (report and studies)."""
    if not y:
        return []
    lines = ["", "## Yardstick: copies saved the way users meet them", "",
             "| copy | in the panel | ROC-AUC | mean over AI units |", "|---|---|---|---|"]
    lines += [f"| {c} | {'yes' if v['panel'] else '-'} | {v['roc_auc']:.3f} | {v['mean_ai_unit_roc_auc']:.3f} |"
              for c, v in y["conditions"].items()]
    w = y.get("worst_of_panel")
    if w:
        lines += [f"| **worst of panel** | | **{w['roc_auc']:.3f}** | **{w['mean_ai_unit_roc_auc']:.3f}** (each "
                  "unit's worst) |"]
    if y.get("swap_shift"):
        lines += ["", "Processing swapped (real photos saved as the AI packs were, AI images with the fold's camera "
                  "tables): paired median shift of P(AI) per unit", "", "| unit | n | median shift |", "|---|---|---|"]
        lines += [f"| {u} | {v['n']} | {v['median_shift']:+.3f} |" for u, v in y["swap_shift"].items()]
    return lines + resave_lines(y.get("resave"))


def _by_category(probs, labels, groups, categories, threshold) -> dict:
    """ROC-AUC per content category inside each source whose AI and real images share categories
    (the photo game's people/nature/city/interior): content held equal, what is left is the generator."""
    from sklearn.metrics import roc_auc_score

    out = {}
    cats = np.asarray(categories, dtype=str)
    fam = np.array([family_of(g) for g in groups])
    for f in np.unique(fam):
        m = fam == f
        if len(np.unique(labels[m])) < 2:
            continue
        shared = [c for c in np.unique(cats[m]) if c and len(np.unique(labels[m & (cats == c)])) == 2]
        if not shared or len(shared) > 8:
            continue
        out[f] = {c: {"n_ai": int((labels[m & (cats == c)] == 1).sum()), "n_real": int((labels[m & (cats == c)] == 0).sum()),
                      "roc_auc": float(roc_auc_score(labels[m & (cats == c)], probs[m & (cats == c)]))} for c in shared}
    return out


def _f(v, d=3):
    return "-" if v is None else f"{v:.{d}f}"


def conditions_table(conditions: dict | None) -> list[str]:
    """Markdown lines: the cross-fitted figures on the copies the band was also fitted on (report and card)."""
    if not conditions:
        return []
    return ["", "The band was also fitted on every left-out image re-scored as a copy (each source group under each "
            "copy held to the same limit); the same cross-fitted verdicts on those copies:", "",
            "| copy | ROC-AUC | mean over AI units | answered | confidently wrong | worst group |",
            "|---|---|---|---|---|---|"] + [
        f"| {c} | {v['roc_auc']:.3f} | {_f(v.get('mean_ai_group_roc_auc'))} | {100 * v['coverage']:.1f}% | "
        f"{100 * v['confidently_wrong']:.1f}% | {100 * v['max_group_confidently_wrong']:.1f}% |"
        for c, v in conditions.items()]


def write_markdown(rep: dict, path: Path) -> None:
    op, pooled = rep["operating_point"], rep["pooled"]
    lines = ["# Leave-sources-out cross-validation", "",
             "Every source group was left out of training once and scored by a model that never saw it: what a user "
             "gets on a generator or camera the model has never seen. Verdicts use an operating point cross-fitted by "
             "family (each family judged by a band fitted on the other families' left-out scores).", "",
             f"Pooled: n {pooled['n']}, ROC-AUC {_f(pooled['roc_auc'])}, AP {_f(pooled['average_precision'])}, "
             f"mean ROC-AUC over AI {'families' if rep.get('limit_groups') else 'groups'} "
             f"{_f(pooled['mean_ai_group_roc_auc'])}; answered {_f(pooled['coverage'])}, "
             f"confidently wrong {_f(pooled['confidently_wrong'])} (worst {'family' if rep.get('limit_groups') else 'group'} "
             f"{_f(pooled['max_group_confidently_wrong'])}, worst source {_f(pooled.get('max_source_confidently_wrong'))})."
             + (f" Answering at least 10% of their images: {_f(pooled['ai_units_answering_10pct'], 2)} of the AI and "
                f"{_f(pooled['real_units_answering_10pct'], 2)} of the real units." if "ai_units_answering_10pct" in pooled
                else ""), "",
             f"Operating point fitted on all left-out scores (what the bundled model ships): T {op['temperature']:.3f}, "
             f"threshold {op['threshold']:.3f}, uncertain between {op['low']:.3f} and {op['high']:.3f}.", "",
             "| group | label | n | ROC-AUC vs left-out real | answered | confidently wrong | called AI | called AI at threshold |",
             "|---|---|---|---|---|---|---|---|"]
    for g, r in sorted(rep["groups"].items(), key=lambda kv: (kv[1]["label"], kv[0])):
        lines.append(f"| {g} | {r['label']} | {r['n']} | {_f(r.get('roc_auc'))} | {_f(r['coverage'], 2)} | "
                     f"{_f(r['confidently_wrong'], 2)} | {_f(r['called_ai'], 2)} | {_f(r['called_ai_at_threshold'], 2)} |")
    if rep.get("limit_groups"):
        lines += ["", "Families (the units held to the per-group limit; the groups above are their members):", "",
                  "| family | label | n | ROC-AUC vs left-out real | answered | confidently wrong | members |",
                  "|---|---|---|---|---|---|---|"]
        lines += [f"| {g} | {r['label']} | {r['n']} | {_f(r.get('roc_auc'))} | {_f(r['coverage'], 2)} | "
                  f"{_f(r['confidently_wrong'], 2)} | {', '.join(r['groups'])} |"
                  for g, r in sorted(rep["limit_groups"].items(), key=lambda kv: (kv[1]["label"], kv[0]))]
    lines += conditions_table(rep.get("conditions")) + yardstick_lines(rep.get("yardstick"))
    lines += stack_lines(rep.get("stack"))
    lines += reading_table(rep.get("unseen_reading"), rep["operating_point"]["temperature"])
    for f, cats in rep.get("by_category", {}).items():
        lines += ["", f"Content held equal in `{f}` (ROC-AUC of its AI vs its real images, per category):", "",
                  "| category | n AI | n real | ROC-AUC |", "|---|---|---|---|"]
        lines += [f"| {c} | {v['n_ai']} | {v['n_real']} | {_f(v['roc_auc'])} |" for c, v in cats.items()]
    lines += ["", "Folds (families left out together):", ""]
    lines += [f"- fold {k}: {', '.join(v)}" for k, v in rep.get("folds", {}).items()]
    path.write_text("\n".join(lines) + "\n")


def stack_lines(st: dict | None) -> list[str]:
    """What a stacked report stacked: each signal alone, how alike they rank, the combiner per fold."""
    if not st:
        return []
    corr = st["rank_correlation"]
    lines = ["", "Stack of the left-out scores of " + ", ".join(f"`{r}`" for r in st["runs"]) + " (a logistic combiner on "
             "their centred logits, C " + f"{st['C']}; fold k's images scored by a combiner fitted on the other folds' "
             "images only).", "",
             "Each signal alone, pooled ROC-AUC: " + ", ".join(f"`{r}` {v['roc_auc']:.3f}" for r, v in st["signals"].items())
             + (f"; Spearman rank correlation of their left-out scores {corr:.3f}." if not isinstance(corr, list) else "."),
             "", "| fold | weights | intercept | fitted on |", "|---|---|---|---|"]
    lines += [f"| {k} | {', '.join(f'{w:.3f}' for w in f['weights'])} | {f['intercept']:.3f} | {f['fitted_on']} |"
              for k, f in st["per_fold"].items()]
    sh = st["shipped"]
    lines += [f"| all (shipped) | {', '.join(f'{w:.3f}' for w in sh['weights'])} | {sh['intercept']:.3f} | every image |"]
    return lines


def reading_table(reading: dict | None, temperature: float) -> list[str]:
    """The `unseen_reading` table as the shipped model reads it (P(AI) at the fitted temperature)."""
    if not reading:
        return []
    edges = [0.0] + [float(probabilities(np.array([e]), temperature)[0]) for e in reading["edges"]] + [1.0]
    lines = ["", "What a score meant on sources the models never saw (the left-out images in ranges of equal size; "
             "share AI with AI and real weighted to half each, made non-decreasing):", "",
             "| P(AI) from | to | n | AI | real | share AI (half/half) |", "|---|---|---|---|---|---|"]
    lines += [f"| {edges[i]:.3f} | {edges[i + 1]:.3f} | {reading['n'][i]} | {reading['n_ai'][i]} | "
              f"{reading['n_real'][i]} | {reading['ai_share'][i]:.2f} |" for i in range(len(reading["n"]))]
    return lines


def plot_report(rep: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = sorted(rep["groups"].items(), key=lambda kv: (kv[1]["label"], kv[0]))
    names = [g for g, _ in rows]
    fig, axes = plt.subplots(1, 2, figsize=(12, 0.28 * len(rows) + 1.5), sharey=True)
    y = np.arange(len(rows))
    auc = [r.get("roc_auc") or np.nan for _, r in rows]
    axes[0].barh(y, auc, color=["tab:red" if r["label"] == "ai" else "tab:blue" for _, r in rows])
    axes[0].axvline(0.5, color="k", lw=0.8)
    axes[0].set_xlim(0, 1); axes[0].set_title("ROC-AUC vs left-out real photos (AI groups)")
    cov = [r["coverage"] for _, r in rows]
    wrong = [r["confidently_wrong"] for _, r in rows]
    axes[1].barh(y, cov, color="0.8", label="answered")
    axes[1].barh(y, wrong, color="tab:red", label="confidently wrong")
    axes[1].axvline(rep["limits"]["max_wrong_group"], color="tab:red", ls="--", lw=0.8)
    axes[1].set_xlim(0, 1); axes[1].legend(loc="lower right"); axes[1].set_title("cross-fitted operating point")
    axes[0].set_yticks(y); axes[0].set_yticklabels(names, fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)

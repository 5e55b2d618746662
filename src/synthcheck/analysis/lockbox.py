"""The lockbox: collections no training, recipe choice, calibration or band fit ever reads, scored once per candidate
and every score logged, so a model is judged on collections it was never tuned toward.

A lockbox collection's ROC-AUC is the issue's definition: an AI collection against all the lockbox's real photos,
a real source against all the lockbox's AI images. Scores come from `synthcheck evaluate`'s scores.npz (the served
preprocessing and calibration), never from a second scoring path.
"""

from __future__ import annotations

import datetime as _dt
import json
from pathlib import Path

import numpy as np

from ..data.groups import generator_of


def collection_aucs(names, labels, probs) -> dict:
    """collection -> {label, n, roc_auc (against the other class, whole lockbox), median P(AI)}."""
    from .resave import unit_auc

    names, labels, probs = list(names), np.asarray(labels).astype(int), np.asarray(probs, np.float64)
    cols = np.array([generator_of(n) or "?" for n in names], dtype=str)
    out = {}
    for c in sorted(set(cols.tolist())):
        m = cols == c
        lab = int(labels[m][0])
        if len(set(labels[m])) != 1:
            raise ValueError(f"lockbox collection {c} holds both labels")
        out[c] = {"label": "ai" if lab else "real", "n": int(m.sum()), "roc_auc": unit_auc(probs, labels, cols, c),
                  "median_p_ai": float(np.median(probs[m]))}
    return out


def score_run(eval_dir: str | Path, model: str, condition: str = "as is") -> dict:
    """The lockbox figures of one `synthcheck evaluate MODEL LOCKBOX --out EVAL_DIR` run."""
    eval_dir = Path(eval_dir)
    found = sorted(eval_dir.glob("*/scores.npz"))
    if len(found) != 1:
        raise ValueError(f"{eval_dir}: expected one evaluated set (scores.npz), found {len(found)}")
    z = np.load(found[0])
    if "names" not in z:
        raise ValueError(f"{found[0]}: no file names (written by an older synthcheck evaluate): evaluate again")
    metrics = json.loads((found[0].parent / "metrics.json").read_text())
    cols = collection_aucs(z["names"], z["labels"], z["probs"])
    aucs = [v["roc_auc"] for v in cols.values() if v["roc_auc"] is not None]
    return {"date": _dt.date.today().isoformat(), "model": model, "condition": condition,
            "source": metrics.get("source"), "n": int(len(z["labels"])),
            "excluded_train_identical": metrics.get("excluded_train_identical"),
            "pooled_roc_auc": metrics.get("roc_auc"), "coverage": metrics.get("coverage"),
            "confident_accuracy": metrics.get("confident_accuracy"),
            "mean_collection_roc_auc": float(np.mean(aucs)) if aucs else None, "collections": cols}


def panel_scores(detector, source: str | Path, conditions: list[str], progress: bool = True) -> dict:
    """P(AI) of every lockbox file as is and under label-free copies (`analysis.robustness.copy_probabilities`,
    the evaluate path on whole images). -> {condition: (names, labels, probs)}"""
    from ..data.transforms import CONDITIONS
    from .robustness import copy_probabilities

    bad = [c for c in conditions if c not in CONDITIONS or CONDITIONS[c].label_dependent]
    if bad:
        raise ValueError(f"{bad[0]!r}: not a label-free condition of data.transforms.CONDITIONS")
    scores = copy_probabilities(detector, source, conditions, progress=progress)
    if not len(scores[conditions[0]][0]):
        raise ValueError(f"{source}: no image to score (an empty folder, or every file byte-identical to the "
                         "model's training data)")
    return scores


def panel_entries(scores: dict, model: str, source: str) -> list[dict]:
    """Log entries: one per condition, and the worst of the panel (each collection's lowest ROC-AUC)."""
    from sklearn.metrics import roc_auc_score

    day = _dt.date.today().isoformat()
    out, worst = [], {}
    for c, (names, labels, probs) in scores.items():
        cols = collection_aucs(names, labels, probs)
        aucs = [v["roc_auc"] for v in cols.values() if v["roc_auc"] is not None]
        out.append({"date": day, "model": model, "condition": c, "source": source, "n": len(labels),
                    "pooled_roc_auc": float(roc_auc_score(labels, probs)), "coverage": None,
                    "confident_accuracy": None, "mean_collection_roc_auc": float(np.mean(aucs)), "collections": cols})
        if c != "as is":
            for k, v in cols.items():
                if v["roc_auc"] is not None and (k not in worst or v["roc_auc"] < worst[k]["roc_auc"]):
                    worst[k] = {**v, "condition": c}
    if worst:
        panel = [e for e in out if e["condition"] != "as is"]
        out.append({"date": day, "model": model, "condition": "worst of panel", "source": source, "n": panel[0]["n"],
                    "pooled_roc_auc": min(e["pooled_roc_auc"] for e in panel), "coverage": None,
                    "confident_accuracy": None, "collections": worst,
                    "mean_collection_roc_auc": float(np.mean([v["roc_auc"] for v in worst.values()]))})
    return out


def panel_resave(scores: dict, min_n: int = 5) -> dict:
    """The re-save checks (`analysis.resave`) per lockbox collection, from `panel_scores`' as-is and JPEG copies.
    The lockbox's collections are small, so every one of `min_n` images and more is judged, its n beside it."""
    from .resave import resave_checks

    names, labels, p0 = scores["as is"]
    copies = {}
    for c, (n, _, p) in scores.items():
        if c != "as is":
            if list(n) != list(names):
                raise ValueError(f"{c}: copies scored in another order than the files as they are")
            copies[c] = p
    cols = np.array([generator_of(n) or "?" for n in names], dtype=str)
    return resave_checks(p0, copies, labels, cols, min_n=min_n)


def panel_reading(scores: dict, reading: dict | None, temperature: float) -> dict | None:
    """The model's reading table (`unseen_reading`) checked on the lockbox: each range's claimed share of AI beside
    the share measured on the files as they are, and on the panel's copies pooled (the table is fitted on copies
    too, so its claim should hold whatever the save)."""
    from ..inference.calibration import measured_reading

    if not reading:
        return None
    from scipy.special import logit

    centred = lambda p: temperature * logit(np.clip(p, 1e-12, 1 - 1e-12))  # the table's key, as `score_reading`
    _, labels, p0 = scores["as is"]
    copies = [c for c in scores if c != "as is"]
    out = {"as is": measured_reading(reading, centred(np.asarray(p0, np.float64)), labels)}
    if copies:
        out["panel copies"] = measured_reading(
            reading, centred(np.concatenate([np.asarray(scores[c][2], np.float64) for c in copies])),
            np.concatenate([scores[c][1] for c in copies]))
    return out


def reading_lines(checked: dict | None, temperature: float) -> list[str]:
    """Markdown: per range (in P(AI)), the claim and what each check measured (n AI / n real under it)."""
    if not checked:
        return ["", "The model has no reading table (only crossval-trained models carry one)."]
    p = lambda z, edge: edge if z is None else 1 / (1 + np.exp(-z / temperature))
    kinds = list(checked)
    lines = ["", "## The reading table on the lockbox", "",
             "Each range's claimed share of AI (half AI, half real) beside the share measured here, with the same "
             "weighting.", "", "| P(AI) range | claimed | " + " | ".join(f"measured, {k} (AI / real)" for k in kinds)
             + " |", "|---|---|" + "---|" * len(kinds)]
    for i, row in enumerate(checked[kinds[0]]):
        lo, hi = row["range_logit"]
        cells = []
        for k in kinds:
            r = checked[k][i]
            cells.append(("-" if r["measured"] is None else f"{r['measured']:.2f}") + f" ({r['n_ai']} / {r['n_real']})")
        lines.append(f"| {p(lo, 0.0):.3f}–{p(hi, 1.0):.3f} | {row['claimed']:.2f} | " + " | ".join(cells) + " |")
    return lines


def lockbox_gate(entries: list[dict], candidate: str, baselines: list[str], n: int | None = None,
                 margin: float = 0.02) -> dict:
    """Issue 37's lockbox gate, read from the log (it scores nothing): as is and worst of panel, the candidate's mean
    over collections must be above every baseline's, and on no collection more than `margin` below the better
    baseline. Only entries over `n` images count (default: as many as the candidate's latest "as is" score, the
    lockbox it was judged on); the latest entry of each wins."""
    if n is None:
        mine = [e["n"] for e in entries if e["model"] == candidate and e["condition"] == "as is"]
        if not mine:
            raise ValueError(f"lockbox gate: no 'as is' score of {candidate} in the log")
        n = mine[-1]
    latest = {}
    for e in entries:
        if e["n"] == n:
            latest[(e["model"], e["condition"])] = e
    out, ok = {}, True
    for cond in ("as is", "worst of panel"):
        missing = [m for m in [candidate] + baselines if (m, cond) not in latest]
        if missing:
            raise ValueError(f"lockbox gate: no {cond!r} score over {n} images for {', '.join(missing)} in the log")
        cand, base = latest[(candidate, cond)], [latest[(b, cond)] for b in baselines]
        above = all(cand["mean_collection_roc_auc"] > b["mean_collection_roc_auc"] for b in base)
        short = {}
        for c, v in cand["collections"].items():
            best = max(b["collections"][c]["roc_auc"] for b in base)
            if v["roc_auc"] < best - margin:
                short[c] = {"candidate": v["roc_auc"], "better_baseline": best}
        out[cond] = {"candidate_mean": cand["mean_collection_roc_auc"],
                     "baseline_means": {b: e["mean_collection_roc_auc"] for b, e in zip(baselines, base)},
                     "above_every_baseline": above, "collections_short": short, "passed": above and not short}
        ok &= out[cond]["passed"]
    return {"candidate": candidate, "baselines": baselines, "n": n, "margin": margin, "by_condition": out, "passed": ok}


def log_score(entry: dict, log: str | Path) -> None:
    """Append one lockbox score to the committed log (one JSON object per line)."""
    log = Path(log)
    log.parent.mkdir(parents=True, exist_ok=True)
    with open(log, "a", encoding="utf-8") as f:
        f.write(json.dumps(entry, sort_keys=True) + "\n")


def log_markdown(log: str | Path) -> str:
    """Every logged lockbox score as tables: one row per score, one column per collection."""
    entries = [json.loads(x) for x in Path(log).read_text(encoding="utf-8").splitlines() if x.strip()]
    cols = sorted({c for e in entries for c in e["collections"]},
                  key=lambda c: (entries[-1]["collections"].get(c, {}).get("label", ""), c))
    f = lambda v: "-" if v is None else f"{v:.3f}"
    head = ["date", "model", "condition", "n", "pooled", "mean over collections", "answered", "right when answered"]
    lines = ["| " + " | ".join(head + cols) + " |", "|" + " --- |" * (len(head) + len(cols))]
    for e in entries:
        lines.append("| " + " | ".join([e["date"], e["model"], e["condition"], str(e["n"]), f(e["pooled_roc_auc"]),
                                        f(e["mean_collection_roc_auc"]), f(e["coverage"]), f(e["confident_accuracy"])]
                                       + [f(e["collections"].get(c, {}).get("roc_auc")) for c in cols]) + " |")
    sizes = entries[-1]["collections"]
    lines += ["", "Collections: " + ", ".join(f"{c} ({sizes[c]['label']}, {sizes[c]['n']})" for c in cols if c in sizes)]
    return "\n".join(lines) + "\n"

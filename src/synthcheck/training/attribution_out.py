"""Is a generator name right on collections the head never saw? Collection-out and family-out evaluation of the
attribution head, and the naming rule fitted on those left-out figures.

Why: a family learned from one or two collections (one showcase repository, one data set) is learned together
with that collection's prompts, crops and encoding, so "held-out images of the family" share all of it and
top-1 on them measures a collection detector. Here every AI image is named by a head *and* a backbone that
never saw its collection: the backbone is the crossval fold model that left the image's family out (families
leave folds whole, so it saw none of the family's collections: stricter than the shipped model, which saw the
others; the report says so), and the head is fitted on that backbone's features of every other image, with
the image's own collection out (collection-out: its family's other collections stay in) or its whole fold out
(family-out). Real photos are scored by their fold's head too, and count only if they reach "can't tell"
(a "real" verdict carries no pixel name).

The rule a Detector applies (`AttributionHead.naming`, checked by `inference.attribution.allowed_name`):
name family f from pixels only if f was validated on a left-out collection, the head's open-set threshold
accepts the image, and f's probability and P(AI) clear the rule's floors; everything else is "unknown". Its settings are chosen on the left-out results to keep the share right among
named at or above the target (Wilson lower bound too) with real photos rarely named, and its own figure is
nested: each evaluation unit is named by settings chosen without it.
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np

from ..analysis.metrics import share_text, wilson

log = logging.getLogger("synthcheck")


def collection_of(name: str) -> str:
    """The collection a pool file came from: the `<source>` of photo-train-style names
    (`ai/sdcpp__flux1-dev__x.jpg` -> `sdcpp`), else the data set's top folder (`diffusiondb-vs-coco-imagenet`)."""
    from ..data.groups import generator_of

    if "__" in name.replace("\\", "/").rsplit("/", 1)[-1]:
        return generator_of(name)  # the pack-name convention groups.py already reads
    return name.replace("\\", "/").lstrip("./").split("/", 1)[0]


def fold_features(run: str | Path, pool, k: int, progress: bool = True) -> np.ndarray:
    """Attribution features of every pool image through fold k's model (which left fold k's families out),
    cached as `fold_k/features.npz` beside its scores and checked against the pool's digests."""
    from ..data.preprocess import PreprocessSpec
    from ..inference.scoring import score_with_features
    from ..models.checkpoint import load_model
    from .config import as_tiles

    fdir = Path(run) / f"fold_{k}"
    cache = fdir / "features.npz"
    if cache.exists():
        z = np.load(cache)
        if np.array_equal(z["digests"], pool.pool.digests):
            return z["features"]
        log.warning("%s was made on other data: recomputing", cache)
    model, mcfg = load_model(fdir / "model")
    tiles = as_tiles(pool.pool, PreprocessSpec.from_dict(mcfg["preprocess"]))
    feats = []
    step = 256
    from tqdm.auto import tqdm

    for i in tqdm(range(0, len(tiles.images), step), desc=f"fold {k} features", disable=not progress):
        feats.append(score_with_features(model, tiles.images[i:i + step], 256)[1])
    feats = np.concatenate(feats).astype(np.float32)
    np.savez(cache, features=feats, digests=pool.pool.digests)
    return feats


def plan_units(attr_fam: np.ndarray, families: np.ndarray, collections: np.ndarray, labels: np.ndarray,
               fold_of: dict[str, int]) -> list[dict]:
    """What is left out of what. Per fold k, one family-out unit: fold k's images (AI and real) named by a
    head fitted on the AI images outside fold k, through fold k's backbone. Per collection of a named family
    with two or more collections, one collection-out unit: its images named by a head fitted on every other
    AI image (the family's other collections in), through the backbone of the fold holding the family.
    -> units with "fold", "score" (mask of images named) and "head_fit" (mask of images the head learns from)."""
    fold = np.array([fold_of[f] for f in families])
    ai = labels == 1
    units = [{"kind": "family-out", "name": f"fold {k}", "fold": k, "family": None, "collection": None,
              "score": fold == k, "head_fit": ai & (fold != k)} for k in sorted(set(fold_of.values()))]
    named = sorted(set(attr_fam[ai]) - {"", "unknown"})
    for f in named:
        cols = sorted(set(collections[ai & (attr_fam == f)]))
        if len(cols) < 2:
            continue
        for c in cols:
            member = ai & (attr_fam == f) & (collections == c)
            folds = set(fold[member])
            if len(folds) != 1:  # the collection spans folds: no backbone left all of it out
                log.warning("collection %s of %s spans folds %s: not evaluated collection-out", c, f, sorted(folds))
                continue
            units.append({"kind": "collection-out", "name": f"{f} @ {c}", "fold": folds.pop(), "family": f,
                          "collection": c, "score": member, "head_fit": ai & ~member})
    return units


def left_out_records(units: list[dict], feats_of_fold, attr_fam: np.ndarray, labels: np.ndarray, p_ai: np.ndarray,
                     verdict: np.ndarray, sources: np.ndarray, keep_known: float = 0.80, seed: int = 0, cs=None,
                     progress: bool = True, cache: Path | None = None) -> dict:
    """Each unit's images named by a head fitted as it ships (`fit_chosen`: rule, C and threshold chosen on
    its own training part) on the unit's `head_fit` images, through the unit's fold backbone
    (`feats_of_fold(k)` -> [N, D]). -> one row per (unit, image): pool index, unit, kind, true family ("" for a
    real photo, "unknown" for a family the head may not name), top family, its probability, whether the head's
    own open-set threshold accepts it, the image's left-out P(AI) and verdict, and its source family. With
    `cache` (a folder), each unit's head outputs are kept there and reused (a stopped run resumes)."""
    from tqdm.auto import tqdm

    from .attribution import C_GRID

    cols = {k: [] for k in ("index", "unit", "kind", "truth", "top", "probability", "accepted", "p_ai", "verdict",
                            "label", "source")}
    for u in tqdm(units, desc="left-out heads", disable=not progress):
        idx = np.flatnonzero(u["score"])
        top, probability, accepted = _unit_outputs(u, idx, feats_of_fold, attr_fam, keep_known, seed, cs or C_GRID,
                                                   cache)
        cols["index"].append(idx)
        cols["unit"] += [u["name"]] * len(idx)
        cols["kind"] += [u["kind"]] * len(idx)
        cols["truth"].append(attr_fam[idx])
        cols["top"].append(top)
        cols["probability"].append(probability)
        cols["accepted"].append(accepted)
        cols["p_ai"].append(p_ai[idx])
        cols["verdict"].append(verdict[idx])
        cols["label"].append(labels[idx])
        cols["source"].append(np.asarray(sources, dtype=object)[idx])
    return {k: np.concatenate(v) if isinstance(v[0], np.ndarray) else np.array(v, dtype=object)
            for k, v in cols.items()}


def _unit_outputs(u: dict, idx, feats_of_fold, attr_fam, keep_known, seed, cs, cache: Path | None):
    """One unit's head, fitted and applied: (top family, its probability, open-set accepted) per scored image."""
    import hashlib

    from .attribution import fit_chosen

    fit = np.flatnonzero(u["head_fit"])
    key = hashlib.sha1(np.r_[idx, -1, fit].tobytes() + repr((sorted(set(attr_fam[fit])), keep_known, seed,
                                                              tuple(cs))).encode()).hexdigest()[:16]
    path = None if cache is None else Path(cache) / f"unit_{key}.npz"
    if path is not None and path.exists():
        z = np.load(path, allow_pickle=False)
        return z["top"].astype(object), z["probability"], z["accepted"]
    x = feats_of_fold(u["fold"])
    head, *_ = fit_chosen(x[fit], attr_fam[fit], keep_known=keep_known, seed=seed, cs=cs)
    prob = head.probabilities(x[idx])
    out = (np.array(head.families, dtype=object)[prob.argmax(1)], prob.max(1), head.score(x[idx]) >= head.threshold)
    if path is not None:
        path.parent.mkdir(parents=True, exist_ok=True)
        np.savez(path, top=out[0].astype(str), probability=out[1], accepted=out[2])
    return out


PROBABILITY_GRID = (0.0, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 0.95)
P_AI_GRID = (0.0, 0.5, 0.6, 0.7, 0.8, 0.9)


def named_mask(rec: dict, rule: dict) -> np.ndarray:
    """Which rows the rule names: accepted by the head's open-set threshold, an allowed family at or above the
    floors, and a verdict that is not "real" (a real verdict carries no pixel name)."""
    ok = rec["accepted"] & (rec["verdict"] != "real") & np.isin(rec["top"], list(rule["families"]))
    return ok & (rec["probability"] >= rule["min_probability"]) & (rec["p_ai"] >= rule["min_p_ai"])


def rule_figures(rec: dict, named: np.ndarray) -> dict:
    """Right among named (and its interval), named share of AI rows, real photos reaching "can't tell" named."""
    ai = rec["label"] == 1
    right = named & ai & (rec["top"] == rec["truth"])
    real = (rec["label"] == 0) & (rec["verdict"] != "real")
    k, n = int(right.sum()), int(named.sum())
    return {"named": n, "right": k, "right_among_named": k / n if n else None, "interval": wilson(k, n),
            "ai_rows": int(ai.sum()), "ai_named": int((named & ai).sum()),
            "real_uncertain": int(real.sum()), "real_named": int((named & real).sum()),
            "real_named_share": float((named & real).sum() / real.sum()) if real.any() else None}


def fit_naming_rule(rec: dict, candidates: list[str], target: float = 0.80, lower: float = 0.60,
                    max_real: float = 0.02) -> dict:
    """The rule with the most right names among those whose right-among-named is at least `target`, whose
    Wilson lower bound is at least `lower`, and which names at most `max_real` of the real photos that reach
    "can't tell"; families from `candidates` (validated on a left-out collection) in every subset. Among rules
    naming the same images, the strictest floors (a margin against failures the fit never saw). None
    qualifies -> the empty rule: nothing is named from pixels."""
    from itertools import combinations

    best, best_key = {"families": [], "min_probability": 1.0, "min_p_ai": 1.0}, (0, 0, 0, 0)
    subsets = [list(c) for r in range(1, len(candidates) + 1) for c in combinations(sorted(candidates), r)]
    for fams in subsets:
        for t in PROBABILITY_GRID:
            for a in P_AI_GRID:
                rule = {"families": fams, "min_probability": t, "min_p_ai": a}
                f = rule_figures(rec, named_mask(rec, rule))
                if not f["named"] or f["right_among_named"] < target or f["interval"][0] < lower:
                    continue
                if f["real_named_share"] is not None and f["real_named_share"] > max_real:
                    continue
                key = (f["right"], -f["named"], t, a)  # ties: the strictest floors keeping those names
                if key > best_key:
                    best, best_key = rule, key
    return best


def nested_rule_figures(rec: dict, candidates: list[str], **kw) -> dict:
    """The rule's honest figure: the rows of each evaluation unit (a left-out collection, a fold's left-out
    family, a real source) are named by a rule fitted on every other unit's rows. -> pooled figures and what
    each unit's rule was."""
    unit = unit_keys(rec)
    named = np.zeros(len(unit), bool)
    chosen = {}
    for u in np.unique(unit):
        rest = {k: v[unit != u] for k, v in rec.items()}
        rule = fit_naming_rule(rest, candidates, **kw)
        mine = unit == u
        named[mine] = named_mask({k: v[mine] for k, v in rec.items()}, rule)
        chosen[str(u)] = rule
    return {"figures": rule_figures(rec, named), "rules": chosen, "named": named}


def unit_keys(rec: dict) -> np.ndarray:
    """The evaluation unit of each row: its left-out unit and its true family (AI) or its source (real)."""
    return np.array([f"{u}|{t}" if y == 1 else f"{u}|real: {s}" for u, t, y, s in
                     zip(rec["unit"], rec["truth"], rec["label"], rec["source"])], dtype=object)


def unit_table(rec: dict, named_as_is: np.ndarray, named_rule: np.ndarray) -> list[dict]:
    """One row per (unit, true family or real source) of the left-out rows: n, and named / right under the head
    as it ships today (its open-set threshold only) and under the nested rule."""
    rows = []
    key = unit_keys(rec)
    for k in np.unique(key):
        m = key == k
        unit, truth = str(k).split("|", 1)
        row = {"unit": unit, "kind": str(rec["kind"][m][0]), "truth": truth,
               "n": int(m.sum()), "reach_uncertain": int((rec["verdict"][m] != "real").sum())}
        for tag, named in (("as_is", named_as_is), ("rule", named_rule)):
            nm = named & m
            row[f"named_{tag}"] = int(nm.sum())
            row[f"right_{tag}"] = int((nm & (rec["top"] == rec["truth"]) & (rec["label"] == 1)).sum())
            names, counts = np.unique(rec["top"][nm].astype(str), return_counts=True)
            row[f"names_{tag}"] = {str(a): int(b) for a, b in zip(names, counts)}
        rows.append(row)
    return rows


def run_left_out(config: str | Path, run: str | Path, progress: bool = True, **rule_kw) -> dict:
    """The whole left-out evaluation of a crossval run's pool (`[attribution]` of its TOML: families, minimum
    images, unknown groups) -> report with the units, the rows' table, the figures as the head ships today,
    the naming rule fitted on all rows (what a head ships with) and its nested figure."""
    import json

    from ..data.groups import family_of
    from ..inference.calibration import probabilities, verdicts
    from .attribution import family_map
    from .config import read_toml
    from .crossval import CrossvalConfig, load_pool

    raw = read_toml(config).get("attribution", {})
    cfg = CrossvalConfig.load(config)
    cfg.pairs = []
    run = Path(run)
    rep = json.loads((run / "crossval.json").read_text())
    fold_of = {f: int(k) for k, fams in rep["folds"].items() for f in fams}
    pool = load_pool(cfg, progress)
    missing = sorted(set(pool.families) - set(fold_of))
    if missing:
        raise ValueError(f"{run} was run on another pool: no fold for {', '.join(missing[:5])}")
    groups = np.array([f"{str(g).split(':', 1)[0]}:{f}" for g, f in zip(pool.pool.groups, pool.families)])
    attr_fam, decided = family_map(groups, dict(raw.get("families", {})), int(raw.get("min_images", 50)),
                                   list(raw.get("unknown", [])))
    z = np.load(run / "loso_scores.npz", allow_pickle=True)
    order = {d.tobytes(): i for i, d in enumerate(z["digests"])}
    at = np.array([order.get(d.tobytes(), -1) for d in pool.pool.digests])
    if (at < 0).any():
        raise ValueError(f"{run}/loso_scores.npz lacks {int((at < 0).sum())} pool images: another pool")
    op = rep["operating_point"]
    p_ai = probabilities(z["logits"][at], op["temperature"])
    verdict = np.array(["real", "ai", "uncertain"], dtype=object)[verdicts(p_ai, op["low"], op["high"])]
    collections = np.array([collection_of(n) for n in pool.pool.names], dtype=object)
    units = plan_units(attr_fam, pool.families, collections, pool.pool.labels, fold_of)
    cache: dict[int, np.ndarray] = {}

    def feats_of_fold(k: int) -> np.ndarray:
        if k not in cache:
            cache.clear()  # one fold's features in memory at a time
            cache[k] = fold_features(run, pool, k, progress)
        return cache[k]

    units.sort(key=lambda u: u["fold"])
    rec = left_out_records(units, feats_of_fold, attr_fam, pool.pool.labels, p_ai, verdict, pool.families,
                           float(raw.get("keep_known", 0.80)), int(raw.get("seed", 0)), progress=progress,
                           cache=run / "attribution_units")
    candidates = sorted({u["family"] for u in units if u["kind"] == "collection-out"})
    as_is = rec["accepted"] & (rec["verdict"] != "real")
    nested = nested_rule_figures(rec, candidates, **rule_kw)
    rule = fit_naming_rule(rec, candidates, **rule_kw)
    return {
        "run": str(run), "config": str(config), "families_decided": decided,
        "backbone": "each crossval fold model scores the images of the families it left out: it saw none of their "
                    "collections (stricter than the shipped model, which saw a family's other collections)",
        "verdicts": "left-out P(AI) of the crossval run at its stored operating point",
        "candidates": candidates, "rule_limits": {"target": 0.80, "lower": 0.60, "max_real": 0.02, **rule_kw},
        "units": [{k: v for k, v in u.items() if k not in ("score", "head_fit")} | {"n_scored": int(u["score"].sum()),
                  "n_head_fit": int(u["head_fit"].sum())} for u in units],
        "as_is": rule_figures(rec, as_is), "as_is_by_kind": _by_kind(rec, as_is),
        "rule": rule, "rule_in_sample": rule_figures(rec, named_mask(rec, rule)),
        "nested": nested["figures"], "nested_by_kind": _by_kind(rec, nested["named"]),
        "nested_rules": nested["rules"], "table": unit_table(rec, as_is, nested["named"]),
        "by_family_as_is": _by_family(rec, as_is),
    }


def save_left_out(out: str | Path, rep: dict, command: str = "") -> Path:
    """The report as JSON and Markdown under `out`; -> the JSON's path."""
    from ..data.store import save_json

    out = Path(out)
    save_json(out / "left_out.json", rep | {"command": command})
    (out / "left_out.md").write_text(left_out_markdown(rep, command))
    return out / "left_out.json"


def shipped_rule(rep: dict, report_path: str | Path) -> dict:
    """What a head stores as `info.naming_rule`: the rule fitted on every left-out row, with the figures a card
    and a result note quote."""
    return {**rep["rule"], "left_out": {k: rep[k] for k in ("nested", "as_is", "candidates")},
            "report": str(report_path)}


def _by_kind(rec: dict, named: np.ndarray) -> dict:
    out = {}
    for kind in ("collection-out", "family-out"):
        m = rec["kind"] == kind
        out[kind] = rule_figures({k: v[m] for k, v in rec.items()}, named[m])
    return out


def _by_family(rec: dict, named: np.ndarray) -> dict:
    """For each family the head names: how often that name was given, and how often it was right."""
    out = {}
    for f in sorted(set(rec["top"][named].astype(str))):
        m = named & (rec["top"] == f)
        k, n = int((m & (rec["truth"] == f) & (rec["label"] == 1)).sum()), int(m.sum())
        out[f] = {"named": n, "right": k, "text": share_text(k, n)}
    return out


def left_out_markdown(rep: dict, command: str = "") -> str:
    """The report as a page: pooled figures first (as the head ships today, the rule in sample, the rule
    nested), then every left-out collection, every fold's left-out families and every real source."""
    def fig(f: dict) -> str:
        real = f"{f['real_named']} of {f['real_uncertain']}"
        return f"| {share_text(f['right'], f['named'])} | {f['ai_named']} of {f['ai_rows']} | {real} |"

    rule = rep["rule"]
    said = ("nothing is named from pixels" if not rule["families"] else
            f"name {', '.join(rule['families'])} when its probability ≥ {rule['min_probability']} and P(AI) ≥ "
            f"{rule['min_p_ai']}")
    lines = ["# Generator names on collections and families the head never saw", "",
             f"Command: `{command}`" if command else "", "",
             f"Backbone: {rep['backbone']}. Verdicts: {rep['verdicts']}. Families named: "
             f"{', '.join(sorted(rep['families_decided']['known']))}; validated on a left-out collection: "
             f"{', '.join(rep['candidates']) or 'none'}.", "",
             "| names given by | right among named | AI rows named | real photos reaching can't tell, named |",
             "| --- | --- | --- | --- |",
             "| the head as it shipped (open-set threshold only) " + fig(rep["as_is"]),
             "| … collection-out rows only " + fig(rep["as_is_by_kind"]["collection-out"]),
             "| … family-out rows only " + fig(rep["as_is_by_kind"]["family-out"]),
             "| the naming rule, fitted on all rows (in sample) " + fig(rep["rule_in_sample"]),
             "| **the naming rule, nested (each unit named by a rule fitted without it)** " + fig(rep["nested"]), "",
             f"Shipped rule: {said} (limits: right among named ≥ {rep['rule_limits']['target']:.0%}, Wilson lower "
             f"bound ≥ {rep['rule_limits']['lower']:.0%}, real photos named ≤ {rep['rule_limits']['max_real']:.0%}).",
             "", "Names the shipped head gave before the rule, by name: " + "; ".join(
                 f"{k} {v['text']} right" for k, v in rep["by_family_as_is"].items()) + ".", "",
             "Per unit: n, how many reached \"can't tell\" (or \"ai\"), how many got a name before the rule and how "
             "many of those were right (as a share with its 95% interval from 20 named up), and the same under the "
             "nested rule.", "",
             "| left out | kind | true | n | reach can't tell | named before | right among named before | names before | named under nested rule (right) |",
             "| --- | --- | --- | ---: | ---: | ---: | --- | --- | --- |"]
    for r in sorted(rep["table"], key=lambda r: (r["kind"], r["unit"], r["truth"])):
        names = ", ".join(f"{k} {v}" for k, v in sorted(r["names_as_is"].items(), key=lambda kv: -kv[1]))
        lines.append(f"| {r['unit']} | {r['kind']} | {r['truth']} | {r['n']} | {r['reach_uncertain']} | "
                     f"{r['named_as_is']} | {share_text(r['right_as_is'], r['named_as_is'])} | "
                     f"{names or '—'} | {r['named_rule']} ({r['right_rule']}) |")
    return "\n".join(lines) + "\n"

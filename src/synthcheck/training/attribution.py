"""Fitting the generator-attribution head (`inference.attribution.AttributionHead`) on a photo model's own
features: a seeded held-out part for top-1, leave-one-family-out runs for the open-set rule and its threshold,
and `run_attribution`, which does it all on a cross-validation pool and saves the head beside the model."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from ..inference.attribution import SCORES, UNKNOWN, AttributionHead, open_set_scores


def fit_head(feats: np.ndarray, families: np.ndarray, c: float = 0.1, pca: int = 64, seed: int = 0) -> AttributionHead:
    """Multinomial logistic regression on standardised features (scikit-learn), plus the whitened PCA space
    and family centres the Mahalanobis score needs. Rows whose family is UNKNOWN (generators the head must
    not name) train one extra "outlier" class (outlier exposure); they never get a name or a centre."""
    from sklearn.decomposition import PCA
    from sklearn.linear_model import LogisticRegression

    x = np.asarray(feats, np.float64)
    fams = np.asarray(families, dtype=object)
    names = sorted(set(fams[fams != UNKNOWN]))
    y = np.array([names.index(f) if f != UNKNOWN else len(names) for f in fams])
    mean, scale = x.mean(0), x.std(0) + 1e-6
    z = (x - mean) / scale
    lr = LogisticRegression(C=c, max_iter=3000, random_state=seed).fit(z, y)
    weight, bias = lr.coef_, lr.intercept_
    if len(lr.classes_) == 2:  # scikit-learn gives one row for two classes: make it a two-logit softmax
        weight, bias = np.vstack([-weight / 2, weight / 2]), np.array([-bias[0] / 2, bias[0] / 2])
    p = PCA(n_components=min(pca, z.shape[1], len(z) - 1), whiten=True, random_state=seed).fit(z[y < len(names)])
    comps = p.components_.T / np.sqrt(p.explained_variance_)
    w = (z - p.mean_) @ comps
    centres = np.stack([w[y == k].mean(0) for k in range(len(names))])
    # fold PCA's centring into the centres (scores use z @ comps)
    centres = centres + p.mean_ @ comps
    return AttributionHead(names, mean, scale, weight, bias, centres, comps)


def leave_one_family_out(feats: np.ndarray, families: np.ndarray, known_test: np.ndarray, **kw) -> dict:
    """Each named family in turn left out of the head: its images should be rejected, while held-out images of
    the families the head kept (`known_test`, never trained on) should still be named. UNKNOWN rows outside
    `known_test` train the outlier class in every run (they are never the left-out family). -> per rule, the
    scores of both kinds, pooled over the runs, and the rules' thresholds need one scale: one C for all runs."""
    fams = np.asarray(families, dtype=object)
    train = ~known_test
    rules = SCORES if (fams[train] == UNKNOWN).any() else tuple(r for r in SCORES if r != "outlier")
    out = {r: {"known": [], "unknown": [], "unknown_family": []} for r in rules}
    for f in sorted(set(fams[train & (fams != UNKNOWN)])):
        tr = train & (fams != f)
        head = fit_head(feats[tr], fams[tr], **kw)
        kt = known_test & (fams != f) & (fams != UNKNOWN)
        for r in rules:
            out[r]["known"].append(open_set_scores(head, feats[kt], r))
            unk = open_set_scores(head, feats[fams == f], r)
            out[r]["unknown"].append(unk)
            out[r]["unknown_family"] += [f] * len(unk)
    for r in rules:
        out[r]["known"] = np.concatenate(out[r]["known"])
        out[r]["unknown"] = np.concatenate(out[r]["unknown"])
        out[r]["unknown_family"] = np.array(out[r]["unknown_family"])
    return out


def fit_open_set(lofo: dict, keep_known: float = 0.80) -> dict:
    """Choose the rejection score that rejects most left-out-family images at the threshold keeping
    `keep_known` of held-out known images named (the goal's operating point). -> rule, threshold, and per rule
    the figures (ROC-AUC known vs left-out beside them)."""
    from sklearn.metrics import roc_auc_score

    figures = {}
    for r, d in lofo.items():
        known, unknown = d["known"], d["unknown"]
        thr = float(np.quantile(known, 1 - keep_known))
        per_family = {f: float((unknown[d["unknown_family"] == f] < thr).mean()) for f in np.unique(d["unknown_family"])}
        figures[r] = {"roc_auc": float(roc_auc_score(np.r_[np.ones(len(known)), np.zeros(len(unknown))],
                                                     np.r_[known, unknown])),
                      "threshold": thr, "known_named": float((known >= thr).mean()),
                      "unknown_rejected": float((unknown < thr).mean()), "unknown_rejected_by_family": per_family}
    best = max(figures, key=lambda r: (figures[r]["unknown_rejected"], figures[r]["roc_auc"]))
    return {"rule": best, "threshold": figures[best]["threshold"], "figures": figures}


C_GRID = (0.01, 0.03, 0.1, 0.3)  # regularisation of the head, chosen with the rule on left-out families


def choose_open_set(feats: np.ndarray, families: np.ndarray, known_test: np.ndarray, keep_known: float = 0.80,
                    cs=C_GRID, seed: int = 0) -> dict:
    """Rule and C together on leave-one-family-out runs: -> the best fit_open_set result, with "c", its "lofo"
    scores, and every C's figures."""
    fits = []
    for c in cs:
        lofo = leave_one_family_out(feats, families, known_test, c=c, seed=seed)
        fits.append(fit_open_set(lofo, keep_known) | {"c": c, "lofo": lofo})
    best = max(fits, key=lambda f: (f["figures"][f["rule"]]["unknown_rejected"], f["figures"][f["rule"]]["roc_auc"]))
    best["by_c"] = {str(f["c"]): {"rule": f["rule"], "unknown_rejected": f["figures"][f["rule"]]["unknown_rejected"]}
                    for f in fits}
    return best


def nested_open_set(feats: np.ndarray, families: np.ndarray, known_test: np.ndarray, keep_known: float = 0.80,
                    cs=C_GRID, seed: int = 0) -> dict:
    """The honest open-set figure: each named family in turn is left out of everything, rule and C are
    chosen on leave-one-family-out runs over the other families only, a head with that choice is trained
    without it, and its threshold keeps `keep_known` of the held-out known images named. -> share of the
    left-out families' images answered "unknown" (pooled and per family), and what each run chose."""
    fams = np.asarray(families, dtype=object)
    named = sorted(set(fams[~known_test & (fams != UNKNOWN)]))
    rejected, per, chose = [], {}, {}
    for f in named:
        keep = fams != f
        inner = choose_open_set(feats[keep], fams[keep], known_test[keep], keep_known, cs, seed)
        head = fit_head(feats[keep & ~known_test], fams[keep & ~known_test], c=inner["c"], seed=seed)
        kt = keep & known_test & (fams != UNKNOWN)
        thr = np.quantile(open_set_scores(head, feats[kt], inner["rule"]), 1 - keep_known)
        r = open_set_scores(head, feats[fams == f], inner["rule"]) < thr
        rejected.append(r)
        per[f], chose[f] = float(r.mean()), {"rule": inner["rule"], "c": inner["c"]}
    allr = np.concatenate(rejected) if rejected else np.zeros(0, bool)
    return {"unknown_rejected": float(allr.mean()) if len(allr) else None, "known_named": keep_known,
            "unknown_rejected_by_family": per, "chosen": chose}


def trade_off_curve(lofo: dict, rule: str, points: int = 50) -> dict:
    """Share of held-out known images named vs share of left-out-family images rejected, over thresholds."""
    d = lofo[rule]
    qs = np.quantile(np.r_[d["known"], d["unknown"]], np.linspace(0, 1, points))
    return {"threshold": qs.tolist(), "known_named": [float((d["known"] >= q).mean()) for q in qs],
            "unknown_rejected": [float((d["unknown"] < q).mean()) for q in qs]}


def family_map(groups: np.ndarray, mapping: dict, min_images: int, unknown: list[str]) -> tuple[np.ndarray, dict]:
    """Generator family of each AI image: its group's generator, renamed by `mapping` (e.g. the ten CNNDetection
    generators -> "cnndetection-gan"). Families under `min_images` are too thin to name: their images, and
    those of `unknown` groups (generator not stated), become "unknown" examples. -> (family per image, with ""
    for real images and UNKNOWN for unknown examples; a summary of the decision)."""
    from ..data.groups import family_of

    raw = np.array([mapping.get(family_of(g), family_of(g)) if str(g).startswith("ai:") else "" for g in groups],
                   dtype=object)
    raw[np.isin([family_of(g) for g in groups], unknown) & (raw != "")] = UNKNOWN
    names, counts = np.unique(raw[(raw != "") & (raw != UNKNOWN)].astype(str), return_counts=True)
    thin = {str(n): int(c) for n, c in zip(names, counts) if c < min_images}
    known = {str(n): int(c) for n, c in zip(names, counts) if c >= min_images}
    fam = raw.copy()
    fam[np.isin(fam.astype(str), list(thin))] = UNKNOWN
    return fam, {"known": known, "too_thin_to_name": thin, "min_images": min_images, "unknown_groups": unknown,
                 "mapping": mapping, "unknown_examples": int((fam == UNKNOWN).sum())}


def fit_chosen(feats: np.ndarray, families: np.ndarray, test_fraction: float = 0.25, keep_known: float = 0.80,
               seed: int = 0, cs=C_GRID) -> tuple[AttributionHead, dict, np.ndarray, np.ndarray]:
    """The head as it ships: a seeded split of the named families' images, stratified by family; rule, C and
    threshold chosen on leave-one-family-out runs (`choose_open_set`), the head fitted on the training part and
    the unknown examples. -> (head, the choice, training and held-out indices of named-family images)."""
    from sklearn.model_selection import train_test_split

    fam = np.asarray(families, dtype=object)
    known_idx = np.flatnonzero((fam != "") & (fam != UNKNOWN))
    unknown_idx = np.flatnonzero(fam == UNKNOWN)
    tr, te = train_test_split(known_idx, test_size=test_fraction, random_state=seed, stratify=fam[known_idx].astype(str))
    fit_idx = np.r_[tr, unknown_idx]
    held = np.r_[np.zeros(len(fit_idx), bool), np.ones(len(te), bool)]
    choice = choose_open_set(feats[np.r_[fit_idx, te]], fam[np.r_[fit_idx, te]], held, keep_known, cs, seed)
    head = fit_head(feats[fit_idx], fam[fit_idx], c=choice["c"], seed=seed)
    head.rule, head.threshold = choice["rule"], choice["threshold"]
    return head, choice, tr, te


def fit_attribution(feats: np.ndarray, families: np.ndarray, test_fraction: float = 0.25, keep_known: float = 0.80,
                    seed: int = 0, groups: np.ndarray | None = None, cs=C_GRID) -> tuple[AttributionHead, dict]:
    """The whole fit on one set of features: a seeded image split of the named families stratified by family
    (top-1 on the held-out part); the "unknown" examples (thin families, unstated generators) train the
    outlier class; rule, C and threshold chosen on leave-one-family-out runs, and the honest open-set figure
    from nested runs (`nested_open_set`); the head on the training part. The share of unknown examples it
    rejects is cross-fitted: each of their groups (`groups`; without them, two random halves) is scored by a
    head that never saw it."""
    from sklearn.metrics import confusion_matrix

    fam = np.asarray(families, dtype=object)
    head, choice, tr, te = fit_chosen(feats, fam, test_fraction, keep_known, seed, cs)
    unknown_idx = np.flatnonzero(fam == UNKNOWN)
    fit_idx = np.r_[tr, unknown_idx]
    x, f = feats[np.r_[fit_idx, te]], fam[np.r_[fit_idx, te]]
    held = np.r_[np.zeros(len(fit_idx), bool), np.ones(len(te), bool)]
    nested = nested_open_set(x, f, held, keep_known, cs, seed)
    probs = head.probabilities(feats[te])
    pred = np.array(head.families)[probs.argmax(1)]
    named = head.score(feats[te]) >= head.threshold
    rejected = _cross_fitted_rejection(head, choice["c"], feats, fam, tr, unknown_idx, groups, seed)
    report = {
        "families": head.families, "n_train": int(len(tr)), "n_test": int(len(te)),
        "n_outlier_examples": int(len(unknown_idx)), "c": choice["c"],
        "top1": float((pred == fam[te]).mean()),
        "top1_among_named": float((pred[named] == fam[te][named]).mean()) if named.any() else None,
        "test_named": float(named.mean()),
        "confusion_matrix": confusion_matrix(fam[te].astype(str), pred, labels=head.families).tolist(),
        "open_set": {"rule": choice["rule"], "threshold": choice["threshold"], "c": choice["c"],
                     "figures": choice["figures"], "by_c": choice["by_c"], "nested": nested},
        "trade_off": trade_off_curve(choice["lofo"], choice["rule"]),
        "unknown_examples_rejected": rejected,
        "per_family_test_top1": {n: float((pred[fam[te] == n] == n).mean()) for n in head.families},
    }
    head.info = {k: report[k] for k in ("top1", "test_named", "unknown_examples_rejected", "n_train", "n_test",
                                        "n_outlier_examples", "c")}
    head.info["open_set"] = {k: report["open_set"][k] for k in ("rule", "c", "figures", "nested")}
    return head, report


def _cross_fitted_rejection(head: AttributionHead, c: float, feats, fam, tr, unknown_idx, groups, seed) -> float | None:
    """Share of unknown examples answered "unknown" by heads (the shipped rule, C and threshold) that never
    trained on their group."""
    if not len(unknown_idx):
        return None
    if groups is not None:
        g = np.asarray(groups, dtype=object)[unknown_idx]
    else:
        g = np.random.default_rng(seed).permutation(len(unknown_idx)) % 2
    rejected = np.zeros(len(unknown_idx), bool)
    for k in np.unique(g):
        rest = unknown_idx[g != k]
        if not len(rest) and head.rule == "outlier":
            return None  # one unknown group only: nothing else to learn the outlier class from
        h = fit_head(feats[np.r_[tr, rest]], fam[np.r_[tr, rest]], c=c, seed=seed)
        rejected[g == k] = open_set_scores(h, feats[unknown_idx[g == k]], head.rule) < head.threshold
    return float(rejected.mean())


def plot_attribution(report: dict, path: str | Path) -> None:
    """Confusion matrix on the held-out known images, and the open-set trade-off curve."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fams, cm = report["families"], np.array(report["confusion_matrix"])
    fig, (a, b) = plt.subplots(1, 2, figsize=(11, 4.5))
    a.imshow(cm, cmap="Blues")
    a.set_xticks(range(len(fams)), fams, rotation=30, ha="right")
    a.set_yticks(range(len(fams)), fams)
    for i in range(len(fams)):
        for j in range(len(fams)):
            a.text(j, i, str(cm[i, j]), ha="center", va="center", color="black")
    a.set_xlabel("predicted family")
    a.set_ylabel("true family")
    a.set_title(f"held-out images: top-1 {report['top1']:.2f}")
    t = report["trade_off"]
    b.plot(t["unknown_rejected"], t["known_named"])
    r = report["open_set"]["figures"][report["open_set"]["rule"]]
    b.scatter([r["unknown_rejected"]], [r["known_named"]], color="red", zorder=3, label="chosen threshold")
    b.axhline(0.8, ls=":", color="grey")
    b.axvline(0.7, ls=":", color="grey")
    b.set_xlabel("left-out generator's images answered 'unknown'")
    b.set_ylabel("held-out known images named")
    nested = report["open_set"].get("nested") or {}
    if nested.get("unknown_rejected") is not None:
        b.scatter([nested["unknown_rejected"]], [nested["known_named"]], color="black", marker="x", zorder=3,
                  label="nested (rule and C chosen without the left-out family)")
    b.set_title(f"leave-one-family-out ({report['open_set']['rule']}, C={report['open_set'].get('c')})")
    b.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def run_attribution(config: str | Path, model_dir: str | Path, out: str | Path, progress: bool = True,
                    naming: dict | None = None) -> dict:
    """Fit the attribution head of a photo model on its cross-validation pool (`[attribution]` of the crossval
    TOML: family mapping, minimum images, unknown groups), write it beside the model's weights and the figures
    (JSON + PNG) to `out`. Features come from the model's own scoring pass over the same native tiles. `naming`:
    the naming rule fitted on collections and families left out (`attribution_out.shipped_rule`), shipped in
    the head."""

    from ..data.preprocess import PreprocessSpec
    from ..data.store import save_json
    from ..inference.scoring import score_with_features
    from ..models.checkpoint import load_model
    from ..models.features import FEATURES
    from .config import as_tiles, read_toml
    from .crossval import CrossvalConfig, load_pool

    raw = read_toml(config).get("attribution", {})
    cfg = CrossvalConfig.load(config)
    cfg.pairs = []  # pseudo-fakes are no generator's images
    model, mcfg = load_model(model_dir)
    pool = load_pool(cfg, progress)
    tiles = as_tiles(pool.pool, PreprocessSpec.from_dict(mcfg["preprocess"]))
    _, feats = score_with_features(model, tiles.images, 256)
    from ..data.groups import family_of

    # the crossval merge first (one generator under two names), then the attribution families
    groups = np.array([f"{str(g).split(':', 1)[0]}:{cfg.merge.get(family_of(g), family_of(g))}" for g in pool.pool.groups])
    fam, summary = family_map(groups, dict(raw.get("families", {})),
                              int(raw.get("min_images", 50)), list(raw.get("unknown", [])))
    head, report = fit_attribution(feats, fam, float(raw.get("test_fraction", 0.25)), float(raw.get("keep_known", 0.80)),
                                   int(raw.get("seed", 0)), groups=groups)
    report["families_decided"] = summary
    head.info["families_decided"] = summary
    head.info["features"] = FEATURES  # a Detector uses the head only with the same kind of features
    if naming is not None:
        head.info["naming_rule"] = report["naming_rule"] = naming
    # what `evaluate` needs to name the expected answer of any AI group (merge, then families; thin -> unknown)
    head.info["group_family"] = {family_of(g): str(f) for g, f in zip(pool.pool.groups, fam) if str(g).startswith("ai:")}
    head.save(model_dir)
    from ..analysis.card import write_model_card

    write_model_card(Path(model_dir), mcfg)  # the card's attribution section follows the head
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    save_json(out / "attribution.json", report)
    plot_attribution(report, out / "attribution.png")
    return report

"""Fitting the generator-attribution head (`inference.attribution.AttributionHead`) on a photo model's own
features: a seeded held-out part for top-1, leave-one-family-out runs for the open-set rule and its threshold,
and `run_attribution`, which does it all on a cross-validation pool and saves the head beside the model."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from ..inference.attribution import SCORES, UNKNOWN, AttributionHead, open_set_scores


def fit_head(feats: np.ndarray, families: np.ndarray, c: float = 0.1, pca: int = 64, seed: int = 0) -> AttributionHead:
    """Multinomial logistic regression on standardised features (scikit-learn), plus the whitened PCA space
    and family centres the Mahalanobis score needs."""
    from sklearn.decomposition import PCA
    from sklearn.linear_model import LogisticRegression

    x = np.asarray(feats, np.float64)
    names = sorted(set(families))
    y = np.array([names.index(f) for f in families])
    mean, scale = x.mean(0), x.std(0) + 1e-6
    z = (x - mean) / scale
    lr = LogisticRegression(C=c, max_iter=2000, random_state=seed).fit(z, y)
    weight, bias = lr.coef_, lr.intercept_
    if len(names) == 2:  # scikit-learn gives one row for two classes: make it a two-logit softmax
        weight, bias = np.vstack([-weight / 2, weight / 2]), np.array([-bias[0] / 2, bias[0] / 2])
    p = PCA(n_components=min(pca, z.shape[1], len(z) - 1), whiten=True, random_state=seed).fit(z)
    comps = p.components_.T / np.sqrt(p.explained_variance_)
    w = (z - p.mean_) @ comps
    centres = np.stack([w[y == k].mean(0) for k in range(len(names))])
    # fold PCA's centring into the centres (scores use z @ comps)
    centres = centres + p.mean_ @ comps
    return AttributionHead(names, mean, scale, weight, bias, centres, comps)


def leave_one_family_out(feats: np.ndarray, families: np.ndarray, known_test: np.ndarray, extra_unknown=None,
                         **kw) -> dict:
    """Each known family in turn left out of the head: its images should be rejected, while held-out images of
    the families the head kept (`known_test`, never trained on) should still be named. -> per rule, the
    scores of both kinds, pooled over the runs (for choosing the rule and its threshold)."""
    fams = np.asarray(families, dtype=object)
    train = ~known_test
    out = {r: {"known": [], "unknown": [], "unknown_family": []} for r in SCORES}
    for f in sorted(set(fams[train])):
        tr = train & (fams != f)
        head = fit_head(feats[tr], fams[tr], **kw)
        kt = known_test & (fams != f)
        for r in SCORES:
            out[r]["known"].append(open_set_scores(head, feats[kt], r))
            unk = open_set_scores(head, feats[fams == f], r)
            out[r]["unknown"].append(unk)
            out[r]["unknown_family"] += [f] * len(unk)
    for r in SCORES:
        out[r]["known"] = np.concatenate(out[r]["known"])
        out[r]["unknown"] = np.concatenate(out[r]["unknown"])
        out[r]["unknown_family"] = np.array(out[r]["unknown_family"])
    return out


def fit_open_set(lofo: dict, keep_known: float = 0.80) -> dict:
    """Choose the rejection score with the best known-vs-unknown ROC-AUC on the left-out runs, and the threshold
    that keeps `keep_known` of held-out known images named. -> rule, threshold, and per rule the figures."""
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
    best = max(figures, key=lambda r: figures[r]["roc_auc"])
    return {"rule": best, "threshold": figures[best]["threshold"], "figures": figures}


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


def fit_attribution(feats: np.ndarray, families: np.ndarray, test_fraction: float = 0.25, keep_known: float = 0.80,
                    seed: int = 0) -> tuple[AttributionHead, dict]:
    """The whole fit on one set of features: a seeded image split stratified by family (top-1 on the held-out
    part), leave-one-family-out runs on the training part (rule and threshold), the head on the training part,
    and the share of "unknown" examples (thin families, unstated generators) it rejects."""
    from sklearn.metrics import confusion_matrix
    from sklearn.model_selection import train_test_split

    fam = np.asarray(families, dtype=object)
    known_idx = np.flatnonzero((fam != "") & (fam != UNKNOWN))
    unknown_idx = np.flatnonzero(fam == UNKNOWN)
    tr, te = train_test_split(known_idx, test_size=test_fraction, random_state=seed, stratify=fam[known_idx].astype(str))
    x, f = feats[np.r_[tr, te]], fam[np.r_[tr, te]]
    held = np.r_[np.zeros(len(tr), bool), np.ones(len(te), bool)]
    lofo = leave_one_family_out(x, f, held, seed=seed)
    rule = fit_open_set(lofo, keep_known)
    head = fit_head(feats[tr], fam[tr], seed=seed)
    head.rule, head.threshold = rule["rule"], rule["threshold"]
    probs = head.probabilities(feats[te])
    pred = np.array(head.families)[probs.argmax(1)]
    named = head.score(feats[te]) >= head.threshold
    unk_named = head.score(feats[unknown_idx]) >= head.threshold if len(unknown_idx) else np.zeros(0, bool)
    report = {
        "families": head.families, "n_train": int(len(tr)), "n_test": int(len(te)),
        "top1": float((pred == fam[te]).mean()),
        "top1_among_named": float((pred[named] == fam[te][named]).mean()) if named.any() else None,
        "test_named": float(named.mean()),
        "confusion_matrix": confusion_matrix(fam[te].astype(str), pred, labels=head.families).tolist(),
        "open_set": {k: v for k, v in rule.items()},
        "trade_off": trade_off_curve(lofo, rule["rule"]),
        "unknown_examples_rejected": float(1 - unk_named.mean()) if len(unknown_idx) else None,
        "per_family_test_top1": {n: float((pred[fam[te] == n] == n).mean()) for n in head.families},
    }
    head.info = {k: report[k] for k in ("top1", "test_named", "unknown_examples_rejected", "n_train", "n_test")}
    head.info["open_set"] = {"rule": rule["rule"], "figures": {r: {k: v for k, v in fig.items()}
                                                               for r, fig in rule["figures"].items()}}
    return head, report


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
    b.set_title(f"leave-one-family-out ({report['open_set']['rule']})")
    b.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def run_attribution(config: str | Path, model_dir: str | Path, out: str | Path, progress: bool = True) -> dict:
    """Fit the attribution head of a photo model on its cross-validation pool (`[attribution]` of the crossval
    TOML: family mapping, minimum images, unknown groups), write it beside the model's weights and the figures
    (JSON + PNG) to `out`. Features come from the model's own scoring pass over the same native tiles."""
    import tomllib

    from ..data.preprocess import PreprocessSpec
    from ..data.store import save_json
    from ..inference.scoring import score_with_features
    from ..models.checkpoint import load_model
    from .config import as_tiles
    from .crossval import CrossvalConfig, load_pool

    raw = tomllib.loads(Path(config).read_text()).get("attribution", {})
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
                                   int(raw.get("seed", 0)))
    report["families_decided"] = summary
    head.info["families_decided"] = summary
    # what `evaluate` needs to name the expected answer of any AI group (merge, then families; thin -> unknown)
    head.info["group_family"] = {family_of(g): str(f) for g, f in zip(pool.pool.groups, fam) if str(g).startswith("ai:")}
    head.save(model_dir)
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    save_json(out / "attribution.json", report)
    plot_attribution(report, out / "attribution.png")
    return report

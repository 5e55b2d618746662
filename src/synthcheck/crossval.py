"""Leave-sources-out evaluation: every source group is left out of training once and scored by a model that
never saw it, which is what a user gets on a generator or camera the model has never seen.

Grouped K-fold over *families* (a group without its label, so a GAN's fakes and its real counterparts leave
together; `merge` joins one generator known under two names). Aligned pseudo-fakes (`synthcheck pairs`) are
training-only: never scored, and dropped from a fold's training when their real twin is left out. The pooled
left-out scores then fit the operating point (temperature, threshold, uncertain band), and the figures at
that point are reported cross-fitted: each family's verdicts come from a band fitted on the others' scores.
"""

from __future__ import annotations

import dataclasses
import logging
import tomllib
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from .augment import AugmentConfig
from .calibration import choose_threshold, fit_abstention, fit_temperature, probabilities, selective_figures
from .data import ImageSet, Splits, concat_sets, load_imageset, save_json, stratified_split, strata
from .groups import CLASS_NAMES, family_of, lookup, manifest_path, read_manifest
from .train import TrainConfig, as_tiles, model_spec

log = logging.getLogger("synthcheck")


@dataclass
class CrossvalConfig:
    sources: list[str]                      # the pool: every group in it is left out once
    pairs: list[str] = field(default_factory=list)  # training-only aligned pairs (synthcheck pairs)
    pairs_per_photo: int = 0                # with several autoencoders: keep this many pseudo-fakes per real photo
                                            # (seeded draw; 0 = all), so mixing families does not add data
    folds: int = 5
    seed: int = 0
    merge: dict = field(default_factory=dict)       # family -> family it belongs with
    train_ai: bool = True                   # train on the pool's generated images (False: aligned fakes only)
    hold_out: str | None = None             # file of names kept out of the final model (its held-out test part)
    max_wrong_group: float = 0.10           # operating-point limits on the left-out scores
    max_wrong_pooled: float = 0.05
    train: TrainConfig = field(default_factory=TrainConfig)

    @classmethod
    def load(cls, path: str | Path, overrides: dict | None = None) -> "CrossvalConfig":
        raw = tomllib.loads(Path(path).read_text())
        data, tr, cal = raw.get("data", {}), dict(raw.get("train", {})), raw.get("calibration", {})
        aug = AugmentConfig(**tr.pop("augment", {}))
        cfg = cls(train=TrainConfig.from_dict({**tr, "augment": aug}), **data, **cal)
        for k, v in (overrides or {}).items():
            setattr(cfg, k, v)
        return cfg

    def to_dict(self) -> dict:
        d = dataclasses.asdict(self)
        d["train"] = self.train.to_dict()
        return d


def assign_folds(families: np.ndarray, k: int, seed: int) -> dict[str, int]:
    """Families -> fold, largest first into the currently smallest fold (ties broken by a seeded shuffle),
    so folds hold about equal numbers of images and no family is split."""
    names, counts = np.unique(families, return_counts=True)
    rng = np.random.default_rng(seed)
    order = sorted(range(len(names)), key=lambda i: (-counts[i], rng.random()))
    load = np.zeros(k, dtype=int)
    out = {}
    for i in order:
        f = int(np.argmin(load))
        out[str(names[i])] = f
        load[f] += counts[i]
    return out


@dataclass
class Pool:
    """The data of one cross-validation: pool (scored) and training-only images, in one native store."""

    pool: ImageSet
    extra: ImageSet | None          # training-only (aligned pairs)
    families: np.ndarray            # per pool image
    extra_blocked: np.ndarray       # per extra image: the family whose leaving out removes it ("" = never)
    categories: np.ndarray          # per pool image: manifest category ("" when none)


def load_pool(cfg: CrossvalConfig, progress: bool = True) -> Pool:
    spec = _store_spec(cfg.train)
    sets = [load_imageset(s, spec, workers=cfg.train.workers, progress=progress) for s in cfg.sources]
    pool = _unique(concat_sets(sets))
    cats = np.concatenate([_categories(src, s) for src, s in zip(cfg.sources, sets)])
    cats = cats[_unique_index(concat_sets(sets))]
    fam = np.array([cfg.merge.get(family_of(g), family_of(g)) for g in pool.groups], dtype=object)
    extra, blocked = None, np.zeros(0, dtype=object)
    if cfg.pairs:
        seen = {d.tobytes() for d in pool.digests}
        ex = concat_sets([load_imageset(s, spec, workers=cfg.train.workers, progress=progress) for s in cfg.pairs])
        keep = [i for i, d in enumerate(ex.digests) if d.tobytes() not in seen]  # originals already in the pool
        if cfg.pairs_per_photo:
            keep = _per_photo(keep, ex.twins, cfg.pairs_per_photo, cfg.seed)
        extra = ex.subset(np.array(keep, dtype=int))
        by_digest = {d.tobytes().hex(): f for d, f in zip(pool.digests, fam)}
        blocked = np.array([by_digest.get(t, "") for t in extra.twins], dtype=object)
        if len(extra) and not (blocked != "").any():
            log.warning("none of the pairs' originals is in the pool: they are never dropped from a fold")
    return Pool(pool, extra, fam, blocked, cats)


def _per_photo(keep: list[int], twins: np.ndarray, n: int, seed: int) -> list[int]:
    """At most n pseudo-fakes of each real photo, drawn with a seeded shuffle (one family or another per photo)."""
    rng = np.random.default_rng(seed)
    order = [keep[i] for i in rng.permutation(len(keep))]
    taken: dict[str, int] = {}
    out = []
    for i in order:
        t = twins[i]
        if not t or taken.get(t, 0) < n:
            taken[t] = taken.get(t, 0) + 1
            out.append(i)
    return sorted(out)


def _store_spec(cfg: TrainConfig):
    from .preprocess import PreprocessSpec

    return PreprocessSpec(cfg.image_size, cfg.resize_policy)


def _unique_index(s: ImageSet) -> np.ndarray:
    _, first = np.unique(s.digests, axis=0, return_index=True)
    return np.sort(first)


def _unique(s: ImageSet) -> ImageSet:
    """Byte-identical files once (the first occurrence): a file in two sources must not sit in two folds."""
    idx = _unique_index(s)
    return s if len(idx) == len(s) else s.subset(idx)


def _categories(source: str, s: ImageSet) -> np.ndarray:
    manifest = read_manifest(manifest_path(source))
    return np.array([(lookup(manifest, n) or {}).get("category", "") or "" for n in s.names], dtype=object)


def fold_training_set(pool: Pool, fold_of: dict[str, int], k: int, train_ai: bool) -> ImageSet:
    """Fold k's training images: the pool outside fold k (its AI images only if `train_ai`) and the
    training-only images whose twin's family is not left out in fold k."""
    in_fold = np.array([fold_of[f] == k for f in pool.families])
    keep = ~in_fold & ((pool.pool.labels == 0) | train_ai)
    parts = [pool.pool.subset(np.flatnonzero(keep))]
    if pool.extra is not None and len(pool.extra):
        ok = np.array([b == "" or fold_of.get(b, -1) != k for b in pool.extra_blocked])
        parts.append(pool.extra.subset(np.flatnonzero(ok)))
    return concat_sets(parts)


def run_crossval(cfg: CrossvalConfig, out: str | Path, resume: bool = True, progress: bool = True,
                 only_folds: list[int] | None = None) -> dict:
    """Train one model per fold, score its left-out families, then fit and report the operating point.
    Finished folds (OUT/fold_k/scores.npz) are kept: a rerun continues where it stopped."""
    from .checkpoint import load_model
    from .inference import score_logits
    from .train import train

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    save_json(out / "config.json", cfg.to_dict())
    pool = load_pool(cfg, progress)
    fold_of = assign_folds(pool.families, cfg.folds, cfg.seed)
    spec = model_spec(cfg.train)
    tiles = as_tiles(pool.pool, spec)
    folds = range(cfg.folds) if only_folds is None else only_folds
    for k in folds:
        fdir = out / f"fold_{k}"
        if (fdir / "scores.npz").exists():
            continue
        test_idx = np.flatnonzero([fold_of[f] == k for f in pool.families])
        train_set = fold_training_set(pool, fold_of, k, cfg.train_ai)
        tr, va = stratified_split(strata(train_set), cfg.train.val_fraction, cfg.seed)
        splits = Splits(train_set.subset(tr), train_set.subset(va), None,
                        {"fold": k, "left_out": sorted({str(f) for f, v in fold_of.items() if v == k}),
                         "sizes": {"train": len(tr), "val": len(va), "left_out": len(test_idx)}})
        log.info("fold %d/%d: leaves out %s", k + 1, cfg.folds, ", ".join(splits.report["left_out"]))
        train(list(cfg.sources) + list(cfg.pairs), fdir, cfg.train, resume=resume and (fdir / "last").exists(),
              progress=progress, splits=splits)
        model, mcfg = load_model(fdir / "model")
        logits = score_logits(model, tiles.images[test_idx], batch_size=256)
        np.savez(fdir / "scores.npz", index=test_idx, logits=logits, digests=pool.pool.digests[test_idx],
                 temperature=mcfg["temperature"], threshold=mcfg["threshold"])
    done = [k for k in range(cfg.folds) if (out / f"fold_{k}" / "scores.npz").exists()]
    if len(done) < cfg.folds:
        return {"folds_done": done, "complete": False}
    logits, raw = np.full(len(pool.pool), np.nan), np.full(len(pool.pool), np.nan)
    for k in range(cfg.folds):
        z = np.load(out / f"fold_{k}" / "scores.npz")
        if not np.array_equal(z["digests"], pool.pool.digests[z["index"]]):
            raise ValueError(f"{out}/fold_{k}: scores were made on other data; remove the folder to redo it")
        raw[z["index"]] = z["logits"]
        logits[z["index"]] = own_calibration(z["logits"], *_fold_calibration(out / f"fold_{k}", z))
    report = loso_report(logits, pool.pool.labels, pool.pool.groups, pool.families, pool.categories,
                         cfg.max_wrong_group, cfg.max_wrong_pooled)
    report["folds"] = {str(k): sorted(f for f, v in fold_of.items() if v == k) for k in range(cfg.folds)}
    report["config"] = cfg.to_dict()
    report["training_only"] = {"n": 0 if pool.extra is None else len(pool.extra),
                               "groups": {} if pool.extra is None else _counts(pool.extra.groups)}
    np.savez(out / "loso_scores.npz", logits=logits, raw_logits=raw, labels=pool.pool.labels, groups=pool.pool.groups.astype(str),
             families=pool.families.astype(str), digests=pool.pool.digests, names=np.array(pool.pool.names))
    save_json(out / "crossval.json", report)
    write_markdown(report, out / "crossval.md")
    plot_report(report, out / "crossval.png")
    return report


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


def _fold_calibration(fdir: Path, z) -> tuple[float, float]:
    if "temperature" in z:
        return float(z["temperature"]), float(z["threshold"])
    import json  # scores saved before the calibration was stored beside them

    c = json.loads((fdir / "model" / "config.json").read_text())
    return float(c["temperature"]), float(c["threshold"])


def _counts(a) -> dict:
    names, counts = np.unique(np.asarray(a, dtype=str), return_counts=True)
    return {str(n): int(c) for n, c in zip(names, counts)}


def operating_point(logits: np.ndarray, labels: np.ndarray, groups: np.ndarray, max_wrong_group: float,
                    max_wrong_pooled: float) -> dict:
    """Temperature, threshold (equal error rate) and uncertain band, all fitted on these (left-out) scores."""
    t = fit_temperature(logits, labels)
    p = probabilities(logits, t)
    thr = choose_threshold(p, labels)["threshold"]
    band = fit_abstention(p, labels, groups, thr, max_wrong_pooled, max_wrong_group)
    return {"temperature": t, "threshold": thr, "low": band["low"], "high": band["high"],
            "fit_coverage": band["coverage"]}


MARGINS = (1.0, 0.7, 0.5, 0.3, 0.2, 0.1, 0.0)


def _cross_fitted(logits, labels, groups, families, wg: float, wp: float) -> tuple[np.ndarray, np.ndarray]:
    """Verdicts (1 ai, 0 real, -1 uncertain) and P(AI) of each family under an operating point fitted on the
    other families' left-out scores."""
    probs = np.zeros(len(labels))
    low, high = np.zeros(len(labels)), np.zeros(len(labels))
    for f in np.unique(families):
        m = families == f
        op = operating_point(logits[~m], labels[~m], groups[~m], wg, wp)
        probs[m] = probabilities(logits[m], op["temperature"])
        low[m], high[m] = op["low"], op["high"]
    return np.where(probs >= high, 1, np.where(probs <= low, 0, -1)), probs


def loso_report(logits, labels, groups, families, categories, max_wrong_group: float = 0.10,
                max_wrong_pooled: float = 0.05) -> dict:
    """Per-group and pooled figures of leave-sources-out scores, at an operating point cross-fitted by family
    (each family judged by a band fitted on the other families' scores), and the point fitted on all."""
    from sklearn.metrics import average_precision_score, roc_auc_score

    labels = np.asarray(labels).astype(int)
    groups = np.asarray(groups, dtype=str)
    families = np.asarray(families, dtype=str)
    # The band is fitted with limits tightened (a fraction of the goal's) until the cross-fitted verdicts --
    # each family judged by a band fitted on the other families' scores -- meet the goal itself: a band that
    # only just meets the limits on the scores it was fitted on does not meet them on a new source.
    for margin in MARGINS:
        wg, wp = max_wrong_group * margin, max_wrong_pooled * margin
        v, probs_cf = _cross_fitted(logits, labels, groups, families, wg, wp)
        worst = max(((v[groups == g] >= 0) & (v[groups == g] != labels[groups == g])).mean() for g in np.unique(groups))
        pooled_wrong = ((v >= 0) & (v != labels)).mean()
        if worst <= max_wrong_group and pooled_wrong <= max_wrong_pooled:
            break
    final = operating_point(logits, labels, groups, wg, wp)
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
    ai_aucs = [r["roc_auc"] for r in rows.values() if r["label"] == "ai"]
    answered = v >= 0
    pooled = {"n": int(len(labels)), "roc_auc": float(roc_auc_score(labels, logits)),
              "average_precision": float(average_precision_score(labels, logits)),
              "mean_ai_group_roc_auc": float(np.mean(ai_aucs)),
              "coverage": float(answered.mean()), "confidently_wrong": float((answered & (v != labels)).mean()),
              "error_when_answered": float((v[answered] != labels[answered]).mean()) if answered.any() else None,
              "max_group_confidently_wrong": float(max(r["confidently_wrong"] for r in rows.values())),
              "real_groups_over_10pct_false_ai": [g for g, r in rows.items()
                                                  if r["label"] == "real" and r["called_ai"] > 0.10]}
    in_sample = selective_figures(probs_final, labels, final["low"], final["high"])
    return {"groups": rows, "pooled": pooled, "operating_point": final,
            "operating_point_in_sample": in_sample,
            "limits": {"max_wrong_group": max_wrong_group, "max_wrong_pooled": max_wrong_pooled},
            "by_category": _by_category(probs_final, labels, groups, categories, final["threshold"])}


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


def write_markdown(rep: dict, path: Path) -> None:
    op, pooled = rep["operating_point"], rep["pooled"]
    lines = ["# Leave-sources-out cross-validation", "",
             "Every source group was left out of training once and scored by a model that never saw it: what a user "
             "gets on a generator or camera the model has never seen. Verdicts use an operating point cross-fitted by "
             "family (each family judged by a band fitted on the other families' left-out scores).", "",
             f"Pooled: n {pooled['n']}, ROC-AUC {_f(pooled['roc_auc'])}, AP {_f(pooled['average_precision'])}, "
             f"mean ROC-AUC over AI groups {_f(pooled['mean_ai_group_roc_auc'])}; answered {_f(pooled['coverage'])}, "
             f"confidently wrong {_f(pooled['confidently_wrong'])} (worst group {_f(pooled['max_group_confidently_wrong'])}).", "",
             f"Operating point fitted on all left-out scores (what the bundled model ships): T {op['temperature']:.3f}, "
             f"threshold {op['threshold']:.3f}, uncertain between {op['low']:.3f} and {op['high']:.3f}.", "",
             "| group | label | n | ROC-AUC vs left-out real | answered | confidently wrong | called AI | called AI at threshold |",
             "|---|---|---|---|---|---|---|---|"]
    for g, r in sorted(rep["groups"].items(), key=lambda kv: (kv[1]["label"], kv[0])):
        lines.append(f"| {g} | {r['label']} | {r['n']} | {_f(r.get('roc_auc'))} | {_f(r['coverage'], 2)} | "
                     f"{_f(r['confidently_wrong'], 2)} | {_f(r['called_ai'], 2)} | {_f(r['called_ai_at_threshold'], 2)} |")
    for f, cats in rep.get("by_category", {}).items():
        lines += ["", f"Content held equal in `{f}` (ROC-AUC of its AI vs its real images, per category):", "",
                  "| category | n AI | n real | ROC-AUC |", "|---|---|---|---|"]
        lines += [f"| {c} | {v['n_ai']} | {v['n_real']} | {_f(v['roc_auc'])} |" for c, v in cats.items()]
    lines += ["", "Folds (families left out together):", ""]
    lines += [f"- fold {k}: {', '.join(v)}" for k, v in rep.get("folds", {}).items()]
    path.write_text("\n".join(lines) + "\n")


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


def _hold_out_names(path: str | None) -> set[str]:
    if not path:
        return set()
    return {ln.strip() for ln in Path(path).read_text().splitlines() if ln.strip() and not ln.startswith("#")}


def final_notes(cfg: CrossvalConfig) -> str:
    """What the card must say beyond the config: how the training-only pairs were made, and the proxy's epochs."""
    lines = []
    if cfg.pairs:
        lines.append("Training-only aligned pairs (pseudo-fakes of the pool's real photos) in " + ", ".join(cfg.pairs)
                     + ", made first by `synthcheck pairs " + " ".join(cfg.sources) + " --no-originals --out "
                     + cfg.pairs[0] + "` (TAEF2 from ../shared/weights via SYNTHCHECK_AUTOENCODERS).")
    if cfg.hold_out:
        lines.append(f"Never trained on: the names in {cfg.hold_out} (its test part, the figures above).")
    return " ".join(lines)


def train_final(cfg: CrossvalConfig, out: str | Path, report: dict, progress: bool = True, resume: bool = True,
                command: str | None = None) -> dict:
    """The model to ship: the same recipe trained on every group (less `hold_out`, which becomes its test
    split), with temperature, threshold and uncertain band taken from the leave-sources-out scores, so that
    its confidence is the one measured on sources the cross-validation models never saw."""
    from .card import write_model_card
    from .checkpoint import load_model, save_model
    from .inference import score_logits
    from .metrics import compute_metrics
    from .train import _short, train

    out = Path(out) / "final"
    pool = load_pool(cfg, progress)
    hold = _hold_out_names(cfg.hold_out)
    held = np.array([n in hold for n in pool.pool.names])
    if hold and held.sum() != len(hold):
        raise ValueError(f"{cfg.hold_out}: {len(hold) - int(held.sum())} of its names are not in the pool")
    use = ~held & ((pool.pool.labels == 0) | cfg.train_ai)
    parts = [pool.pool.subset(np.flatnonzero(use))]
    if pool.extra is not None and len(pool.extra):
        # pseudo-fakes of held-out photos stay out too: their content is the test part's
        held_digests = {d.tobytes().hex() for d in pool.pool.digests[held]}
        parts.append(pool.extra.subset(np.flatnonzero([t not in held_digests for t in pool.extra.twins])))
    train_set = concat_sets(parts)
    tr, va = stratified_split(strata(train_set), cfg.train.val_fraction, cfg.seed)
    test = pool.pool.subset(np.flatnonzero(held)) if held.any() else None
    splits = Splits(train_set.subset(tr), train_set.subset(va), test,
                    {"held_out": {"file": cfg.hold_out, "n": int(held.sum())},
                     "sizes": {"train": len(tr), "val": len(va), "test": int(held.sum())},
                     "groups": _counts(train_set.groups)})
    config = train(list(cfg.sources) + list(cfg.pairs), out, cfg.train, resume=resume and (out / "last").exists(),
                   progress=progress, splits=splits)
    op = report["operating_point"]
    # centred on its own validation operating point, as the fold models' left-out scores were (own_calibration),
    # the final model's logits take the left-out fit unchanged: P(AI) = sigmoid((logit - shift) / T_loso)
    t_val, thr_val = config["temperature"], config["threshold"]
    shift = own_centre(t_val, thr_val)
    config.update({
        "temperature": op["temperature"], "logit_shift": shift, "threshold": op["threshold"],
        "own_validation_calibration": {"temperature": t_val, "threshold": thr_val},
        "threshold_rule": {"rule": "equal_error_rate on the pooled leave-sources-out scores"},
        "abstain": {"low": op["low"], "high": op["high"], "max_wrong_group": cfg.max_wrong_group,
                    "max_wrong_pooled": cfg.max_wrong_pooled},
        "calibrated_on": f"leave-sources-out scores of {cfg.folds} cross-validation models ({report['pooled']['n']} images, "
                         f"{len(report['groups'])} source groups), not same-source validation images",
        "command": command or config.get("command"),
        "crossval_proxy": {"epochs": report["config"]["train"]["epochs"], "final_epochs": cfg.train.epochs},
        "domain_rule": "warn",  # the band was fitted on unseen sources: size/aspect warnings inform, never decide
        "crossval": {"pooled": report["pooled"], "groups": report["groups"], "folds": report["folds"],
                     "by_category": report.get("by_category", {})},
    })
    model, _ = load_model(out / "model")
    if test is not None:
        from .preprocess import PreprocessSpec

        tiles = as_tiles(test, PreprocessSpec.from_dict(config["preprocess"]))
        probs = probabilities(score_logits(model, tiles.images, 256) - shift, op["temperature"])
        config["test_metrics"] = _short(compute_metrics(test.labels, probs, op["threshold"],
                                                        uncertain_range=(op["low"], op["high"])))
    config["notes"] = final_notes(cfg)  # kept in the config, so a regenerated card still says it
    save_model(model, out / "model", config)
    write_model_card(out / "model", config)
    return config

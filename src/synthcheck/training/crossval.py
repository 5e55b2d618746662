"""Leave-sources-out evaluation: every source group is left out of training once and scored by a model that
never saw it, which is what a user gets on a generator or camera the model has never seen.

Grouped K-fold over *families* (a group without its label, so a GAN's fakes and its real counterparts leave
together; `merge` joins one generator known under two names). Aligned pseudo-fakes (`synthcheck pairs`) are
training-only: never scored, and dropped from a fold's training when their real twin is left out. The pooled
left-out scores then fit the operating point (temperature, threshold, uncertain band), and the figures at
that point are reported cross-fitted: each family's verdicts come from a band fitted on the others' scores
(`analysis.loso`).
"""

from __future__ import annotations

import dataclasses
import logging
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ..analysis.loso import loso_report, own_calibration, own_centre, plot_report, write_markdown, yardstick
from ..data.augment import AugmentConfig
from ..data.folders import ImageSet, load_imageset
from ..data.groups import family_of, lookup, manifest_path, read_manifest
from ..data.splits import Splits, concat_sets, stratified_split, strata
from ..data.store import save_json
from ..inference.calibration import probabilities
from .conditions import (condition_scores, condition_tiles, fold_save_context, pool_camera_tables,  # noqa: F401
                         unique_tables)
from .config import TrainConfig, as_tiles, model_spec, read_toml

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
    limit_by: str = "group"                 # "family": each label's family (after merge) is held to the per-group
                                            # limit, e.g. "ai:flux" over its generators; groups still reported
    band_conditions: list[str] = field(default_factory=list)  # data.transforms.CONDITIONS also fitted on: the
                                            # left-out images re-scored so transformed, each (group, condition) a group
    report_conditions: list[str] = field(default_factory=list)  # CONDITIONS only reported (the yardstick: the
                                            # panel's worst, the processing swap), not fitted on unless also above
    train: TrainConfig = field(default_factory=TrainConfig)

    @classmethod
    def load(cls, path: str | Path, overrides: dict | None = None) -> "CrossvalConfig":
        raw = read_toml(path)
        data, tr, cal = raw.get("data", {}), dict(raw.get("train", {})), raw.get("calibration", {})
        aug = AugmentConfig(**tr.pop("augment", {}))
        cfg = cls(train=TrainConfig.from_dict({**tr, "augment": aug}), **data, **cal)
        for k, v in (overrides or {}).items():
            setattr(cfg, k, v)
        return cfg

    @classmethod
    def from_run(cls, run: str | Path) -> "CrossvalConfig":
        """The config a crossval run saved (OUT/config.json)."""
        import json

        raw = json.loads((Path(run) / "config.json").read_text())
        tr = dict(raw.pop("train"))
        aug = AugmentConfig(**tr.pop("augment", {}))
        return cls(train=TrainConfig.from_dict({**tr, "augment": aug}), **raw)

    def validate(self) -> None:
        """Fail before any training: a typo found after hours of folds is hours lost."""
        from ..data.transforms import CONDITIONS

        unknown = [c for c in self.band_conditions + self.report_conditions if c not in CONDITIONS]
        if unknown:
            raise ValueError(f"band_conditions/report_conditions: unknown condition {unknown[0]!r}; known: "
                             f"{', '.join(CONDITIONS)}")
        if self.limit_by not in ("group", "family"):
            raise ValueError(f"limit_by must be 'group' or 'family', not {self.limit_by!r}")

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
    from ..data.preprocess import PreprocessSpec

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
    from ..inference.scoring import score_logits
    from ..models.checkpoint import load_model
    from .train import train
    cfg.validate()
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    save_json(out / "config.json", cfg.to_dict())
    pool = load_pool(cfg, progress)
    fold_of = assign_folds(pool.families, cfg.folds, cfg.seed)
    check_swap_tables(cfg, pool, fold_of)
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
    logits, raw, conditioned = left_out_scores(cfg, pool, out, spec, fold_of)
    limit_groups = limit_units(cfg, pool)
    report = loso_report(logits, pool.pool.labels, pool.pool.groups, pool.families, pool.categories,
                         cfg.max_wrong_group, cfg.max_wrong_pooled, limit_groups=limit_groups,
                         conditions={c: conditioned[c] for c in cfg.band_conditions})
    if cfg.report_conditions:
        report["yardstick"] = yardstick(logits, {c: conditioned[c] for c in cfg.report_conditions}, pool.pool.labels,
                                        limit_groups or pool.pool.groups, report["operating_point"]["temperature"])
    report["folds"] = {str(k): sorted(f for f, v in fold_of.items() if v == k) for k in range(cfg.folds)}
    report["config"] = cfg.to_dict()
    report["training_only"] = {"n": 0 if pool.extra is None else len(pool.extra),
                               "groups": {} if pool.extra is None else _counts(pool.extra.groups)}
    extra = ({"condition_names": np.array(list(conditioned)), "condition_logits": np.stack(list(conditioned.values()))}
             if conditioned else {})
    save_run_report(out, report, pool, logits=logits, raw_logits=raw, **extra)
    return report


def save_run_report(out: Path, report: dict, pool: Pool, **scores: np.ndarray) -> None:
    """A run's (or a stack's) left-out scores beside the pool's labels, groups and names (loso_scores.npz), and its
    report as crossval.json, .md and .png."""
    out.mkdir(parents=True, exist_ok=True)
    np.savez(out / "loso_scores.npz", **scores, labels=pool.pool.labels, groups=pool.pool.groups.astype(str),
             families=pool.families.astype(str), digests=pool.pool.digests, names=np.array(pool.pool.names))
    save_json(out / "crossval.json", report)
    write_markdown(report, out / "crossval.md")
    plot_report(report, out / "crossval.png")


def left_out_scores(cfg: CrossvalConfig, pool: Pool, out: Path, spec, fold_of: dict | None = None
                    ) -> tuple[np.ndarray, np.ndarray, dict]:
    """Every pool image's left-out logit, centred on its fold model's own operating point (`own_calibration`),
    the raw logits, and the centred logits of each band and report condition's copies; all in pool order."""
    from ..data.transforms import CONDITIONS

    names = list(dict.fromkeys(cfg.band_conditions + cfg.report_conditions))
    logits, raw = np.full(len(pool.pool), np.nan), np.full(len(pool.pool), np.nan)
    conditioned = {c: np.full(len(pool.pool), np.nan) for c in names}
    tables = pool_camera_tables(cfg, pool) if any(CONDITIONS[c].label_dependent for c in names) else None
    fold_of = fold_of or assign_folds(pool.families, cfg.folds, cfg.seed)
    for k in range(cfg.folds):
        z = np.load(out / f"fold_{k}" / "scores.npz")
        if not np.array_equal(z["digests"], pool.pool.digests[z["index"]]):
            raise ValueError(f"{out}/fold_{k}: scores were made on other data; remove the folder to redo it")
        centre = _fold_calibration(out / f"fold_{k}", z)
        raw[z["index"]] = z["logits"]
        logits[z["index"]] = own_calibration(z["logits"], *centre)
        ctx = None if tables is None else fold_save_context(pool, tables, fold_of, k, cfg.seed)
        for c, zc in condition_scores(out / f"fold_{k}", pool.pool, z, names, spec, ctx).items():
            conditioned[c][z["index"]] = own_calibration(zc, *centre)
    return logits, raw, conditioned


def check_swap_tables(cfg: CrossvalConfig, pool: Pool, fold_of: dict) -> None:
    """Fail before any fold trains when a label-dependent copy is asked for and some fold has no camera tables."""
    from ..data.transforms import CONDITIONS

    if any(CONDITIONS[c].label_dependent for c in cfg.band_conditions + cfg.report_conditions):
        tables = pool_camera_tables(cfg, pool)
        for k in range(cfg.folds):
            fold_save_context(pool, tables, fold_of, k, cfg.seed)


def limit_units(cfg: CrossvalConfig, pool: Pool) -> list[str] | None:
    """The units held to the per-group limit: None (the groups themselves) or each label's family."""
    cfg.validate()
    return None if cfg.limit_by == "group" else [f"{g.split(':', 1)[0]}:{f}" for g, f in zip(pool.pool.groups, pool.families)]


def _fold_calibration(fdir: Path, z) -> tuple[float, float]:
    if "temperature" in z:
        return float(z["temperature"]), float(z["threshold"])
    import json  # scores saved before the calibration was stored beside them

    c = json.loads((fdir / "model" / "config.json").read_text())
    return float(c["temperature"]), float(c["threshold"])


def _counts(a) -> dict:
    names, counts = np.unique(np.asarray(a, dtype=str), return_counts=True)
    return {str(n): int(c) for n, c in zip(names, counts)}


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
    from ..analysis.card import write_model_card
    from ..analysis.metrics import compute_metrics
    from ..inference.scoring import score_logits
    from ..models.checkpoint import load_model, save_model
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
                    "max_wrong_pooled": cfg.max_wrong_pooled, "limit_by": cfg.limit_by},
        "calibrated_on": f"leave-sources-out scores of {cfg.folds} cross-validation models ({report['pooled']['n']} images, "
                         f"{len(report['groups'])} source groups"
                         + (f"; each also re-scored {' and '.join(repr(c) for c in cfg.band_conditions)}"
                            if cfg.band_conditions else "") + "), not same-source validation images",
        "command": command or config.get("command"),
        "crossval_proxy": {"epochs": report["config"]["train"]["epochs"], "final_epochs": cfg.train.epochs},
        "unseen_reading": {**report["unseen_reading"], "source": f"leave-sources-out scores of {cfg.folds} cross-validation "
                           "models (this recipe; each image scored by a model that never saw its family)"},
        "domain_rule": "warn",  # the band was fitted on unseen sources: size/aspect warnings inform, never decide
        "crossval": {"pooled": report["pooled"], "groups": report["groups"], "folds": report["folds"],
                     "by_category": report.get("by_category", {}), "conditions": report.get("conditions", {})},
    })
    model, _ = load_model(out / "model")
    if test is not None:
        from ..data.preprocess import PreprocessSpec

        tiles = as_tiles(test, PreprocessSpec.from_dict(config["preprocess"]))
        probs = probabilities(score_logits(model, tiles.images, 256) - shift, op["temperature"])
        config["test_metrics"] = _short(compute_metrics(test.labels, probs, op["threshold"],
                                                        uncertain_range=(op["low"], op["high"])))
    # the processing swap outside crossval (robustness): the camera tables of the real photos this model trained on
    config["camera_tables"] = [{"luma": t[0].tolist(), "chroma": None if t[1] is None else t[1].tolist(),
                                "subsampling": t[2]} for t in unique_tables(
        t for t, u, y in zip(pool_camera_tables(cfg, pool), use, pool.pool.labels) if t is not None and u and y == 0)]
    config["notes"] = final_notes(cfg)  # kept in the config, so a regenerated card still says it
    save_model(model, out / "model", config)
    write_model_card(out / "model", config)
    return config

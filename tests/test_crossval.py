"""Source groups, leave-sources-out folds, the operating point fitted on left-out scores, stitched maps."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from synthcheck.analysis.loso import loso_report
from synthcheck.data.folders import ImageSet, load_imageset
from synthcheck.data.groups import family_of, generator_of, group_of
from synthcheck.data.preprocess import PreprocessSpec
from synthcheck.data.splits import make_splits
from synthcheck.inference.calibration import fit_abstention, selective_figures
from synthcheck.inference.detector import Detector
from synthcheck.inference.explain import stitch
from synthcheck.inference.prediction import uncertain_range
from synthcheck.training.config import TrainConfig
from synthcheck.training.crossval import (CrossvalConfig, Pool, assign_folds, fold_training_set, run_crossval,
                                          train_final)
from synthcheck.training.stacking import combine, cross_fit, fit_combiner, run_stack

from conftest import make_image, write_manifest


# --- groups --------------------------------------------------------------------------------------

def test_group_names_come_from_manifest_then_file_names():
    assert group_of("ai/x__gpt-4o__1.jpg", 1, {"generator": "gpt-4o"}) == "ai:gpt-4o"
    assert group_of("ai/realorai__people__3.jpg", 1, {"generator": "unknown"}) == "ai:realorai"  # no generator named
    assert group_of("real/drewnoakes-mdx__photo__a.jpg", 0, {"generator": "real-photo"}) == "real:drewnoakes-mdx"
    assert group_of("fake/a.png", 1, {"group": "aligned:taef2"}) == "aligned:taef2"
    assert group_of("fake/372_stylegan_fake.png", 1) == "ai:stylegan"
    assert group_of("real/372_stylegan_real.png", 0) == "real:stylegan"
    assert group_of("REAL/1234 (5).jpg", 0, source="cifake_train.tar.gz") == "real:cifake_train"
    assert generator_of("nanobanana__nano-banana__case1.jpg") == "nanobanana"
    assert family_of("ai:stylegan") == family_of("real:stylegan") == "stylegan"


def _write_grouped(root, groups: dict[str, tuple[int, int]], size=48, seed=0):
    """A folder dataset with a manifest: group name -> (label, count); AI images carry the toy artifact."""
    rng = np.random.default_rng(seed)
    rows = []
    for g, (label, n) in groups.items():
        d = root / ("ai" if label else "real")
        d.mkdir(parents=True, exist_ok=True)
        for i in range(n):
            name = f"{g}_{i}.png"
            make_image(label, rng, size).save(d / name)
            rows.append({"path": f"{d.name}/{name}", "label": "ai" if label else "real", "generator": g,
                         "category": "people" if i % 2 else "city"})
    return write_manifest(root, rows)


def test_groups_travel_with_the_images_and_stratify_splits(tmp_path):
    root = _write_grouped(tmp_path / "d", {"gan": (1, 20), "sd": (1, 20), "cam": (0, 20), "phone": (0, 20)})
    s = load_imageset(root, PreprocessSpec(32, "resize"), progress=False)
    assert sorted(set(s.groups)) == ["ai:gan", "ai:sd", "real:cam", "real:phone"]
    sub = s.subset(np.arange(0, len(s), 2))
    assert all(g.split(":")[1] in n for g, n in zip(sub.groups, sub.names))
    sp = make_splits([s], val_fraction=0.25, seed=1)
    assert {g: int((sp.val.groups == g).sum()) for g in set(s.groups)} == {g: 5 for g in set(s.groups)}


# --- folds -----------------------------------------------------------------------------------------

def _pool(groups: dict[str, int], aligned_twins: list[str] | None = None) -> Pool:
    names, labels, gs = [], [], []
    for g, n in groups.items():
        for i in range(n):
            names.append(f"{g}/{i}"); labels.append(0 if g.startswith("real") else 1); gs.append(g)
    n = len(names)
    dig = np.random.default_rng(0).integers(0, 255, (n, 16), dtype=np.uint8)
    pool = ImageSet(np.zeros((n, 3, 4, 4), np.uint8), np.array(labels), np.array([""] * n), names, dig,
                    np.full((n, 2), 4, np.int32), "pool", PreprocessSpec(4, "native"), [], np.array(gs, dtype=object))
    fam = np.array([family_of(g) for g in gs], dtype=object)
    extra, blocked = None, np.zeros(0, dtype=object)
    if aligned_twins:
        m = len(aligned_twins)
        extra = ImageSet(np.zeros((m, 3, 4, 4), np.uint8), np.ones(m, int), np.array([""] * m), [f"a{i}" for i in range(m)],
                         np.zeros((m, 16), np.uint8), np.full((m, 2), 4, np.int32), "pairs", PreprocessSpec(4, "native"),
                         [], np.array(["aligned:taef2"] * m, dtype=object))
        blocked = np.array(aligned_twins, dtype=object)
    return Pool(pool, extra, fam, blocked, np.array([""] * n, dtype=object))


def test_every_family_is_left_out_exactly_once_and_never_trained_on_in_its_fold():
    groups = {"ai:gan": 30, "real:gan": 30, "ai:sd": 50, "real:coco": 40, "real:cam": 10, "ai:mj": 15, "ai:dalle": 15}
    pool = _pool(groups, aligned_twins=["coco", "coco", "cam", ""])
    fold_of = assign_folds(pool.families, 3, seed=0)
    assert set(fold_of) == {"gan", "sd", "coco", "cam", "mj", "dalle"} and set(fold_of.values()) == {0, 1, 2}
    assert fold_of  # each family maps to exactly one fold (a dict), so both labels of 'gan' leave together
    for k in range(3):
        tr = fold_training_set(pool, fold_of, k, train_ai=True)
        left_out = {f for f, v in fold_of.items() if v == k}
        trained = {family_of(g) for g in tr.groups if not g.startswith("aligned")}
        assert not trained & left_out
        assert len(trained | left_out) == 6
        # an aligned pseudo-fake leaves with the family of the real photo it was made from
        n_aligned = sum(g.startswith("aligned") for g in tr.groups)
        assert n_aligned == 1 + sum(fold_of[t] != k for t in ("coco", "coco", "cam"))
        # without the pool's generated images: reals and aligned fakes only
        no_ai = fold_training_set(pool, fold_of, k, train_ai=False)
        assert all(g.startswith(("real", "aligned")) for g in no_ai.groups)


def test_folds_are_balanced_and_seeded():
    fam = np.array(["a"] * 40 + ["b"] * 30 + ["c"] * 20 + ["d"] * 10 + ["e"] * 10)
    f1, f2 = assign_folds(fam, 2, 0), assign_folds(fam, 2, 0)
    assert f1 == f2
    sizes = [sum((fam == f).sum() for f, v in f1.items() if v == k) for k in range(2)]
    assert sorted(sizes) == [50, 60]  # the best split of 40+30+20+10+10 (55/55 is not possible)


# --- the operating point, fitted on left-out scores -------------------------------------------------

def test_band_keeps_every_group_under_the_error_limit():
    rng = np.random.default_rng(0)
    # a well-separated generator, a generator the model ranks as real (wrong), and two real sources
    p = np.r_[rng.uniform(0.7, 1.0, 200), rng.uniform(0.0, 0.4, 100), rng.uniform(0.0, 0.5, 200), rng.uniform(0.1, 0.6, 100)]
    y = np.r_[np.ones(300), np.zeros(300)].astype(int)
    g = np.array(["ai:good"] * 200 + ["ai:bad"] * 100 + ["real:a"] * 200 + ["real:b"] * 100)
    band = fit_abstention(p, y, g, threshold=0.5, max_wrong_pooled=0.05, max_wrong_group=0.10)
    v = selective_figures(p, y, band["low"], band["high"])
    assert v["confidently_wrong"] <= 0.05 + 1e-9
    for name in np.unique(g):
        m = g == name
        assert selective_figures(p[m], y[m], band["low"], band["high"])["confidently_wrong"] <= 0.10 + 1e-9
    # the bad generator sits where real photos sit: "real" is only said below almost all of it
    assert band["low"] <= np.quantile(p[g == "ai:bad"], 0.10) + 1e-9
    assert band["high"] <= 0.7 and band["coverage"] > 0.3   # "ai" is still said where only AI images score


def test_no_band_meets_impossible_limits_so_nothing_is_answered():
    p = np.r_[np.full(50, 0.2), np.full(50, 0.8)]
    y = np.r_[np.ones(50), np.zeros(50)].astype(int)  # perfectly wrong
    band = fit_abstention(p, y, np.where(y == 1, "ai:x", "real:y"), 0.5, 0.0, 0.0)
    assert (band["low"], band["high"], band["coverage"]) == (0.0, 1.0, 0.0)


def test_loso_report_judges_each_family_by_a_band_fitted_on_the_others():
    rng = np.random.default_rng(1)
    fams = ["gan", "sd", "mj"]
    logits, labels, groups = [], [], []
    for f, shift in zip(fams, (3.0, 2.0, -1.0)):  # mj is ranked below real photos
        logits += list(rng.normal(shift, 1, 60)); labels += [1] * 60; groups += [f"ai:{f}"] * 60
    for f in ("coco", "cam"):
        logits += list(rng.normal(-2, 1, 80)); labels += [0] * 80; groups += [f"real:{f}"] * 80
    logits, labels, groups = np.array(logits), np.array(labels), np.array(groups)
    fam = np.array([family_of(g) for g in groups])
    rep = loso_report(logits, labels, groups, fam, np.array([""] * len(labels)))
    assert rep["groups"]["ai:gan"]["roc_auc"] > 0.95 and rep["groups"]["ai:mj"]["roc_auc"] < 0.8
    assert set(rep["groups"]) == set(groups) and rep["pooled"]["n"] == len(labels)
    op = rep["operating_point"]
    assert 0 <= op["low"] <= op["threshold"] <= op["high"] <= 1
    # in-sample, the fitted band meets the limits on every group
    from synthcheck.inference.calibration import probabilities
    p = probabilities(logits, op["temperature"])
    for g in np.unique(groups):
        m = groups == g
        assert selective_figures(p[m], labels[m], op["low"], op["high"])["confidently_wrong"] <= 0.10 + 1e-9


def test_band_fitted_with_resized_copies_stays_safe_on_them():
    """A model that drifts towards "ai" on smaller copies: a band fitted on the files alone is confidently wrong
    on the copies' real photos; fitted with the copies too, it meets the limit on them (cross-fitted) and the
    report's rows stay those of the files as they came."""
    rng = np.random.default_rng(2)
    logits, groups = [], []
    for f, shift in (("gan", 3.0), ("sd", 2.5), ("mj", 2.0)):
        logits += list(rng.normal(shift, 1, 60)); groups += [f"ai:{f}"] * 60
    for f in ("coco", "cam", "phone"):
        logits += list(rng.normal(-3, 1, 80)); groups += [f"real:{f}"] * 80
    logits, groups = np.array(logits), np.array(groups)
    labels = (np.char.find(groups, "ai:") == 0).astype(int)
    fam = np.array([family_of(g) for g in groups])
    small = logits + np.where(labels == 0, 4.0, 0.0)  # real photos look AI when small
    plain = loso_report(logits, labels, groups, fam, np.array([""] * len(labels)))
    from synthcheck.inference.calibration import probabilities
    op = plain["operating_point"]
    p_small = probabilities(small, op["temperature"])
    assert (p_small[labels == 0] >= op["high"]).mean() > 0.10  # the plain band breaks on the copies

    rep = loso_report(logits, labels, groups, fam, np.array([""] * len(labels)), conditions={"half size": small})
    c = rep["conditions"]["half size"]
    assert c["max_group_confidently_wrong"] <= 0.10 and c["confidently_wrong"] <= 0.05
    assert rep["pooled"]["n"] == len(labels) and set(rep["groups"]) == set(groups)
    assert rep["pooled"]["max_group_confidently_wrong"] <= 0.10
    assert rep["operating_point"]["high"] > op["high"]  # "ai" now needs more


def test_limits_by_family_hold_each_family_not_each_tiny_generator():
    """limit_groups (crossval's limit_by = "family"): a 4-image generator with one outlier no longer forces the
    band to exclude that outlier when its family stays under the limit; every family row meets it in-sample."""
    rng = np.random.default_rng(3)
    logits = np.r_[rng.normal(3, 1, 40), rng.normal(3, 0.3, 3), [-2.5], rng.normal(2.5, 1, 60),
                   rng.normal(-3, 1, 80), rng.normal(-3, 1, 80)]
    groups = np.array(["ai:flux1-dev"] * 40 + ["ai:chroma"] * 4 + ["ai:sdxl"] * 60 + ["real:coco"] * 80 + ["real:cam"] * 80)
    labels = (np.char.find(groups, "ai:") == 0).astype(int)
    fam = np.array([{"flux1-dev": "flux", "chroma": "flux"}.get(family_of(g), family_of(g)) for g in groups])
    limits = np.array([f"{g.split(':')[0]}:{f}" for g, f in zip(groups, fam)])
    by_group = loso_report(logits, labels, groups, fam, np.array([""] * len(labels)))
    by_family = loso_report(logits, labels, groups, fam, np.array([""] * len(labels)), limit_groups=limits)
    assert set(by_family["limit_groups"]) == set(limits) and "limit_groups" not in by_group
    assert by_family["limit_groups"]["ai:flux"]["groups"] == ["ai:chroma", "ai:flux1-dev"]
    assert set(by_family["groups"]) == set(groups)  # each generator still reported
    from synthcheck.inference.calibration import probabilities
    op = by_family["operating_point"]
    p = probabilities(logits, op["temperature"])
    for g in np.unique(limits):
        m = limits == g
        assert selective_figures(p[m], labels[m], op["low"], op["high"])["confidently_wrong"] <= 0.10 + 1e-9
    assert op["low"] >= by_group["operating_point"]["low"]  # "real" may be said higher up: the outlier is allowed


def test_a_model_with_a_fitted_band_gives_verdicts_by_it(tmp_path):
    assert uncertain_range({"threshold": 0.6, "uncertain_band": 0.1}) == pytest.approx((0.5, 0.7))
    assert uncertain_range({"threshold": 0.6, "uncertain_band": 0.1, "abstain": {"low": 0.2, "high": 0.9}}) == (0.2, 0.9)


# --- stacking left-out scores ---------------------------------------------------------------------------

def test_stack_scores_each_fold_with_a_combiner_that_never_saw_it():
    rng = np.random.default_rng(0)
    y = np.repeat([0, 1], 150)
    fold = np.tile(np.arange(3), 100)
    x = np.stack([y * 1.0 + rng.normal(0, 1, 300), y * 0.5 + rng.normal(0, 1, 300)], 1)
    stacked, _, fits = cross_fit(x, y, fold)
    assert {k: f["fitted_on"] for k, f in fits.items()} == {0: 200, 1: 200, 2: 200}
    # wrecking fold 0's signals moves no combiner that scores folds 1 and 2, and fold 0's own combiner neither
    wrecked = x.copy()
    wrecked[fold == 0] = rng.normal(0, 5, ((fold == 0).sum(), 2))
    again, _, fits2 = cross_fit(wrecked, y, fold)
    assert fits2[0] == fits[0] and fits2[1] != fits[1] and fits2[2] != fits[2]
    assert np.allclose(again[fold == 0], combine(wrecked[fold == 0], fits[0]["weights"], 0.0))
    # the weights' magnitudes sum to one and there is no intercept: a signal stacked with itself is itself
    w, b = fit_combiner(np.c_[x[:, 0], x[:, 0]], y)
    assert b == 0.0 and np.allclose(w, [0.5, 0.5])
    assert np.allclose(cross_fit(np.c_[x[:, 0], x[:, 0]], y, fold)[0], x[:, 0])


# --- stitched explanation maps ------------------------------------------------------------------------

def test_stitch_places_tile_maps_back_and_averages_overlaps():
    maps = np.stack([np.full((4, 4), 1.0), np.full((4, 4), 3.0)])
    out = stitch(maps, [(0, 0), (0, 2)], 4, 8)
    assert np.allclose(out[:, :2], 1) and np.allclose(out[:, 2:4], 2) and np.allclose(out[:, 4:6], 3)
    assert np.isnan(out[:, 6:]).all()


# --- the whole command on a toy pool ----------------------------------------------------------------

@pytest.mark.slow
def test_crossval_end_to_end_scores_every_group_with_a_model_that_never_saw_it(tmp_path):
    pool = _write_grouped(tmp_path / "pool", {"gan": (1, 30), "sd": (1, 30), "mj": (1, 30), "cam": (0, 45),
                                               "phone": (0, 45)}, size=40)
    cfg = CrossvalConfig(sources=[str(pool)], folds=3, seed=0,
                         train=TrainConfig(model="fastnet_s", image_size=40, resize_policy="native", crop=24, tiles=2,
                                           epochs=8, batch_size=16, lr=3e-3, patience=20, val_fraction=0.15, device="cpu"))
    rep = run_crossval(cfg, tmp_path / "cv", progress=False)
    assert set(rep["groups"]) == {"ai:gan", "ai:sd", "ai:mj", "real:cam", "real:phone"}
    for k, fams in rep["folds"].items():
        hist = json.loads((tmp_path / "cv" / f"fold_{k}" / "model" / "config.json").read_text())
        assert hist["data"]["left_out"] == fams
    assert (tmp_path / "cv" / "crossval.md").exists() and (tmp_path / "cv" / "crossval.png").exists()
    assert rep["pooled"]["roc_auc"] > 0.8  # the toy artifact is shared by every toy generator
    # a rerun finds every fold done and only rebuilds the report
    again = run_crossval(cfg, tmp_path / "cv", progress=False)
    assert again["pooled"] == rep["pooled"]
    # limits held by family (the photo model v3's rule): a row per (label, family), same folds and scores
    cfg.limit_by = "family"
    by_family = run_crossval(cfg, tmp_path / "cv", progress=False)
    assert set(by_family["limit_groups"]) == set(rep["groups"]) and by_family["pooled"]["roc_auc"] == rep["pooled"]["roc_auc"]
    assert "Families (the units held" in (tmp_path / "cv" / "crossval.md").read_text()
    cfg.limit_by = "source"
    with pytest.raises(ValueError, match="limit_by"):
        run_crossval(cfg, tmp_path / "cv", progress=False)
    cfg.limit_by = "group"
    # the band fitted on half-size copies too: each fold model re-scores its left-out images, kept beside its scores
    cfg.band_conditions = ["half size (social)"]
    halved = run_crossval(cfg, tmp_path / "cv", progress=False)
    cached = np.load(tmp_path / "cv" / "fold_0" / "scores_half_size_social.npz")
    assert len(cached["logits"]) == len(cached["index"]) and len(str(cached["made_with"])) == 40  # tied to the fold's scores
    assert halved["pooled"]["roc_auc"] == rep["pooled"]["roc_auc"] and set(halved["conditions"]) == {"half size (social)"}
    assert halved["conditions"]["half size (social)"]["max_group_confidently_wrong"] <= 0.10
    # the reading table is fitted on the band's copies too (what a score means holds whatever the save)
    assert sum(halved["unseen_reading"]["n"]) == 2 * rep["pooled"]["n"]
    assert halved["unseen_reading"]["copies"] == ["as is", "half size (social)"]
    cfg.band_conditions = ["blurred"]
    with pytest.raises(ValueError, match="unknown condition"):
        run_crossval(cfg, tmp_path / "cv", progress=False)
    cfg.band_conditions = []
    det = Detector.load(tmp_path / "cv" / "fold_0" / "model")
    assert det.spec == PreprocessSpec(24, "tiles", tiles=2)
    assert Image.open(tmp_path / "cv" / "crossval.png").size[0] > 100
    # the model to ship: every group but a held-out list, its confidence from the left-out scores
    held = [f"ai/sd_{i}.png" for i in range(5)] + [f"real/cam_{i}.png" for i in range(5)]
    (tmp_path / "held.txt").write_text("# held out\n" + "\n".join(held) + "\n")
    cfg.hold_out = str(tmp_path / "held.txt")
    final = train_final(cfg, tmp_path / "cv", rep, progress=False, command="synthcheck crossval toy.toml --final")
    op = rep["operating_point"]
    assert final["command"] == "synthcheck crossval toy.toml --final"
    assert final["crossval_proxy"] == {"epochs": rep["config"]["train"]["epochs"], "final_epochs": cfg.train.epochs}
    assert final["abstain"]["low"] == op["low"] and final["temperature"] == op["temperature"]
    assert final["test_metrics"]["n"] == 10 and final["domain_rule"] == "warn"
    assert final["data"]["sizes"]["train"] + final["data"]["sizes"]["val"] == 180 - 10
    ship = Detector.load(tmp_path / "cv" / "final" / "model")
    assert ship.uncertain_range == (op["low"], op["high"]) and ship.logit_shift == final["logit_shift"]
    imgs = sorted((pool / "ai").glob("sd_*.png"))[:5] + sorted((pool / "real").glob("cam_*.png"))[:5]
    for p in ship.predict(imgs):
        assert p.verdict == ("ai" if p.prob_ai >= op["high"] else "real" if p.prob_ai <= op["low"] else "uncertain")
    card_text = (tmp_path / "cv" / "final" / "model" / "MODEL_CARD.md").read_text()
    assert "Leave-sources-out figures" in card_text and "What a score meant on sources" in card_text
    # every prediction says what its score meant on the left-out images, read off the same table
    reading = rep["unseen_reading"]
    assert final["unseen_reading"]["edges"] == reading["edges"] and sum(reading["n"]) == rep["pooled"]["n"]
    for p in ship.predict(imgs):
        assert p.reading["ai_share"] in reading["ai_share"] and "sources it never saw" in p.reading["text"]
        assert p.reading["range"][0] <= p.prob_ai <= p.reading["range"][1]
    # a second signal over the same pool and folds, stacked: same groups, families and folds, cross-fitted combiner
    cfg.hold_out, cfg.train.epochs = None, 3
    run_crossval(cfg, tmp_path / "cv_short", progress=False)
    st = run_stack([tmp_path / "cv", tmp_path / "cv_short"], tmp_path / "stack", progress=False)
    assert set(st["groups"]) == set(rep["groups"]) and st["folds"] == rep["folds"]
    assert {int(k): f["fitted_on"] for k, f in st["stack"]["per_fold"].items()} == {
        int(k): 180 - sum(rep["groups"][f"{lab}:{fam}"]["n"] for fam in fams for lab in ("ai", "real")
                          if f"{lab}:{fam}" in rep["groups"]) for k, fams in rep["folds"].items()}
    assert (tmp_path / "stack" / "crossval.md").read_text().count("| all (shipped) |") == 1
    cfg.folds = 2
    (tmp_path / "cv_other_folds").mkdir()
    (tmp_path / "cv_other_folds" / "config.json").write_text(json.dumps(cfg.to_dict()))
    with pytest.raises(ValueError, match="same ones"):
        run_stack([tmp_path / "cv", tmp_path / "cv_other_folds"], tmp_path / "stack2", progress=False)


@pytest.mark.shared
def test_v3_config_puts_every_generator_in_one_of_the_fixed_families():
    """configs/crossval_photo_v3.toml: the issue's families, fixed before any v3 score was seen."""
    from conftest import SHARED

    cfg = CrossvalConfig.load(Path(__file__).parents[1] / "configs" / "crossval_photo_v3.toml")
    assert cfg.limit_by == "family" and set(cfg.band_conditions) == {"all cut to 256 x 256", "all re-encoded JPEG 90"}
    fixed = {"sd1", "sdxl", "sd3", "flux", "nano-banana", "gpt-4o", "realorai", "pack-2022", "open-dit"}
    gans = {"biggan", "crn", "cyclegan", "deepfake", "gaugan", "imle", "san", "seeingdark", "stargan", "stylegan"}
    rows = []
    for m in ("photo-train/manifest.csv", "photo-train-2/manifest.csv"):
        if not (SHARED / "data" / m).exists():
            pytest.skip("needs ../shared/data")
        rows += [r for r in csv.DictReader(open(SHARED / "data" / m)) if r["label"] == "ai"]
    gens = {family_of(group_of(r["path_in_tar"], 1, r)) for r in rows} | {"diffusion"} | gans  # + DiffusionDB, GANs
    fams = {g: cfg.merge.get(g, g) for g in gens}
    assert set(fams.values()) == fixed | gans, sorted(set(fams.values()) - fixed - gans)
    assert fams["stable-cascade"] == "open-dit" and fams["sd1.5"] == "sd1" and fams["chroma"] == "flux"

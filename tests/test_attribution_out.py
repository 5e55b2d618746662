"""Generator names judged on collections and families never seen: what is left out of what, the naming rule's
fit and its nesting, and a Detector that gives a pixel name only where the rule allows it."""

from __future__ import annotations

import numpy as np
from synthcheck.data.folders import ImageSet
from synthcheck.data.preprocess import PreprocessSpec
from synthcheck.inference.attribution import UNKNOWN, AttributionHead, allowed_name
from synthcheck.analysis.metrics import share_text, wilson
from synthcheck.training.attribution_out import (collection_of, fit_naming_rule, named_mask, nested_rule_figures,
                                                 plan_units, rule_figures)
from synthcheck.training.crossval import Pool, assign_folds, fold_training_set


def test_collection_is_the_source_of_a_pack_name_else_the_data_set():
    assert collection_of("ai/sdcpp__flux1-dev__a.jpg") == "sdcpp"
    assert collection_of("diffusiondb-vs-coco-imagenet/ai/diffusion_000225.jpg") == "diffusiondb-vs-coco-imagenet"
    assert collection_of("comfy-examples__sd1.5__x.jpg") == "comfy-examples"


def test_wilson_interval_and_small_counts_are_not_percentages():
    lo, hi = wilson(8, 10)
    assert 0.44 < lo < 0.50 and 0.94 < hi < 0.98
    assert wilson(0, 5)[0] == 0.0 and wilson(0, 0) is None
    assert share_text(3, 7) == "3 of 7" and share_text(16, 20).startswith("80% (16/20; 95% ")


def _pool():
    """sd: three collections; flux: two; gan and mj: one each; two real sources."""
    rows = ([("ai:sd", "ddb", 40), ("ai:sd", "dcsan", 10), ("ai:sd", "sdcpp", 5), ("ai:flux", "xflux", 8),
             ("ai:flux", "comfy", 8), ("ai:gan", "cnn", 30), ("ai:mj", "pack", 15), ("real:coco", "coco", 40),
             ("real:cam", "cam", 20)])
    names, labels, groups = [], [], []
    for g, col, n in rows:
        for i in range(n):
            names.append(f"{g.split(':')[0]}/{col}__{g.split(':')[1]}__{i}.jpg")
            labels.append(int(g.startswith("ai")))
            groups.append(g)
    n = len(names)
    dig = np.arange(n * 16, dtype=np.int64).reshape(n, 16).astype(np.uint8)
    dig[:, 0], dig[:, 1] = np.arange(n) % 256, np.arange(n) // 256
    s = ImageSet(np.zeros((n, 3, 4, 4), np.uint8), np.array(labels), np.array([""] * n), names, dig,
                 np.full((n, 2), 4, np.int32), "pool", PreprocessSpec(4, "native"), [], np.array(groups, dtype=object))
    fam = np.array([g.split(":")[1] if g.startswith("ai") else g.split(":")[1] for g in groups], dtype=object)
    return Pool(s, None, fam, np.zeros(0, dtype=object), np.array([""] * n, dtype=object))


def test_a_left_out_collection_is_in_neither_the_heads_fit_nor_its_backbones_training():
    pool = _pool()
    fold_of = assign_folds(pool.families, 3, seed=0)
    attr = np.array([f if y == 1 else "" for f, y in zip(pool.families, pool.pool.labels)], dtype=object)
    attr[attr == "mj"] = UNKNOWN
    cols = np.array([collection_of(n) for n in pool.pool.names], dtype=object)
    units = plan_units(attr, pool.families, cols, pool.pool.labels, fold_of)
    out = [u for u in units if u["kind"] == "collection-out"]
    # sd has three collections and flux two: one unit each; gan (one collection) and mj (unknown) none
    assert sorted(u["name"] for u in out) == ["flux @ comfy", "flux @ xflux", "sd @ dcsan", "sd @ ddb", "sd @ sdcpp"]
    for u in units:
        scored = np.flatnonzero(u["score"])
        assert not (u["score"] & u["head_fit"]).any(), u["name"]
        # the backbone: exactly what crossval trains fold k's model on
        trained = fold_training_set(pool, fold_of, u["fold"], train_ai=True)
        seen = {d.tobytes() for d in trained.digests}
        assert not any(pool.pool.digests[i].tobytes() in seen for i in scored), u["name"]
    sd_ddb = next(u for u in out if u["name"] == "sd @ ddb")
    assert sd_ddb["head_fit"][(cols == "dcsan")].all()  # the family's other collections stay in the head's fit
    assert not sd_ddb["head_fit"][pool.pool.labels == 0].any()  # the head learns from AI images only
    fam_out = [u for u in units if u["kind"] == "family-out"]
    assert sum(int(u["score"].sum()) for u in fam_out) == len(pool.pool)  # every image left out once by family


def _records(rng):
    """Left-out rows: family 'a' named right with high probability, 'b' named but mostly wrong, reals."""
    rows = []
    for _ in range(60):  # a's images, named a with probability ~0.9 (10 low ones wrong)
        rows.append(("u_a", "a", "a", rng.uniform(0.8, 1.0), 0.9, 1))
    for _ in range(10):
        rows.append(("u_a", "a", "b", rng.uniform(0.3, 0.5), 0.6, 1))
    for _ in range(40):  # a left-out family named 'a' at low probability
        rows.append(("u_x", UNKNOWN, "a", rng.uniform(0.3, 0.6), 0.7, 1))
    for _ in range(30):  # b: named, wrong
        rows.append(("u_b", "c", "b", rng.uniform(0.6, 1.0), 0.8, 1))
    for _ in range(100):  # real photos reaching can't tell: low P(AI), names at low probability
        rows.append(("u_r", "", "a", rng.uniform(0.2, 0.7), rng.uniform(0.1, 0.6), 0))
    unit, truth, top, prob, pai, lab = map(np.array, zip(*rows))
    n = len(unit)
    return {"index": np.arange(n), "unit": unit.astype(object), "kind": np.array(["family-out"] * n, dtype=object),
            "truth": truth.astype(object), "top": top.astype(object), "probability": prob.astype(float),
            "accepted": np.ones(n, bool), "p_ai": pai.astype(float), "verdict": np.array(["uncertain"] * n, dtype=object),
            "label": lab.astype(int), "source": np.where(lab == 1, truth, "coco").astype(object)}


def test_naming_rule_keeps_precision_and_real_photos_named_rarely():
    rec = _records(np.random.default_rng(0))
    before = rule_figures(rec, rec["accepted"])
    assert before["right_among_named"] < 0.5 and before["real_named"] == 100
    rule = fit_naming_rule(rec, ["a", "b"])
    assert rule["families"] == ["a"] and (rule["min_probability"] >= 0.6 or rule["min_p_ai"] >= 0.8)
    f = rule_figures(rec, named_mask(rec, rule))
    assert f["right_among_named"] >= 0.8 and f["interval"][0] >= 0.6 and f["real_named_share"] <= 0.02
    assert f["right"] == 60  # every right name kept
    nested = nested_rule_figures(rec, ["a", "b"])
    assert set(nested["rules"]) == {"u_a|a", "u_x|unknown", "u_b|c", "u_r|real: coco"}
    # u_a's own rows are named by a rule fitted without them: no right name to learn from, so nothing named
    assert nested["rules"]["u_a|a"]["families"] == []
    # a family that is never right cannot be named at all: the empty rule
    wrong = {k: v[rec["unit"] != "u_a"] for k, v in rec.items()}
    assert fit_naming_rule(wrong, ["a", "b"])["families"] == []


def test_a_real_photo_reaching_uncertain_gets_a_pixel_name_only_when_the_rule_allows(tmp_path):
    from pathlib import Path

    from synthcheck import Detector

    rule = {"families": ["x"], "min_probability": 0.5, "min_p_ai": 0.8}
    assert allowed_name(rule, "x", 0.9, 0.85) and not allowed_name(rule, "x", 0.9, 0.5)
    assert not allowed_name(rule, "y", 0.99, 0.99) and not allowed_name(rule, "x", 0.4, 0.99)
    assert not allowed_name(rule, "x", 0.9, float("nan"))  # no P(AI): the floor cannot be checked
    det = Detector.load("photo")
    head = det.attribution
    sample = Path(__file__).resolve().parents[1] / "src" / "synthcheck" / "samples" / "ai_diffusiondb_diffusion_000225.jpg"
    decoded = det.decode((str(sample), sample.name))
    det.score_decoded([decoded])
    top = {"family": head.families[int(head.probabilities(decoded["features"][None])[0].argmax())]}
    saved, saved_threshold = head.info.get("naming_rule"), head.threshold
    head.threshold = -np.inf  # the open-set threshold lets everything through: only the rule decides
    try:
        head.info["naming_rule"] = {"families": [top["family"]], "min_probability": 0.0, "min_p_ai": 0.6}
        assert det.attribute("uncertain", decoded, 0.55)["name"] == UNKNOWN  # a real-looking score: no name
        assert det.attribute("uncertain", decoded, 0.7)["name"] == top["family"]
        head.info["naming_rule"] = {"families": [], "min_probability": 0.0, "min_p_ai": 0.0}
        assert det.attribute("ai", decoded, 0.99)["name"] == UNKNOWN  # the empty rule names nothing from pixels
    finally:
        head.threshold = saved_threshold
        head.info["naming_rule"] = saved
        if saved is None:
            head.info.pop("naming_rule")


def test_head_round_trips_its_naming_rule(tmp_path):
    rng = np.random.default_rng(1)
    x = np.r_[rng.normal(0, 1, (40, 6)) + 4, rng.normal(0, 1, (40, 6)) - 4]
    from synthcheck.training.attribution import fit_head

    head = fit_head(x, np.array(["p"] * 40 + ["q"] * 40, dtype=object))
    head.threshold = 0.0
    head.info["naming_rule"] = {"families": ["p"], "min_probability": 0.5, "min_p_ai": 0.0}
    head.save(tmp_path)
    again = AttributionHead.load(tmp_path)
    names = [p["name"] for p in again.predict(x)]
    assert names[:40] == ["p"] * 40 and names[40:] == [UNKNOWN] * 40  # q is never named: not in the rule

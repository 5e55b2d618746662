"""The yardstick processing cannot fool (issue 37): the everyday panel applied to both classes alike, and the
processing swap, whose AI copies take camera tables only from real photos the fold's model trained on."""

from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image

from conftest import make_image, write_manifest
from synthcheck.analysis.loso import yardstick
from synthcheck.analysis.resave import resave_checks, resave_lines
from synthcheck.data.transforms import CONDITIONS, PANEL, SWAP, SaveContext, save_jpeg, swap_processing
from synthcheck.inference.jpeg_history import ijg_tables, parse_header
from synthcheck.training.config import TrainConfig
from synthcheck.training.crossval import CrossvalConfig, fold_save_context, run_crossval


def _tables(q: int, bump: int = 0):
    luma, chroma = ijg_tables(q)
    return luma + bump, chroma + bump  # bumped: no IJG quality writes these


def test_panel_and_swap_are_in_the_one_registry():
    assert PANEL == ["JPEG 75 4:2:0", "JPEG 92 4:2:0", "half size then JPEG 85", "WebP 80", "256-px crop"]
    assert CONDITIONS[SWAP].label_dependent and not any(CONDITIONS[c].label_dependent for c in PANEL)


def test_swap_gives_real_photos_the_packs_save_and_ai_images_a_camera_save():
    img = np.asarray(make_image(1, np.random.default_rng(0), 64))
    assert np.array_equal(swap_processing(img, 0), save_jpeg(img, 92, "4:2:0"))
    cam = (_tables(90, 1) + ("4:2:2",), _tables(80, 2) + ("4:4:4",))
    ctx = SaveContext(cam, seed=3)
    a, b = swap_processing(img, 1, ctx, key=7), swap_processing(img, 1, ctx, key=7)
    assert np.array_equal(a, b) and not np.array_equal(a, save_jpeg(img, 92, "4:2:0"))
    picks = {swap_processing(img, 1, ctx, key=k).tobytes() for k in range(12)}
    assert len(picks) == 2  # both tables get drawn
    buf = io.BytesIO()
    Image.fromarray(img).save(buf, "JPEG", qtables=[list(cam[0][0]), list(cam[0][1])], subsampling=1)
    assert parse_header(buf.getvalue()).subsampling == "4:2:2"
    with pytest.raises(ValueError, match="no camera tables"):
        swap_processing(img, 1, SaveContext())


def test_a_fold_never_borrows_a_left_out_sources_tables():
    class P:
        families = np.array(["cam", "phone", "gan", "cam"])
        pool = type("S", (), {"labels": np.array([0, 0, 1, 0])})

    t_cam, t_phone = _tables(90, 1) + ("4:2:0",), _tables(85, 2) + ("4:2:0",)
    tables = [t_cam, t_phone, None, t_cam]
    fold_of = {"cam": 0, "phone": 1, "gan": 1}
    ctx0 = fold_save_context(P, tables, fold_of, 0, seed=0)   # cam is left out of fold 0: only phone's tables
    assert len(ctx0.camera_tables) == 1 and np.array_equal(ctx0.camera_tables[0][0], t_phone[0])
    ctx1 = fold_save_context(P, tables, fold_of, 1, seed=0)   # the two cam photos share one table: listed once
    assert len(ctx1.camera_tables) == 1 and np.array_equal(ctx1.camera_tables[0][0], t_cam[0])
    with pytest.raises(ValueError, match="no real photo it trained on"):
        fold_save_context(P, [None, None, None, None], fold_of, 0, seed=0)


def test_yardstick_takes_each_units_worst_and_the_swap_shift():
    labels = np.array([0] * 4 + [1] * 4)
    units = np.array(["real:a"] * 4 + ["ai:x"] * 2 + ["ai:y"] * 2)
    z = np.array([-2, -1, -1.5, -3, 2, 1, 3, 2.5])
    panel = {"JPEG 75 4:2:0": np.array([-2, -1, -1.5, -3, -4, -5, 3, 2.5]),    # x falls apart, y holds
             "WebP 80": np.array([-2, -1, -1.5, -3, 2, 1, -4, -5]),            # y falls apart, x holds
             SWAP: z + np.array([2, 2, 2, 2, -2, -2, -2, -2])}                 # a save shortcut
    y = yardstick(z, panel, labels, units, temperature=1.0)
    assert y["conditions"]["JPEG 75 4:2:0"]["mean_ai_unit_roc_auc"] == pytest.approx(0.5)
    # each unit's worst is 0 (x under JPEG 75, y under WebP): worse than either condition's mean over units
    assert y["worst_of_panel"]["mean_ai_unit_roc_auc"] == pytest.approx(0.0)
    assert y["worst_of_panel"]["conditions"] == ["JPEG 75 4:2:0", "WebP 80"]
    assert y["swap_shift"]["real:a"]["median_shift"] > 0.2 and y["swap_shift"]["ai:x"]["median_shift"] < -0.1


def test_resave_checks_judge_each_set_against_the_issues_limits():
    labels = np.array([0] * 20 + [0] * 20 + [1] * 25 + [1] * 5)
    units = np.array(["real:a"] * 20 + ["real:b"] * 20 + ["ai:x"] * 25 + ["ai:tiny"] * 5)
    p0 = np.r_[np.linspace(0.05, 0.3, 20), np.linspace(0.1, 0.4, 20), np.linspace(0.6, 0.95, 25), [0.9] * 5]
    q92 = p0.copy()
    q92[20:40] += 0.1                      # real:b moves toward AI when re-saved: fails the real limit (0.03)
    q92[40:65] -= 0.04                     # ai:x moves within its limit (0.05)
    q75 = p0.copy()
    q75[40:65] = np.linspace(0.0, 0.5, 25)  # ai:x's ranking falls apart at q75
    r = resave_checks(p0, {"JPEG 92 4:2:0": q92, "JPEG 75 4:2:0": q75}, labels, units)
    assert r["too_small"] == ["ai:tiny"] and set(r["units"]) == {"real:a", "real:b", "ai:x"}
    assert r["units"]["real:b"]["JPEG 92 4:2:0"]["median_shift"] == pytest.approx(0.1)
    c = r["checks"]
    assert not c["real_shift"]["passed"] and c["real_shift"]["worst_unit"] == "real:b"
    assert c["ai_shift"]["passed"] and c["ai_shift"]["worst"] == pytest.approx(-0.04)
    assert not c["auc_change JPEG 75 4:2:0"]["passed"] and c["auc_change JPEG 75 4:2:0"]["worst_unit"] == "ai:x"
    assert r["units"]["ai:x"]["JPEG 75 4:2:0"]["auc_change"] < -0.3
    assert r["units"]["real:a"]["JPEG 92 4:2:0"]["auc_change"] == 0  # the shifts above cross no pair of images
    assert "**no**" in "\n".join(resave_lines(r))
    with pytest.raises(ValueError, match="both labels"):
        resave_checks(p0, {}, labels, np.array(["u"] * len(labels)))


def _jpeg_pool(root, seed=0):
    """Real photos as JPEGs with two sources' own (non-IJG) tables, AI images as PNGs."""
    rng = np.random.default_rng(seed)
    rows = []
    # sizes chosen so that each of two folds leaves out one real source (largest family first into the lighter fold)
    spec = {"cam": (0, 30, _tables(90, 1)), "phone": (0, 28, _tables(80, 3)), "gan": (1, 24, None), "sd": (1, 22, None)}
    for g, (label, n, tables) in spec.items():
        d = root / ("ai" if label else "real")
        d.mkdir(parents=True, exist_ok=True)
        for i in range(n):
            img = make_image(label, rng, 40)
            name = f"{g}_{i}." + ("jpg" if tables else "png")
            if tables:
                img.save(d / name, "JPEG", qtables=[list(tables[0]), list(tables[1])], subsampling=2)
            else:
                img.save(d / name)
            rows.append({"path": f"{d.name}/{name}", "label": "ai" if label else "real", "generator": g})
    return write_manifest(root, rows)


def test_crossval_reports_the_yardstick(tmp_path):
    pool = _jpeg_pool(tmp_path / "pool")
    cfg = CrossvalConfig(sources=[str(pool)], folds=2, seed=0, report_conditions=PANEL + [SWAP],
                         train=TrainConfig(model="fastnet_s", image_size=40, resize_policy="native", crop=24, tiles=2,
                                           epochs=3, batch_size=16, lr=3e-3, patience=20, val_fraction=0.15,
                                           device="cpu"))
    rep = run_crossval(cfg, tmp_path / "cv", progress=False)
    y = rep["yardstick"]
    assert set(y["conditions"]) == set(PANEL) | {SWAP}
    assert not rep["conditions"]  # reported, not fitted on
    w = y["worst_of_panel"]
    assert w["roc_auc"] == min(y["conditions"][c]["roc_auc"] for c in PANEL)
    assert w["mean_ai_unit_roc_auc"] <= min(y["conditions"][c]["mean_ai_unit_roc_auc"] for c in PANEL) + 1e-12
    assert set(y["swap_shift"]) == {"ai:gan", "ai:sd", "real:cam", "real:phone"}
    assert "Yardstick" in (tmp_path / "cv" / "crossval.md").read_text()
    assert "Re-saved the same way" in (tmp_path / "cv" / "crossval.md").read_text()
    assert set(y["resave"]["units"]) == {"ai:gan", "ai:sd", "real:cam", "real:phone"}  # every unit has n >= 20
    # the paired bootstrap reads the panel's scores: a run against itself differs by exactly nothing
    import json
    import sys
    from pathlib import Path

    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "scripts"))
    import paired_bootstrap

    paired_bootstrap.main([str(tmp_path / "cv"), str(tmp_path / "cv"), "--n-boot", "20", "--out", str(tmp_path / "pb.json")])
    c = json.loads((tmp_path / "pb.json").read_text())["comparisons"][str(tmp_path / "cv")]
    assert c["panel_conditions"] == sorted(PANEL)
    assert c["worst_of_panel_mean_ai_family_roc_auc"]["ci95"] == [0.0, 0.0]
    assert c["worst_of_panel_mean_ai_family_roc_auc"]["reference"] == pytest.approx(w["mean_ai_unit_roc_auc"], abs=1e-4)
    # the shipped model keeps its training real photos' camera tables, so robustness can make the swap too
    from synthcheck import Detector
    from synthcheck.analysis.robustness import robustness_report
    from synthcheck.training.crossval import train_final

    cfg.train.epochs = 1
    final = train_final(cfg, tmp_path / "cv", rep, progress=False)
    assert sorted(len(set(t["luma"])) > 1 and t["subsampling"] for t in final["camera_tables"]) == ["4:2:0", "4:2:0"]
    other = _jpeg_pool(tmp_path / "other", seed=1)  # not the training files (robustness drops those)
    rob = robustness_report(Detector.load(tmp_path / "cv" / "final" / "model"), other, None, limit=6, eps=(2,),
                            steps=1, progress=False)
    assert set(rob["copies"]) == set(PANEL) | {SWAP} and 0 <= rob["copies"][SWAP]["accuracy"] <= 1
    # a swap that some fold cannot make fails before any fold trains (no real JPEG with camera tables here)
    png_pool = _jpeg_pool(tmp_path / "png_pool", seed=2)
    for f in (png_pool / "real").glob("*.jpg"):
        Image.open(f).save(f.with_suffix(".png"))
        f.unlink()
    with open(png_pool / "manifest.csv") as fh:
        text = fh.read().replace(".jpg", ".png")
    (png_pool / "manifest.csv").write_text(text)
    with pytest.raises(ValueError, match="no real photo it trained on carries camera tables"):
        run_crossval(CrossvalConfig(sources=[str(png_pool)], folds=2, report_conditions=[SWAP], train=cfg.train),
                     tmp_path / "cv_png", progress=False)
    assert not (tmp_path / "cv_png" / "fold_0").exists()
    cfg.report_conditions = ["shouted at"]
    with pytest.raises(ValueError, match="unknown condition"):
        run_crossval(cfg, tmp_path / "cv", progress=False)

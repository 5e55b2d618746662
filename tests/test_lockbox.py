"""Lockbox figures: each AI collection against all the lockbox's real photos, each real source against all its AI
images; every score appended to the log and the table rebuilt from it."""

from __future__ import annotations

import json

import numpy as np
import pytest

from synthcheck.analysis.lockbox import collection_aucs, log_markdown, log_score, score_run


def test_collection_aucs_follow_the_definition():
    names = ["ai/a__g__1.png", "ai/a__g__2.png", "ai/b__g__1.png", "real/r__real-photo__1.jpg",
             "real/r__real-photo__2.jpg", "real/s__real-photo__1.jpg"]
    labels = np.array([1, 1, 1, 0, 0, 0])
    probs = np.array([0.9, 0.8, 0.1, 0.2, 0.3, 0.95])
    got = collection_aucs(names, labels, probs)
    assert got["a"]["roc_auc"] == pytest.approx(4 / 6)   # a: 0.9, 0.8 against 0.2, 0.3, 0.95
    assert got["b"]["roc_auc"] == pytest.approx(0.0)     # b: 0.1 below all three
    assert got["r"]["roc_auc"] == pytest.approx(4 / 6)   # r: 0.2, 0.3 (real) against 0.9, 0.8, 0.1
    assert got["s"]["roc_auc"] == pytest.approx(0.0) and got["s"]["label"] == "real"
    with pytest.raises(ValueError, match="both labels"):
        collection_aucs(["ai/a__g__1.png", "real/a__g__2.png"], [1, 0], [0.5, 0.5])


def test_score_run_logs_and_tabulates(tmp_path):
    d = tmp_path / "eval" / "lockbox"
    d.mkdir(parents=True)
    np.savez(d / "scores.npz", probs=np.array([0.9, 0.2]), labels=np.array([1, 0]),
             names=np.array(["ai/a__g__1.png", "real/r__real-photo__1.jpg"]))
    (d / "metrics.json").write_text(json.dumps({"roc_auc": 1.0, "coverage": 0.5, "confident_accuracy": 1.0}))
    entry = score_run(tmp_path / "eval", "toy")
    assert entry["mean_collection_roc_auc"] == 1.0 and entry["n"] == 2
    log = tmp_path / "log.jsonl"
    log_score(entry, log)
    log_score({**entry, "model": "toy 2"}, log)
    md = log_markdown(log)
    assert md.count("| toy") == 2 and "a (ai, 1)" in md
    np.savez(d / "scores.npz", probs=np.array([0.9]), labels=np.array([1]))
    with pytest.raises(ValueError, match="no file names"):
        score_run(tmp_path / "eval", "old")


def test_panel_scores_reproduce_evaluate_as_is_and_take_each_collections_worst(tmp_path):
    from synthcheck import Detector
    from synthcheck.analysis.evaluate import evaluate_sets
    from synthcheck.analysis.lockbox import panel_entries, panel_scores
    from synthcheck.data.transforms import PANEL

    from conftest import make_image

    rng = np.random.default_rng(0)
    for label, cols in ((1, ("a", "b")), (0, ("r", "s"))):
        d = tmp_path / "box" / ("ai" if label else "real")
        d.mkdir(parents=True)
        for c in cols:
            for i in range(4):
                make_image(label, rng, 64).save(d / f"{c}__{'g' if label else 'real-photo'}__{i}.png")
    det = Detector.load("default")
    scores = panel_scores(det, tmp_path / "box", ["as is"] + PANEL, progress=False)
    names, labels, probs = scores["as is"]
    (m,) = evaluate_sets(det, [tmp_path / "box"], tmp_path / "ev", progress=False, plots=False)["sets"].values()
    z = np.load(next((tmp_path / "ev").glob("*/scores.npz")))
    order = np.argsort(z["names"])
    assert np.allclose(probs[np.argsort(names)], z["probs"][order], atol=1e-6)
    entries = panel_entries(scores, "toy", "box")
    assert [e["condition"] for e in entries] == ["as is"] + PANEL + ["worst of panel"]
    worst = entries[-1]["collections"]
    for c in ("a", "b", "r", "s"):
        assert worst[c]["roc_auc"] == min(e["collections"][c]["roc_auc"] for e in entries[1:-1])
    # the re-save checks per collection: paired on the same files, judged from min_n images up
    from synthcheck.analysis.lockbox import panel_resave
    from synthcheck.data.groups import generator_of

    r = panel_resave(scores, min_n=4)
    assert set(r["units"]) == {"a", "b", "r", "s"} and set(r["checks"]) >= {"real_shift", "ai_shift"}
    _, _, q92 = scores["JPEG 92 4:2:0"]
    is_a = np.array([generator_of(n) == "a" for n in names])
    assert r["units"]["a"]["JPEG 92 4:2:0"]["median_shift"] == pytest.approx(np.median(q92[is_a] - probs[is_a]))
    assert panel_resave(scores, min_n=5)["too_small"] == ["a", "b", "r", "s"]
    (tmp_path / "empty").mkdir()
    with pytest.raises(ValueError, match="no image to score"):
        panel_scores(det, tmp_path / "empty", ["as is"], progress=False)


def test_the_reading_table_is_checked_on_the_files_and_on_the_panels_copies():
    from synthcheck.analysis.lockbox import panel_reading, reading_lines

    names = np.array([f"c__g__{i}.png" for i in range(6)])
    labels = np.array([0, 0, 0, 1, 1, 1])
    scores = {"as is": (names, labels, np.array([0.1, 0.2, 0.7, 0.3, 0.8, 0.9])),
              "JPEG 75 4:2:0": (names, labels, np.array([0.1, 0.1, 0.2, 0.2, 0.3, 0.9]))}
    table = {"edges": [0.0], "ai_share": [0.2, 0.8]}  # below P(AI) 0.5: AI 2 times in 10, above: 8 in 10
    r = panel_reading(scores, table, temperature=1.0)
    assert [x["n_ai"] for x in r["as is"]] == [1, 2] and [x["n_real"] for x in r["as is"]] == [2, 1]
    assert r["as is"][0]["measured"] == pytest.approx(1 / 3)
    assert r["panel copies"][0]["n_ai"] == 2 and r["panel copies"][1]["measured"] == 1.0
    md = "\n".join(reading_lines(r, 1.0))
    assert "| 0.000–0.500 | 0.20 | 0.33 (1 / 2) | 0.40 (2 / 3) |" in md
    assert panel_reading(scores, None, 1.0) is None and "no reading table" in "\n".join(reading_lines(None, 1.0))


def test_the_lockbox_gate_reads_the_log_and_holds_the_candidate_to_both_baselines():
    from synthcheck.analysis.lockbox import lockbox_gate

    def entry(model, cond, a, b, n=10):
        cols = {"x": {"roc_auc": a}, "y": {"roc_auc": b}}
        return {"model": model, "condition": cond, "n": n, "collections": cols, "mean_collection_roc_auc": (a + b) / 2}

    log = [entry(m, c, *v) for m, c, v in [("v21", "as is", (0.80, 0.70)), ("v3", "as is", (0.70, 0.80)),
                                           ("v21", "worst of panel", (0.7, 0.6)), ("v3", "worst of panel", (0.6, 0.7)),
                                           ("new", "as is", (0.79, 0.90)), ("new", "worst of panel", (0.75, 0.75))]]
    g = lockbox_gate(log + [entry("new", "as is", 0.1, 0.1, n=99)], "new", ["v21", "v3"], n=10)
    assert g["passed"] and g["by_condition"]["as is"]["candidate_mean"] == pytest.approx(0.845)
    g = lockbox_gate(log + [entry("new", "as is", 0.77, 0.95)], "new", ["v21", "v3"], n=10)  # latest entry wins
    assert not g["passed"] and g["by_condition"]["as is"]["collections_short"] == {
        "x": {"candidate": 0.77, "better_baseline": 0.80}}
    with pytest.raises(ValueError, match="no 'as is' score over 5 images"):
        lockbox_gate(log, "new", ["v21", "v3"], n=5)
    assert lockbox_gate(log, "new", ["v21", "v3"])["n"] == 10  # by default, the lockbox the candidate was judged on
    with pytest.raises(ValueError, match="no 'as is' score of nobody"):
        lockbox_gate(log, "nobody", ["v21", "v3"])

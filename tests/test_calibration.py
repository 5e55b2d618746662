import numpy as np
import pytest

from synthcheck.analysis.metrics import compute_metrics
from synthcheck.inference.calibration import (choose_threshold, expected_calibration_error, fit_temperature,
                                              probabilities)


def test_temperature_recovers_overconfidence():
    rng = np.random.default_rng(0)
    true_logits = rng.normal(0, 2, 20000)
    labels = (rng.random(20000) < 1 / (1 + np.exp(-true_logits))).astype(int)
    t = fit_temperature(true_logits * 3, labels)
    assert 2.7 < t < 3.3
    assert expected_calibration_error(probabilities(true_logits * 3, t), labels) < 0.01
    assert expected_calibration_error(probabilities(true_logits * 3, 1.0), labels) > 0.05


def test_threshold_rules():
    rng = np.random.default_rng(1)
    labels = np.r_[np.zeros(1000), np.ones(1000)].astype(int)
    probs = np.clip(np.r_[rng.normal(0.3, 0.15, 1000), rng.normal(0.7, 0.15, 1000)], 0, 1)
    eer = choose_threshold(probs, labels)
    assert abs(eer["threshold"] - 0.5) < 0.05 and eer["rule"] == "equal_error_rate"
    strict = choose_threshold(probs, labels, max_fpr=0.01)
    assert strict["threshold"] > eer["threshold"]
    assert ((probs[labels == 0] >= strict["threshold"]).mean()) <= 0.01


def test_metrics_match_hand_counts():
    labels = np.array([0, 0, 1, 1, 1])
    probs = np.array([0.1, 0.6, 0.7, 0.8, 0.2])
    m = compute_metrics(labels, probs, 0.5, uncertain_band=0.15)
    assert m["confusion_matrix"] == [[1, 1], [1, 2]]
    assert m["accuracy"] == 0.6 and abs(m["precision"] - 2 / 3) < 1e-9 and abs(m["recall"] - 2 / 3) < 1e-9
    assert 0 <= m["roc_auc"] <= 1 and "real" in m["classification_report"]
    assert m["coverage"] == 0.8  # only 0.6 lies inside the band (|0.6-0.5| < 0.15)
    assert m["confident_accuracy"] == 0.75


def test_unseen_reading_says_how_often_a_score_range_was_ai_with_the_classes_weighted_to_half():
    from synthcheck.inference.calibration import read_score, unseen_reading
    from synthcheck.inference.prediction import reading_words, times_in_ten

    rng = np.random.default_rng(0)
    z = np.r_[rng.normal(-1, 1, 400), rng.normal(1, 1, 400)]
    y = np.r_[np.zeros(400, int), np.ones(400, int)]
    r = unseen_reading(z, y, bins=8)
    assert len(r["edges"]) == 7 and sum(r["n"]) == 800 and r["images"] == 800
    assert np.all(np.diff(r["ai_share"]) >= 0) and r["ai_share"][0] < 0.2 and r["ai_share"][-1] > 0.8
    # each class weighted to half: three copies of every AI image change the counts, not the shares
    z3, y3 = np.r_[z, np.tile(z[y == 1], 2)], np.r_[y, np.ones(800, int)]
    r3 = unseen_reading(z3, y3, bins=8)
    assert np.allclose(r3["ai_share"], [read_score(r, e)["ai_share"] for e in
                                        [(a + b) / 2 for a, b in zip([-9] + r3["edges"], r3["edges"] + [9])]], atol=0.1)
    assert r3["n_ai"][-1] > r["n_ai"][-1]
    row = read_score(r, 5.0)
    assert row["ai_share"] == r["ai_share"][-1] and row["range_logit"] == [r["edges"][-1], None]
    assert read_score(r, -5.0)["range_logit"] == [None, r["edges"][0]]
    assert times_in_ten(0.15) == "2 times in 10" and times_in_ten(0.1) == "1 time in 10"
    assert times_in_ten(0.97) == "more than 9 times in 10" and times_in_ten(0.01) == "fewer than 1 time in 10"
    words = reading_words({**row, "images": 800})
    assert "never saw" in words and "half AI and half real" in words and "of 800 left-out images scored" in words
    # a table fitted on re-saved copies too counts copies, and says so
    assert "left-out images and re-saved copies" in reading_words({**row, "images": 800, "copies": ["as is", "x"]})
    with pytest.raises(ValueError, match="both labels"):
        unseen_reading(z, np.zeros(800, int))


def test_a_reading_table_is_checked_on_other_images_range_by_range():
    from synthcheck.inference.calibration import measured_reading, unseen_reading

    rng = np.random.default_rng(1)
    y = np.r_[np.zeros(400, int), np.ones(400, int)]
    table = unseen_reading(np.r_[rng.normal(-1, 1, 400), rng.normal(1, 1, 400)], y, bins=4)
    same = measured_reading(table, np.r_[rng.normal(-1, 1, 400), rng.normal(1, 1, 400)], y)
    assert len(same) == 4 and same[0]["range_logit"][0] is None and same[-1]["range_logit"][1] is None
    assert sum(r["n_ai"] + r["n_real"] for r in same) == 800
    assert all(abs(r["measured"] - r["claimed"]) < 0.15 for r in same)  # drawn alike: the claims hold
    # a model that now scores AI images lower: the low ranges hold more AI than they claim
    drifted = measured_reading(table, np.r_[rng.normal(-1, 1, 400), rng.normal(-0.5, 1, 400)], y)
    assert drifted[0]["measured"] > drifted[0]["claimed"] + 0.1
    with pytest.raises(ValueError, match="both labels"):
        measured_reading(table, np.zeros(3), np.zeros(3, int))

import numpy as np

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

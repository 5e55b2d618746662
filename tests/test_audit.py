"""Single-feature AUROC: how well one file property alone separates the classes."""

import numpy as np
import pytest

from synthcheck.analysis.audit import _single_feature_auroc


def test_categorical_feature_that_separates_perfectly():
    assert _single_feature_auroc(["PNG", "PNG", "JPEG", "JPEG"], [1, 1, 0, 0]) == 1.0


def test_categorical_feature_scored_by_share_of_ai():
    # category "a": 1 of 3 AI, "b": 2 of 3 AI -> every file scored by its category's share of AI
    vals = ["a", "a", "a", "b", "b", "b"]
    labels = [0, 0, 1, 0, 1, 1]
    from sklearn.metrics import roc_auc_score

    expected = roc_auc_score(labels, [1 / 3] * 3 + [2 / 3] * 3)
    assert _single_feature_auroc(vals, labels) == pytest.approx(max(expected, 1 - expected))


def test_constant_and_numeric_features():
    assert _single_feature_auroc([32] * 6, [0, 0, 0, 1, 1, 1]) == 0.5
    rng = np.random.default_rng(0)
    sizes = np.r_[rng.normal(900, 10, 200), rng.normal(1000, 10, 200)]
    assert _single_feature_auroc(list(sizes), [0] * 200 + [1] * 200) > 0.99
    assert _single_feature_auroc([1, 2], [1, 1]) is None  # one class: nothing to separate

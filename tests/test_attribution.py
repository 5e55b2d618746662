"""Attribution: the head names known generator families and answers "unknown" for one it never saw."""

from __future__ import annotations

import numpy as np

from synthcheck.attribution import (UNKNOWN, AttributionHead, fit_head, fit_open_set, leave_one_family_out,
                                    trade_off_curve)


def _toy(rng, n=60, d=16, k=4):
    """k well-separated Gaussian families in d dimensions."""
    centres = rng.normal(0, 4, (k, d))
    x = np.concatenate([c + rng.normal(0, 1, (n, d)) for c in centres])
    fam = np.repeat([f"gen{i}" for i in range(k)], n)
    return x, fam, centres


def test_head_names_known_families_and_round_trips(tmp_path):
    rng = np.random.default_rng(0)
    x, fam, _ = _toy(rng)
    head = fit_head(x, fam)
    pred = head.predict(x)
    assert np.mean([p["name"] == f for p, f in zip(pred, fam)]) > 0.95
    assert len(pred[0]["top3"]) == 3 and pred[0]["top3"][0]["family"] == pred[0]["name"]
    head.save(tmp_path)
    again = AttributionHead.load(tmp_path)
    assert np.allclose(again.probabilities(x), head.probabilities(x), atol=1e-5)


def test_open_set_rule_rejects_a_synthetic_unknown_family():
    rng = np.random.default_rng(1)
    x, fam, centres = _toy(rng, k=5)
    test = np.zeros(len(fam), bool)
    test[rng.permutation(len(fam))[: len(fam) // 4]] = True
    lofo = leave_one_family_out(x, fam, test)
    fit = fit_open_set(lofo, keep_known=0.8)
    assert fit["figures"][fit["rule"]]["unknown_rejected"] >= 0.7
    assert abs(fit["figures"][fit["rule"]]["known_named"] - 0.8) < 0.05
    # a head on four families, thresholded by the rule, calls the fifth "unknown"
    keep = fam != "gen4"
    head = fit_head(x[keep & ~test], fam[keep & ~test])
    head.rule, head.threshold = fit["rule"], fit["threshold"]
    names = [p["name"] for p in head.predict(x[fam == "gen4"])]
    assert np.mean([n == UNKNOWN for n in names]) >= 0.7
    known = [p["name"] for p in head.predict(x[keep & test])]
    assert np.mean([n == f for n, f in zip(known, fam[keep & test])]) >= 0.7
    curve = trade_off_curve(lofo, fit["rule"])
    assert curve["known_named"][0] == 1.0 and curve["unknown_rejected"][-1] == 1.0

"""The robustness report: every condition measured, files written, clean figures equal evaluate's, attacks hurt."""

import json
import shutil

import pytest
from typer.testing import CliRunner

from synthcheck import Detector
from synthcheck.analysis.evaluate import evaluate_sets
from synthcheck.analysis.robustness import robustness_report
from synthcheck.cli import app
from synthcheck.data.transforms import DAMAGE, PANEL, SWAP

from test_explain import CIFAKE_SAMPLES


@pytest.fixture(scope="module")
def sample_set(tmp_path_factory):
    root = tmp_path_factory.mktemp("rob")
    for f in CIFAKE_SAMPLES:
        d = root / ("FAKE" if f.name.startswith("ai_") else "REAL")
        d.mkdir(exist_ok=True)
        shutil.copy(f, d / f.name)
    return root


def test_report_covers_every_condition(sample_set, tmp_path):
    det = Detector.load("default")
    rep = robustness_report(det, sample_set, tmp_path, limit=None, eps=(2, 8), steps=5, progress=False)
    assert rep["n"] == 8
    assert {k: set(v) for k, v in rep["damage"].items()} == {k: {str(x) for x in lv} for k, (_, lv) in DAMAGE.items()}
    assert set(rep["attacks"]) == {"fgsm", "pgd"} and set(rep["attacks"]["pgd"]) == {"2", "8"}
    # the copies of the one registry (data.transforms.CONDITIONS): the panel; the swap needs the model's camera tables
    assert set(rep["copies"]) == set(PANEL) | {SWAP} and "camera tables" in rep["copies"][SWAP]["skipped"]
    assert all(0 <= rep["copies"][c]["accuracy"] <= 1 for c in PANEL)
    # clean figures are exactly what evaluate reports on the same images
    (m,) = evaluate_sets(det, [sample_set], None, progress=False, plots=False)["sets"].values()
    assert rep["clean"]["accuracy"] == m["accuracy"] and rep["clean"]["roc_auc"] == m["roc_auc"]
    # a strong attack must hurt, and PGD at least as much as FGSM
    assert rep["attacks"]["pgd"]["8"]["accuracy"] < rep["clean"]["accuracy"]
    assert rep["attacks"]["pgd"]["8"]["accuracy"] <= rep["attacks"]["fgsm"]["8"]["accuracy"]
    for f in ("robustness.json", "robustness.png", "adversarial_examples.png"):
        assert (tmp_path / f).stat().st_size > 0
    assert json.loads((tmp_path / "robustness.json").read_text())["attack_settings"]["pgd_steps"] == 5


def test_robustness_cli(sample_set, tmp_path):
    r = CliRunner().invoke(app, ["robustness", "default", str(sample_set), "--out", str(tmp_path), "--eps", "4",
                                 "--steps", "2"])
    assert r.exit_code == 0, r.output
    assert "pgd" in r.output and "jpeg" in r.output and (tmp_path / "robustness.json").exists()
    r = CliRunner().invoke(app, ["robustness", "default", str(tmp_path / "missing")])
    assert r.exit_code == 2 and "no such file" in r.output

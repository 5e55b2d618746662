"""Attribution: the head names known generator families and answers "unknown" for one it never saw."""

from __future__ import annotations

import json

import numpy as np
import pytest

from synthcheck.inference.attribution import UNKNOWN, AttributionHead
from synthcheck.training.attribution import fit_head, fit_open_set, leave_one_family_out, trade_off_curve


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


def test_families_decided_from_the_data():
    from synthcheck.training.attribution import family_map

    groups = np.array(["ai:diffusion"] * 60 + ["ai:stylegan"] * 30 + ["ai:biggan"] * 30 + ["ai:glid-3"] * 15
                      + ["ai:realorai"] * 20 + ["real:coco"] * 10)
    fam, s = family_map(groups, {"stylegan": "gan", "biggan": "gan", "diffusion": "sd"}, 50, ["realorai"])
    assert s["known"] == {"gan": 60, "sd": 60} and s["too_thin_to_name"] == {"glid-3": 15}
    assert (fam[groups == "ai:glid-3"] == UNKNOWN).all() and (fam[groups == "ai:realorai"] == UNKNOWN).all()
    assert (fam[groups == "real:coco"] == "").all() and s["unknown_examples"] == 35


def test_fit_attribution_reports_held_out_top1_and_rejects_unknown_examples(tmp_path):
    from synthcheck.training.attribution import fit_attribution, plot_attribution

    rng = np.random.default_rng(2)
    x, fam, _ = _toy(rng, n=80, k=7)
    fam = fam.astype(object)
    groups = fam.copy()
    fam[np.isin(fam, ["gen4", "gen5", "gen6"])] = UNKNOWN  # generators the head must not name
    real = rng.normal(0, 4, (40, x.shape[1]))
    head, rep = fit_attribution(np.r_[x, real], np.r_[fam, [""] * 40], groups=np.r_[groups, ["real"] * 40],
                                cs=(0.1, 1.0))
    assert head.families == ["gen0", "gen1", "gen2", "gen3"] and rep["n_test"] == 80
    assert head.outlier_class and rep["n_outlier_examples"] == 240
    assert rep["top1"] >= 0.9 and rep["unknown_examples_rejected"] >= 0.7
    nested = rep["open_set"]["nested"]
    assert set(nested["unknown_rejected_by_family"]) == {"gen0", "gen1", "gen2", "gen3"}
    assert nested["unknown_rejected"] >= 0.7
    assert np.array(rep["confusion_matrix"]).sum() == rep["n_test"]
    plot_attribution(rep, tmp_path / "a.png")
    assert (tmp_path / "a.png").stat().st_size > 1000


def test_outlier_class_is_never_a_name_and_probabilities_leave_room_for_it(tmp_path):
    """Outlier exposure: images like the outlier examples score low on 'outlier' and are answered "unknown";
    named families' probabilities sum to 1 - P(outlier); the head round-trips with its extra row."""
    from synthcheck.inference.attribution import open_set_scores

    rng = np.random.default_rng(3)
    x, fam, _ = _toy(rng, n=60, k=4)
    fam = fam.astype(object)
    fam[fam == "gen3"] = UNKNOWN
    head = fit_head(x, fam)
    assert head.families == ["gen0", "gen1", "gen2"] and head.weight.shape[0] == 4
    p = head.probabilities(x)
    assert p.shape == (len(x), 3) and (p.sum(1) <= 1 + 1e-9).all()
    s = open_set_scores(head, x, "outlier")
    assert s[fam == UNKNOWN].mean() < 0.2 < 0.8 < s[fam != UNKNOWN].mean()
    head.rule, head.threshold = "outlier", 0.5
    assert all(pr["name"] == UNKNOWN and all(t["family"] != UNKNOWN for t in pr["top3"])
               for pr in head.predict(x[fam == UNKNOWN]))
    head.save(tmp_path)
    again = AttributionHead.load(tmp_path)
    assert again.outlier_class and np.allclose(open_set_scores(again, x, "outlier"), s, atol=1e-5)


def test_generator_shown_on_every_front_end(tmp_path):
    """The bundled photo model names a generator (or "unknown") for "ai"/"uncertain" verdicts: in the library,
    the CLI's JSON, CSV and table, the REST API and the page."""
    import json
    from pathlib import Path

    from fastapi.testclient import TestClient
    from typer.testing import CliRunner

    from synthcheck import Detector
    from synthcheck.cli import app
    from synthcheck.serving.cards import cards
    from synthcheck.serving.serve import create_app
    from synthcheck.serving.service import ServeSettings

    sample = Path(__file__).resolve().parents[1] / "src" / "synthcheck" / "samples" / "ai_diffusiondb_diffusion_000225.jpg"
    det = Detector.load("photo")
    assert det.attribution is not None, "the bundled photo model ships its attribution head"
    p = det.predict(str(sample))[0]
    assert p.verdict in ("ai", "uncertain") and p.generator is not None
    g = p.generator
    assert g["name"] in det.attribution.families + [UNKNOWN]
    if det.attribution.naming is not None and g["name"] == UNKNOWN:
        # a name the rule refuses shows no candidates: only why (the bundled rule names nothing from pixels)
        assert g["top3"] == [] and g["probability"] is None and "no name" in g["note"]
    else:
        assert len(g["top3"]) == 3 and abs(sum(t["probability"] for t in g["top3"])) <= 1.0 + 1e-6
    r = CliRunner().invoke(app, ["predict", str(sample), "--model", "photo", "--json"])
    assert r.exit_code == 0, r.output
    assert json.loads(r.output.strip().splitlines()[-1])["generator"]["name"] == g["name"]
    r = CliRunner().invoke(app, ["predict", str(sample), "--model", "photo", "--csv"])
    assert r.exit_code == 0 and "generator" in r.output.splitlines()[0] and g["name"] in r.output
    with TestClient(create_app(ServeSettings(ui=False), detector=det)) as c:
        body = c.post("/v1/detect", files=[("files", (sample.name, sample.read_bytes(), "image/jpeg"))]).json()
    assert body["results"][0]["generator"]["name"] == g["name"]
    assert f"Generator: <b>{g['name']}</b>" in cards(body["results"])


def test_metadata_naming_a_generator_is_reported_and_wins(tmp_path):
    """A PNG whose Stable Diffusion WebUI text names the generator: the verdict's `generator` says so, from
    metadata, beside what the pixels say."""
    from pathlib import Path

    from PIL import Image
    from PIL.PngImagePlugin import PngInfo

    from synthcheck import Detector
    from synthcheck.inference.attribution import from_metadata

    sample = Path(__file__).resolve().parents[1] / "src" / "synthcheck" / "samples" / "ai_diffusiondb_diffusion_000225.jpg"
    info = PngInfo()
    info.add_text("parameters", "a photo of a cat\nSteps: 20, Sampler: Euler a, CFG scale: 7, Seed: 1, Model: sd_xl_base_1.0")
    path = tmp_path / "sd.png"
    Image.open(sample).save(path, pnginfo=info)
    p = Detector.load("photo").predict(str(path))[0]
    assert p.verdict == "ai" and p.generator["name"] == "stable-diffusion" and p.generator["source"] == "metadata"
    assert p.generator["pixels"]["name"] in ("stable-diffusion", "nano-banana", "gpt-4o", "cnndetection-gan", UNKNOWN)
    assert "wins" in p.generator["note"]
    # naming rules: the most specific name first, no name from evidence that does not indicate AI
    ev = [{"indicates": "ai", "value": "ComfyUI flux1-dev.safetensors", "note": "", "strength": "strong",
           "source": "png", "field": "prompt"}]
    assert from_metadata(ev)["name"] == "flux"
    assert from_metadata([{**ev[0], "indicates": "real"}]) is None


def test_features_are_stage_means_and_their_spread_over_tiles():
    """Per image: the mean and the std over its tiles of each tile's stage channel means; an image whose tiles
    are all the same (no larger than one tile) is scored once and has no spread."""
    import torch

    from synthcheck.inference.scoring import score_with_features
    from synthcheck.models.features import FeatureTap
    from synthcheck.models.registry import build_model

    model, _ = build_model("mobilenet_v2", None, 32)
    model.eval()
    rng = np.random.default_rng(0)
    tiles = rng.integers(0, 256, (2, 4, 3, 32, 32), dtype=np.uint8)
    tiles[1] = tiles[1, :1]  # a small image: one tile repeated
    _, feats = score_with_features(model, tiles, 16)
    with FeatureTap(model) as tap, torch.inference_mode():
        model(torch.from_numpy(tiles[0]).float() / 255)
        per_tile = tap.take().numpy()
    d = per_tile.shape[1]
    assert feats.shape == (2, 2 * d)
    assert np.allclose(feats[0, :d], per_tile.mean(0), atol=1e-5) and np.allclose(feats[0, d:], per_tile.std(0), atol=1e-5)
    assert (feats[1, d:] == 0).all()


def test_a_head_fitted_on_other_features_is_not_used(tmp_path, monkeypatch):
    """A model directory whose head was fitted on older features scores as before, names generators from
    metadata only, and says why once."""
    import shutil

    from synthcheck import Detector
    from synthcheck.models.bundled import resolve_model

    d = tmp_path / "photo"
    shutil.copytree(resolve_model("photo"), d)
    cfg = json.loads((d / "attribution.json").read_text())
    cfg["info"]["features"] = "last-linear/v1"
    (d / "attribution.json").write_text(json.dumps(cfg))
    with pytest.warns(UserWarning, match="refit it with `synthcheck attribution`"):
        det = Detector.load(d, backend="torch", precision="fp32")
    assert det.attribution is None


def test_the_cli_says_once_that_pixels_name_nothing(tmp_path):
    """With a naming rule that names no family, the predict table says so once under it, not on every row; a row
    whose metadata names the generator keeps its own line."""
    from pathlib import Path

    from PIL import Image
    from PIL.PngImagePlugin import PngInfo
    from typer.testing import CliRunner

    from synthcheck.cli import app
    from synthcheck.inference.attribution import NO_PIXEL_NAMES

    sample = Path(__file__).resolve().parents[1] / "src" / "synthcheck" / "samples" / "ai_diffusiondb_diffusion_000225.jpg"
    for i in range(2):
        Image.open(sample).rotate(90 * i).save(tmp_path / f"plain{i}.jpg", quality=95)
    info = PngInfo()
    info.add_text("parameters", "a cat\nSteps: 20, Sampler: Euler a, CFG scale: 7, Seed: 1, Model: sd_xl_base_1.0")
    Image.open(sample).save(tmp_path / "sd.png", pnginfo=info)
    r = CliRunner().invoke(app, ["predict", str(tmp_path), "--model", "photo"], env={"COLUMNS": "400"})
    assert r.exit_code == 0, r.output
    flat = " ".join(r.output.split())
    assert flat.count("no family's pixel name was right often enough") == 1, r.output
    assert "generator from pixels, for every photo above: unknown" in flat
    assert "generator: stable-diffusion (metadata" in flat
    assert NO_PIXEL_NAMES.startswith("pixels: no name")

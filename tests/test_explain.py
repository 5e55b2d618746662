"""Explanations: every method runs and renders, depends on the model (randomization test), and LIME/SHAP find
planted evidence."""

import copy
from pathlib import Path

import numpy as np
import pytest
import torch
from scipy.stats import spearmanr
from typer.testing import CliRunner

from synthcheck import Detector
from synthcheck.cli import app
from synthcheck.data.preprocess import ImageError
from synthcheck.inference.explain import _perturbation, gradcam, gradcam_pp, render
from synthcheck.models.checkpoint import load_model
from synthcheck.models.registry import REGISTRY, build_model

SAMPLES = Path(__file__).resolve().parents[1] / "src" / "synthcheck" / "samples"
CIFAKE_SAMPLES = sorted(SAMPLES.glob("*_cifake_*.jpg"))


@pytest.fixture(scope="module")
def det():
    return Detector.load("default")


def _rho(a, b):
    return float(spearmanr(a.ravel(), b.ravel())[0])


def _randomized(model):
    """Model-parameter randomization (Adebayo et al., 2018): every layer re-initialised."""
    rand = copy.deepcopy(model)
    torch.manual_seed(0)
    for m in rand.modules():
        if m is not rand and hasattr(m, "reset_parameters"):
            m.reset_parameters()
    return rand


def _passes_randomization_test(explain_fn, model, images, as_trained=None) -> tuple[bool, float, float]:
    """Maps must be stable under a tiny input change but change materially when the weights are randomized.

    `as_trained`: the network as built for training (a Detector's own copy has BatchNorm folded into the
    convs, and re-initialising a folded conv is not the randomization the test means).
    """
    rng = np.random.default_rng(0)
    rand = _randomized(as_trained if as_trained is not None else model)
    stable, randomized = [], []
    for im in images:
        noisy = np.clip(im.astype(int) + rng.integers(-2, 3, im.shape), 0, 255).astype(np.uint8)
        ref = explain_fn(model, im)
        stable.append(_rho(ref, explain_fn(model, noisy)))
        randomized.append(_rho(ref, explain_fn(rand, im)))
    s, r = float(np.mean(stable)), float(np.mean(randomized))
    return s > 0.9 and r < 0.3 and s - r > 0.6, s, r


@pytest.mark.parametrize("method", ["gradcam", "gradcampp"])
def test_cam_passes_the_model_randomization_test(det, method):
    images = [det.preprocess(f).transpose(1, 2, 0) for f in CIFAKE_SAMPLES]
    fn = gradcam if method == "gradcam" else gradcam_pp

    def cam(model, im):
        towards_ai = det.probabilities_from_arrays(im.transpose(2, 0, 1)[None])[0] >= det.threshold
        return fn(model, im, bool(towards_ai))

    ok, stable, randomized = _passes_randomization_test(cam, det.model, images, load_model(det.directory)[0])
    assert ok, (stable, randomized)


def test_randomization_test_rejects_an_explanation_that_ignores_the_weights(det):
    """Negative control: an 'explanation' made from image contrast alone must fail the same criterion."""
    images = [det.preprocess(f).transpose(1, 2, 0) for f in CIFAKE_SAMPLES]

    def contrast(model, im):
        g = im.astype(float).mean(2)
        return np.abs(np.gradient(g)[0]) + np.abs(np.gradient(g)[1])

    ok, stable, randomized = _passes_randomization_test(contrast, det.model, images, load_model(det.directory)[0])
    assert not ok and randomized > 0.99


@pytest.mark.parametrize("name", list(REGISTRY))
def test_gradcam_and_gradcampp_on_every_registry_architecture(name):
    torch.manual_seed(0)
    model, _ = build_model(name)
    model.eval()
    im = np.random.default_rng(0).integers(0, 256, (32, 32, 3), dtype=np.uint8)
    for fn in (gradcam, gradcam_pp):
        for towards_ai in (True, False):
            cam = fn(model, im, towards_ai)
            assert cam.shape == (32, 32) and np.isfinite(cam).all() and (cam >= 0).all()


class _TopLeft(torch.nn.Module):
    """A 'detector' whose logit is the brightness of the top-left quadrant: the truth LIME and SHAP must find."""

    def __init__(self):
        super().__init__()
        self.w = torch.nn.Parameter(torch.ones(1))

    def forward(self, x):
        return self.w * 10 * x[:, :, :16, :16].mean((1, 2, 3))


@pytest.mark.parametrize("method", ["lime", "shap"])
def test_perturbation_methods_find_planted_evidence(method):
    im = np.random.default_rng(1).integers(0, 256, (32, 32, 3), dtype=np.uint8)
    im[:16, :16] = np.clip(im[:16, :16].astype(int) + 80, 0, 255)  # bright quadrant: above the mean-colour baseline
    attr, details = _perturbation(method, _TopLeft(), im, n_samples=200, n_segments=16, progress=False)
    assert attr.shape == (32, 32) and details["segments"] >= 8
    inside, outside = attr[:16, :16].mean(), attr[16:, 16:].mean()
    assert inside > 0 and inside > 5 * abs(outside), (inside, outside)


@pytest.mark.parametrize("method", ["lime", "shap"])
def test_perturbation_methods_are_reproducible_and_leave_global_rng_alone(det, method):
    im = det.preprocess(CIFAKE_SAMPLES[0]).transpose(1, 2, 0)
    torch.manual_seed(123)
    before = torch.rand(1)
    torch.manual_seed(123)
    a, _ = _perturbation(method, det.model, im, n_samples=60, n_segments=16, progress=False)
    after = torch.rand(1)
    b, _ = _perturbation(method, det.model, im, n_samples=60, n_segments=16, progress=False)
    assert np.array_equal(a, b) and torch.equal(before, after)


def test_detector_explain_all_methods_and_render(det, tmp_path):
    expls = det.explain(CIFAKE_SAMPLES[0], ["gradcam", "gradcampp", "lime", "shap", "spectrum"], n_samples=60)
    assert [e.method for e in expls] == ["gradcam", "gradcampp", "lime", "shap", "spectrum"]
    (pred,) = det.predict([CIFAKE_SAMPLES[0]])
    for e in expls:
        assert e.prob_ai == pred.prob_ai and e.verdict == pred.verdict  # the same verdict as predict
        assert np.isfinite(e.attribution).all() and e.seconds >= 0
        assert e.attribution.shape == (32, 32)
        png = render(e, tmp_path / f"{e.method}.png", det.reference_spectra())
        assert png.stat().st_size > 5000
    ref = det.reference_spectra()
    assert set(ref) == {"real", "ai", "difference"} and ref["real"].shape == (32, 32)


def test_spectrum_of_a_full_size_photo_stays_at_native_resolution(det):
    (e,) = det.explain(SAMPLES / "ai_diffusiondb_diffusion_000225.jpg", ["spectrum"])
    assert e.attribution.shape == (512, 512) and e.image.shape == (512, 512, 3)
    assert e.verdict == "uncertain"  # out of the 32-px model's domain


def test_spectrum_shows_a_planted_periodic_artifact():
    from synthcheck.inference.explain import spectrum

    rng = np.random.default_rng(0)
    base = rng.normal(128, 20, (64, 64, 1)).repeat(3, 2)
    yy, xx = np.mgrid[0:64, 0:64]
    checker = (((xx // 1) + (yy // 1)) % 2 * 2 - 1)[..., None] * 6.0  # period-2 pattern: upsampling-like artifact
    clean, artifact = spectrum(np.clip(base, 0, 255).astype(np.uint8)), spectrum(np.clip(base + checker, 0, 255).astype(np.uint8))
    corner = (0, 0)  # after fftshift, (0, 0) holds the (Nyquist, Nyquist) frequency of the checkerboard
    assert artifact[corner] > clean[corner] + 3


def test_explain_errors_are_clean(det):
    with pytest.raises(ImageError, match="empty"):
        det.explain(b"", ["gradcam"], name="empty.jpg")
    with pytest.raises(ValueError, match="unknown explanation"):
        det.explain(CIFAKE_SAMPLES[0], ["nope"])


def test_explain_cli(tmp_path):
    runner = CliRunner()
    bad = tmp_path / "bad.jpg"
    bad.write_text("<html>")
    r = runner.invoke(app, ["explain", str(CIFAKE_SAMPLES[0]), str(bad), "--method", "gradcam", "--method",
                            "spectrum", "--npy", "--out", str(tmp_path / "out")])
    assert r.exit_code == 1  # one input failed, the other was explained
    assert "bad.jpg" in r.output and "not a supported image" in r.output
    stem = CIFAKE_SAMPLES[0].stem
    for f in (f"{stem}.gradcam.png", f"{stem}.gradcam.npy", f"{stem}.spectrum.png"):
        assert (tmp_path / "out" / f).exists(), f
    assert np.load(tmp_path / "out" / f"{stem}.gradcam.npy").shape == (32, 32)

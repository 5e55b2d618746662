"""Attacks raise the loss, stay inside the epsilon ball and keep pixels in [0, 1]; damage does what it says."""

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from synthcheck import Detector
from synthcheck.analysis.robustness import fgsm, pgd
from synthcheck.data.preprocess import PreprocessSpec, load_image
from synthcheck.data.transforms import DAMAGE, blur, center_crop, jpeg, noise, rescale

from test_explain import CIFAKE_SAMPLES


@pytest.fixture(scope="module")
def batch():
    det = Detector.load("default")
    x = torch.from_numpy(np.stack([det.preprocess(f) for f in CIFAKE_SAMPLES])).float() / 255
    y = torch.tensor([1.0 if f.name.startswith("ai_") else 0.0 for f in CIFAKE_SAMPLES])
    return det.model, x, y


def _loss(model, x, y):
    with torch.no_grad():
        return F.binary_cross_entropy_with_logits(model(x), y).item()


@pytest.mark.parametrize("attack", ["fgsm", "pgd"])
@pytest.mark.parametrize("eps", [2 / 255, 8 / 255])
def test_attacks_raise_the_loss_within_epsilon(batch, attack, eps):
    model, x, y = batch
    adv = fgsm(model, x, y, eps) if attack == "fgsm" else pgd(model, x, y, eps, steps=5,
                                                               generator=torch.Generator().manual_seed(0))
    assert (adv - x).abs().max().item() <= eps + 1e-6
    assert adv.min().item() >= 0 and adv.max().item() <= 1
    assert _loss(model, adv, y) > _loss(model, x, y) + 0.05


def test_pgd_is_at_least_as_strong_as_fgsm(batch):
    model, x, y = batch
    eps = 4 / 255
    assert _loss(model, pgd(model, x, y, eps, steps=10, generator=torch.Generator().manual_seed(0)), y) >= \
        _loss(model, fgsm(model, x, y, eps), y) - 1e-6


def test_zero_epsilon_changes_nothing(batch):
    model, x, y = batch
    assert torch.equal(pgd(model, x, y, 0.0, steps=3), x)


def test_damage_functions():
    rng = np.random.default_rng(0)
    img = rng.integers(0, 256, (48, 64, 3), dtype=np.uint8)
    # stronger damage moves the image further from the original
    assert np.abs(jpeg(img, 30).astype(int) - img).mean() > np.abs(jpeg(img, 95).astype(int) - img).mean()
    assert np.abs(blur(img, 2.0).astype(int) - img).mean() > np.abs(blur(img, 0.5).astype(int) - img).mean()
    assert np.abs(rescale(img, 0.5).astype(int) - img).mean() > np.abs(rescale(img, 0.75).astype(int) - img).mean()
    assert abs(noise(img, 5.0, rng).astype(int) - img).std() > 2
    assert rescale(img, 0.5).shape == img.shape and center_crop(img, 0.5).shape == (24, 32, 3)
    # every damaged image still goes through the one preprocessing path to the model's size
    for fn, levels in DAMAGE.values():
        for level in levels:
            out = fn(img, level, rng)
            assert out.dtype == np.uint8 and load_image(out, PreprocessSpec(32)).shape == (3, 32, 32)

"""Attacks and everyday damage, for measuring (and training for) robustness.

Attacks work in pixel space [0, 1], before the model's own normalisation (the
`InputAdapter` inside every registry model), so epsilon means what users think:
8/255 is eight grey levels. Short own implementations: torchattacks and ART
assume a multi-class softmax output, while these models have one logit.

Damage is applied to decoded uint8 images before `preprocess.load_image` brings
them to the model's size, as it would happen to a file that was re-saved,
resized or blurred on its way to the user.
"""

from __future__ import annotations

import io

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image, ImageFilter


def _loss_grad(model, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    x = x.detach().requires_grad_(True)
    with torch.enable_grad():
        loss = F.binary_cross_entropy_with_logits(model(x).float(), y.float(), reduction="sum")
        (g,) = torch.autograd.grad(loss, x)
    return g


def fgsm(model, x: torch.Tensor, y: torch.Tensor, eps: float) -> torch.Tensor:
    """Fast gradient sign method (Goodfellow et al., 2015): one step of size eps up the loss of the true label.

    Untargeted, so fakes are pushed towards "real" and reals towards "AI" at once.
    """
    return (x + eps * _loss_grad(model, x, y).sign()).clamp(0, 1).detach()


def pgd(model, x: torch.Tensor, y: torch.Tensor, eps: float, steps: int = 10, step_size: float | None = None,
        random_start: bool = True, generator: torch.Generator | None = None) -> torch.Tensor:
    """Projected gradient descent in the L-inf ball (Madry et al., 2018), pixels kept in [0, 1]."""
    step_size = step_size if step_size is not None else 2.5 * eps / max(steps, 1)
    adv = x.clone()
    if random_start and eps > 0:
        noise = torch.rand(x.shape, generator=generator, device="cpu").to(x.device)
        adv = (adv + (noise * 2 - 1) * eps).clamp(0, 1)
    for _ in range(steps):
        adv = adv + step_size * _loss_grad(model, adv, y).sign()
        adv = torch.min(torch.max(adv, x - eps), x + eps).clamp(0, 1).detach()
    return adv


# --- everyday damage on uint8 HxWx3 images ------------------------------------------------------------

def jpeg(img: np.ndarray, quality: int) -> np.ndarray:
    buf = io.BytesIO()
    Image.fromarray(img).save(buf, format="JPEG", quality=int(quality))
    return np.asarray(Image.open(buf).convert("RGB"))


def rescale(img: np.ndarray, scale: float) -> np.ndarray:
    """Downscale by `scale` then back up to the original size (what a thumbnail pipeline does)."""
    h, w = img.shape[:2]
    small = Image.fromarray(img).resize((max(1, round(w * scale)), max(1, round(h * scale))), Image.BILINEAR)
    return np.asarray(small.resize((w, h), Image.BILINEAR))


def blur(img: np.ndarray, sigma: float) -> np.ndarray:
    return np.asarray(Image.fromarray(img).filter(ImageFilter.GaussianBlur(radius=sigma)))


def noise(img: np.ndarray, sigma: float, rng: np.random.Generator) -> np.ndarray:
    """Additive Gaussian noise, sigma in grey levels (0-255)."""
    return np.clip(img.astype(np.float64) + rng.normal(0, sigma, img.shape), 0, 255).round().astype(np.uint8)


def center_crop(img: np.ndarray, fraction: float) -> np.ndarray:
    """Keep the central `fraction` of each side (the model's preprocessing then fits it to its size)."""
    h, w = img.shape[:2]
    ch, cw = max(1, round(h * fraction)), max(1, round(w * fraction))
    top, left = (h - ch) // 2, (w - cw) // 2
    return np.ascontiguousarray(img[top:top + ch, left:left + cw])


# name -> (function of (img, level, rng), levels): the default damage grid of the robustness report
DAMAGE = {
    "jpeg": (lambda im, q, rng: jpeg(im, q), [95, 90, 75, 50, 30]),
    "resize": (lambda im, s, rng: rescale(im, s), [0.75, 0.5]),
    "blur": (lambda im, s, rng: blur(im, s), [0.5, 1.0, 2.0]),
    "noise": (lambda im, s, rng: noise(im, s, rng), [2.0, 5.0, 10.0]),
    "crop": (lambda im, f, rng: center_crop(im, f), [0.875, 0.75]),
}

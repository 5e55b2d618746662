"""Everyday damage on uint8 HxWx3 images (JPEG re-encoding, down-up resize, blur, noise, centre crop), as
images meet it when shared: one implementation for robust training (`augment`) and for the robustness
report (`analysis.robustness`), which measures a model under the same damage grid (`DAMAGE`)."""

from __future__ import annotations

import io

import numpy as np
from PIL import Image, ImageFilter

from .preprocess import fit_to_size


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


def apply_damage(images: np.ndarray, name: str, level, spec, rng: np.random.Generator) -> np.ndarray:
    """uint8 [N,3,S,S] -> the same images damaged by DAMAGE[name] at `level`, back through the shared
    preprocessing (so a resized image is refitted exactly as a served one would be).

    Tiled models' [N,T,3,S,S] inputs: each native tile is damaged as an image (the set stores tiles, not the
    full-size originals), then refitted at native resolution."""
    from .preprocess import PreprocessSpec, load_image

    if images.ndim == 5:
        n, t = images.shape[:2]
        flat = apply_damage(images.reshape(n * t, *images.shape[2:]), name, level,
                            PreprocessSpec(spec.image_size, "crop"), rng)
        return flat.reshape(images.shape)
    fn = DAMAGE[name][0]
    return np.stack([load_image(fn(im, level, rng), spec) for im in images.transpose(0, 2, 3, 1)])


def half_size(img: np.ndarray) -> np.ndarray:
    """Shared at half size (what a messaging app or a social feed does to a photo)."""
    h, w = img.shape[:2]
    return np.asarray(Image.fromarray(img).resize((max(1, w // 2), max(1, h // 2)), Image.LANCZOS))


def centre_crop(img: np.ndarray, side: int = 256) -> np.ndarray:
    """The centre side x side native pixels (the whole short side when smaller)."""
    return fit_to_size(img, min(side, *img.shape[:2]), "crop")


# The ways a user's copy of an image differs from the file a model trained on. The leave-sources-out study
# re-scores every left-out image under each (scripts/shortcut_study.py), and the photo model's uncertain band
# can be fitted on some of them too (`band_conditions` in a crossval config), so that "confident" holds on
# re-sized copies and not only on the files as they came.
CONDITIONS = {
    "as is": lambda a: a,
    "all re-encoded JPEG 90": lambda a: jpeg(a, 90),
    "all cut to 256 x 256": centre_crop,
    "JPEG 75 (social)": lambda a: jpeg(a, 75),
    "half size (social)": half_size,
}

"""Everyday damage on uint8 HxWx3 images (JPEG re-encoding, down-up resize, blur, noise, centre crop), as
images meet it when shared: one implementation for robust training (`augment`) and for the robustness
report (`analysis.robustness`), which measures a model under the same damage grid (`DAMAGE`); and the one
registry of copies a model is judged on (`CONDITIONS`: the everyday panel and the processing swap)."""

from __future__ import annotations

import io
from dataclasses import dataclass
from typing import Callable

import numpy as np
from PIL import Image, ImageFilter

from .preprocess import fit_to_size


def jpeg(img: np.ndarray, quality: int) -> np.ndarray:
    """Pillow's default JPEG save (4:2:0) at `quality`: the damage grid's and augmentation's re-encode."""
    return save_jpeg(img, quality, "4:2:0")


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


def save_jpeg(img: np.ndarray, quality: int = 92, subsampling: str = "4:2:0", qtables=None) -> np.ndarray:
    """Saved once by Pillow as JPEG (at `quality`, or with the given [luma, chroma] tables in natural order) and
    decoded again: what an editor, a phone's re-save or a platform does to a file."""
    buf = io.BytesIO()
    sub = {"4:4:4": 0, "4:2:2": 1, "4:2:0": 2}.get(subsampling, 2)
    if qtables is not None:
        Image.fromarray(img).save(buf, format="JPEG", qtables=[list(map(int, t)) for t in qtables], subsampling=sub)
    else:
        Image.fromarray(img).save(buf, format="JPEG", quality=int(quality), subsampling=sub)
    return np.asarray(Image.open(buf).convert("RGB"))


def webp(img: np.ndarray, quality: int = 80) -> np.ndarray:
    buf = io.BytesIO()
    Image.fromarray(img).save(buf, format="WEBP", quality=int(quality))
    return np.asarray(Image.open(buf).convert("RGB"))


@dataclass(frozen=True)
class SaveContext:
    """What a label-dependent condition may use: camera quantisation tables ((luma, chroma, subsampling), natural
    order) taken only from real photos the scoring model trained on, and a seed for choosing among them."""

    camera_tables: tuple = ()
    seed: int = 0


def swap_processing(img: np.ndarray, label: int, ctx: SaveContext | None = None, key: int = 0) -> np.ndarray:
    """The packs' processing, swapped between the classes: a real photo gets the AI crops' save (Pillow JPEG 92
    4:2:0), an AI image a camera-like save with tables drawn (seeded by `key`) from `ctx.camera_tables`. A model
    that learnt the save instead of the generator moves here; one that learnt pixels does not."""
    if label == 0:
        return save_jpeg(img, 92, "4:2:0")
    tables = (ctx or SaveContext()).camera_tables
    if not tables:
        raise ValueError("processing swap: no camera tables (from the scoring model's training real photos) to "
                         "save AI images with")
    luma, chroma, sub = tables[np.random.default_rng([(ctx.seed if ctx else 0), int(key)]).integers(len(tables))]
    return save_jpeg(img, qtables=[luma, chroma if chroma is not None else luma], subsampling=sub)


@dataclass(frozen=True)
class Condition:
    """One way a user's copy differs from the file a model trained on. `fn(img, label, ctx, key)`; most ignore
    the label; `panel`: one of the everyday saves applied to both classes alike (worst-of-panel figures)."""

    fn: Callable
    panel: bool = False
    label_dependent: bool = False

    def __call__(self, img: np.ndarray, label: int | None = None, ctx: SaveContext | None = None,
                 key: int = 0) -> np.ndarray:
        if self.label_dependent and label is None:
            raise ValueError("this copy depends on the label: pass the image's label (0 real, 1 AI)")
        return self.fn(img, label, ctx, key)


def _same(fn: Callable, panel: bool = False) -> Condition:
    return Condition(lambda a, label, ctx, key: fn(a), panel=panel)


_CROP_256 = _same(centre_crop).fn  # one function under two names, so a run listing both scores it once

# The ways a user's copy of an image differs from the file a model trained on: the one registry. Crossval re-scores
# every left-out image under the ones its config names (`band_conditions` are also fitted on, so "confident" holds
# on such copies; `report_conditions` are reported: the panel's worst and the processing swap are the yardstick
# recipes are chosen on), scripts/shortcut_study.py reaches them here, and `synthcheck robustness` reports the
# whole-image ones. The panel acts on both classes alike; "processing swapped" is the one that takes the label.
CONDITIONS = {
    "as is": _same(lambda a: a),
    "all re-encoded JPEG 90": _same(lambda a: jpeg(a, 90)),
    "all cut to 256 x 256": Condition(_CROP_256),  # the panel's "256-px crop" under its older name (scored once)
    "JPEG 75 (social)": _same(lambda a: jpeg(a, 75)),
    "half size (social)": _same(half_size),
    "JPEG 75 4:2:0": _same(lambda a: save_jpeg(a, 75), panel=True),
    "JPEG 92 4:2:0": _same(lambda a: save_jpeg(a, 92), panel=True),
    "half size then JPEG 85": _same(lambda a: save_jpeg(half_size(a), 85), panel=True),
    "WebP 80": _same(lambda a: webp(a, 80), panel=True),
    "256-px crop": Condition(_CROP_256, panel=True),
    "processing swapped": Condition(swap_processing, label_dependent=True),
}
PANEL = [name for name, c in CONDITIONS.items() if c.panel]
SWAP = "processing swapped"

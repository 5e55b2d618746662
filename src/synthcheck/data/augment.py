"""Batched augmentation on uint8 -> float tensors, on whatever device the data lives on.

Written as whole-batch tensor ops (one random draw per image, no Python loop per
image) so the GPU fast path never leaves the device; the same code runs on CPU.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import torch
import torch.nn.functional as F


@dataclass
class AugmentConfig:
    flip: bool = True
    shift: int = 2           # max translation in pixels (reflect-padded crop); 0 = off
    rotate: float = 0.0      # max degrees; resamples pixels, so off by default for artifact detection
    zoom: float = 0.0        # max relative scale change, e.g. 0.1 = 0.9..1.1; off by default
    # robustness (CNNDetection-style damage, each applied to an image with this probability; 0 = off)
    blur: float = 0.0        # Gaussian blur, sigma ~ U(blur_sigma) (smaller sigmas barely change a pixel)
    jpeg: float = 0.0        # JPEG re-encoding, quality ~ U(jpeg_quality)
    rescale: float = 0.0     # downscale by ~ U(0.5, 0.9) and back up (bilinear)
    downscale: float = 0.0   # random native crops only: the crop is taken larger and downscaled by ~ U(0.5, 1)
                             # (antialiased), as social media shrink photos; the image stays at that size
    jpeg_quality: tuple = (30, 95)
    blur_sigma: tuple = (0.5, 2.0)
    # against the save shortcut (issue "Learn the generator, not the file"), both off by default:
    process: float = 0.0         # either label: one shared random save of the crop (JPEG q 60-98 at 4:2:0 or
                                 # 4:4:4, a third of the time saved twice; or WebP q 60-95), so no save marks a class
    pack_save_real: float = 0.0  # a real photo's stored image gets the AI packs' save (Pillow JPEG 92 4:2:0) before
                                 # it is cropped, so that save stops predicting "AI"

    def to_dict(self):
        return asdict(self)


def augment(x: torch.Tensor, cfg: AugmentConfig, generator: torch.Generator | None = None) -> torch.Tensor:
    """x: float [N,C,H,W] in [0,1] -> augmented copy."""
    n, _, h, w = x.shape
    dev = x.device

    def rand(*shape):
        return torch.rand(*shape, generator=generator, device="cpu").to(dev)

    if cfg.process > 0:
        x = _process(x, cfg.process, rand)

    if cfg.flip:
        mask = rand(n) < 0.5
        x = torch.where(mask.view(n, 1, 1, 1), x.flip(3), x)
    if cfg.shift > 0:
        s = cfg.shift
        padded = F.pad(x, (s, s, s, s), mode="reflect")
        dx = (rand(n) * (2 * s + 1)).long().clamp_max(2 * s)
        dy = (rand(n) * (2 * s + 1)).long().clamp_max(2 * s)
        rows = (dy.view(n, 1) + torch.arange(h, device=dev).view(1, h))          # [N,H]
        cols = (dx.view(n, 1) + torch.arange(w, device=dev).view(1, w))          # [N,W]
        idx_r = rows.view(n, 1, h, 1).expand(n, x.shape[1], h, padded.shape[3])
        x = padded.gather(2, idx_r)
        idx_c = cols.view(n, 1, 1, w).expand(n, x.shape[1], h, w)
        x = x.gather(3, idx_c)
    if cfg.rotate > 0 or cfg.zoom > 0:
        ang = (rand(n) * 2 - 1) * math.radians(cfg.rotate)
        scale = 1 + (rand(n) * 2 - 1) * cfg.zoom
        cos, sin = torch.cos(ang) / scale, torch.sin(ang) / scale
        theta = torch.stack([torch.stack([cos, -sin, torch.zeros_like(cos)], 1),
                             torch.stack([sin, cos, torch.zeros_like(cos)], 1)], 1)
        grid = F.affine_grid(theta, list(x.shape), align_corners=False)
        x = F.grid_sample(x, grid, mode="bilinear", padding_mode="reflection", align_corners=False)
    if cfg.blur > 0 or cfg.jpeg > 0 or cfg.rescale > 0:
        x = _damage(x, cfg, rand)
    return x


def _damage(x: torch.Tensor, cfg: AugmentConfig, rand) -> torch.Tensor:
    """Random blur / down-up resize / JPEG per image, as images meet them when shared (robust training).

    A loop over the chosen images: sigma, scale and quality differ per image, and
    JPEG goes through the same Pillow codec as the robustness report's damage
    (`transforms.jpeg`); the cost shows only when these switches are on.
    """
    from torchvision.transforms.v2.functional import gaussian_blur

    from .transforms import jpeg

    n, _, h, w = x.shape
    x = x.clone()
    pick_blur, pick_rescale, pick_jpeg = rand(n) < cfg.blur, rand(n) < cfg.rescale, rand(n) < cfg.jpeg
    (s0, s1), (q0, q1) = cfg.blur_sigma, cfg.jpeg_quality
    sigmas, scales, qualities = s0 + (s1 - s0) * rand(n), 0.5 + 0.4 * rand(n), (q0 + (q1 - q0) * rand(n)).round()
    for i in torch.nonzero(pick_blur).flatten().tolist():
        s = float(sigmas[i])
        k = 2 * math.ceil(3 * s) + 1
        x[i] = gaussian_blur(x[i], [k, k], [s, s])
    for i in torch.nonzero(pick_rescale).flatten().tolist():
        sh, sw = max(1, round(h * float(scales[i]))), max(1, round(w * float(scales[i])))
        small = F.interpolate(x[i:i + 1], size=(sh, sw), mode="bilinear", align_corners=False, antialias=True)
        x[i] = F.interpolate(small, size=(h, w), mode="bilinear", align_corners=False)[0]
    idx = torch.nonzero(pick_jpeg).flatten().tolist()
    if idx:
        u8 = (x[idx].clamp(0, 1) * 255).round().to(torch.uint8).permute(0, 2, 3, 1).cpu().numpy()
        for j, i in enumerate(idx):
            x[i] = torch.from_numpy(jpeg(u8[j], int(qualities[i])).copy()).permute(2, 0, 1).to(x.device).float() / 255
    return x.clamp(0, 1)


def _process(x: torch.Tensor, p: float, rand) -> torch.Tensor:
    """One draw per image from a processing distribution shared by both labels (Pillow, as users' tools save)."""
    from .transforms import save_jpeg, webp

    n = x.shape[0]
    pick, kind, q, q2, sub = rand(n) < p, rand(n), 60 + 39 * rand(n), 60 + 39 * rand(n), rand(n) < 0.5  # q 60-98
    idx = torch.nonzero(pick).flatten().tolist()
    if not idx:
        return x
    x = x.clone()
    u8 = (x[idx].clamp(0, 1) * 255).round().to(torch.uint8).permute(0, 2, 3, 1).cpu().numpy()
    for j, i in enumerate(idx):
        im, k = u8[j], float(kind[i])
        if k < 0.25:
            im = webp(im, int(60 + 36 * (float(q[i]) - 60) / 39))  # q 60-95
        else:
            im = save_jpeg(im, int(q[i]), "4:2:0" if bool(sub[i]) else "4:4:4")
            if k > 0.75:  # saved again, as a re-shared file is
                im = save_jpeg(im, int(q2[i]), "4:2:0")
        x[i] = torch.from_numpy(im.copy()).permute(2, 0, 1).to(x.device).float() / 255
    return x


def random_crops(images: torch.Tensor, sizes: torch.Tensor, crop: int, downscale: float = 0.0,
                 generator: torch.Generator | None = None, labels: torch.Tensor | None = None,
                 pack_save_real: float = 0.0) -> torch.Tensor:
    """One random native-resolution crop per image of a `native` store -> float [N,3,crop,crop] in [0,1].

    images: uint8 [N,3,S,S] with each image's pixels in its top-left min(size, S) corner; sizes: [N,2]
    decoded (height, width). With probability `downscale` a crop up to 2x larger (as the image allows) is
    shrunk to `crop` with antialiasing, as a photo shared at half size. A region smaller than the crop
    (tiny images only) is brought up to it, as inference tiles bring up images smaller than a tile. With
    `labels`, a real image's whole stored region gets the packs' save first with probability `pack_save_real`.
    """
    n, _, s, _ = images.shape
    u = torch.rand(n, 4, generator=generator)
    # drawn only when used, so recipes without it keep their random stream (and their figures) exactly
    save = torch.rand(n, generator=generator) < pack_save_real if pack_save_real > 0 and labels is not None else None
    out = torch.empty((n, 3, crop, crop), dtype=torch.float32, device=images.device)
    for i in range(n):
        vh, vw = min(int(sizes[i, 0]), s), min(int(sizes[i, 1]), s)
        src = images[i:i + 1]
        if save is not None and bool(save[i]) and int(labels[i]) == 0:
            from .transforms import save_jpeg

            region = src[0, :, :vh, :vw].permute(1, 2, 0).cpu().numpy()
            src = torch.from_numpy(save_jpeg(region, 92, "4:2:0").copy()).permute(2, 0, 1)[None].to(images.device)
        r = crop
        if downscale > 0 and u[i, 3] < downscale:
            r = min(int(round(crop / (0.5 + 0.5 * float(u[i, 2])))), vh, vw)
        r = max(1, min(r, vh, vw)) if min(vh, vw) >= crop else min(vh, vw)
        top = int(u[i, 0] * (vh - r + 1))
        left = int(u[i, 1] * (vw - r + 1))
        patch = src[:, :, top:top + r, left:left + r].float().div_(255)
        if r != crop:
            patch = F.interpolate(patch, size=(crop, crop), mode="bilinear", align_corners=False, antialias=r > crop)
        out[i] = patch[0]
    return out

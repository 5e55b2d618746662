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

    def to_dict(self):
        return asdict(self)


def augment(x: torch.Tensor, cfg: AugmentConfig, generator: torch.Generator | None = None) -> torch.Tensor:
    """x: float [N,C,H,W] in [0,1] -> augmented copy."""
    n, _, h, w = x.shape
    dev = x.device

    def rand(*shape):
        return torch.rand(*shape, generator=generator, device="cpu").to(dev)

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
    return x

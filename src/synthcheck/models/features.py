"""The image features the generator-attribution head reads, taken from the forward pass that scores the image.

Why not only the input of the last Linear (what v1 of the head read): that vector is what the real-vs-AI
logit is made of, squeezed towards one direction, and carries little of *which* generator. The channel means
of earlier stages keep colour, texture and upsampling statistics, which differ between generator families
(open-set rejection and top-1 both rose, measured in docs/guides/attribution.md). The stage list was fixed
before that measurement: the ends of MobileNetV2's stages after the stem (strides 4, 8, 16 twice, 32) and
its final 1280-channel conv, whose channel mean is the old vector itself.

Per tile: the concatenated channel means of those stages' outputs. Per image (`aggregate`): the mean and the
standard deviation over its tiles (how much the traces vary across the picture); a single image has std 0.
Networks without a stage list give the last Linear's input instead. Hooks read the values, so every backend
(PyTorch here, ONNX Runtime and OpenVINO through the exported graph, which carries them as its second output)
gives the same vector.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

from ..data.preprocess import identical_tiles

FEATURES = "stage-means+tile-std/v2"  # stored with the head and the ONNX graph: a head reads only its own kind


class FeatureTap:
    """Forward hooks that keep each call's per-image feature vector ([N, D], float32, on the CPU unless
    `keep_device`): call `take()` after a forward for that call's vectors, `calls` for all calls in order."""

    def __init__(self, model: nn.Module, keep_device: bool = False):
        from .registry import last_linear

        self.parts: list[torch.Tensor] = []
        self.calls: list[torch.Tensor] = []
        self.keep_device = keep_device
        layers = list(getattr(model, "stage_layers", ()) or ())
        if layers:
            self.handles = [model.get_submodule(name).register_forward_hook(self._stage) for name in layers]
        else:
            self.handles = [last_linear(model).register_forward_pre_hook(self._linear_input)]
        # fires after every inner hook of the call: closes it
        self.handles.append(model.register_forward_hook(self._close))

    def _keep(self, t: torch.Tensor) -> torch.Tensor:
        t = t.float()
        return t if self.keep_device else t.detach().cpu()

    def _stage(self, _m, _inp, out):
        self.parts.append(self._keep(out.mean((2, 3))))

    def _linear_input(self, _m, inp):
        self.parts.append(self._keep(inp[0]))

    def _close(self, _m, _inp, _out):
        if self.parts:
            self.calls.append(torch.cat(self.parts, 1))
        self.parts = []

    def take(self) -> torch.Tensor:
        """The last call's vectors (and forget every call)."""
        last = self.calls[-1]
        self.calls = []
        return last

    def remove(self):
        for h in self.handles:
            h.remove()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.remove()


def aggregate(flat_feats: np.ndarray, images: np.ndarray) -> np.ndarray:
    """Per-tile vectors of the tiles `scoring.tile_mean` scored (each distinct tile once, image by image) -> per
    image [mean over tiles, std over tiles]. Non-tiled images ([N, 3, S, S]): [vector, zeros]."""
    flat_feats = np.asarray(flat_feats, np.float32)
    if images.ndim != 5:
        return np.concatenate([flat_feats, np.zeros_like(flat_feats)], 1)
    n, t = images.shape[:2]
    if n == 0:
        return np.zeros((0, 2 * (flat_feats.shape[1] if flat_feats.ndim == 2 else 0)), np.float32)
    same = identical_tiles(images)
    parts = np.split(flat_feats, np.cumsum(np.where(same, 1, t))[:-1])
    return np.stack([np.concatenate([p.mean(0), p.std(0)]) for p in parts]).astype(np.float32)

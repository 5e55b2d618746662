"""Model registry: every detector maps uint8-derived pixels in [0, 1] to one logit (P(AI) = sigmoid).

Each network is `Classifier(adapter, backbone)`: the adapter resizes to what the
backbone expects and normalises, so attacks, explanations and ONNX export all
work in plain pixel space and the normalisation travels with the weights.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
CIFAKE_MEAN = (0.47, 0.46, 0.42)  # measured on the CIFAKE train split (both classes)
CIFAKE_STD = (0.24, 0.23, 0.25)


class InputAdapter(nn.Module):
    def __init__(self, mean, std, input_size: int | None = None):
        super().__init__()
        self.register_buffer("mean", torch.tensor(mean, dtype=torch.float32).view(1, 3, 1, 1))
        self.register_buffer("std", torch.tensor(std, dtype=torch.float32).view(1, 3, 1, 1))
        self.input_size = input_size

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.input_size is not None and x.shape[-1] != self.input_size:
            x = F.interpolate(x, size=(self.input_size, self.input_size), mode="bilinear", align_corners=False)
        return (x - self.mean) / self.std


class Classifier(nn.Module):
    """adapter -> backbone -> one logit per image (shape [N])."""

    def __init__(self, adapter: InputAdapter, backbone: nn.Module, target_layer: str, stage_layers: tuple = ()):
        super().__init__()
        self.adapter = adapter
        self.backbone = backbone
        self.target_layer = target_layer  # dotted name of the last conv stage, for Grad-CAM
        self.stage_layers = tuple(stage_layers)  # stage ends whose channel means the attribution head reads
        self.tile_rule = "logit"  # how a tiled image's tile scores become one (`combine_tiles`); stored in the arch

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.backbone(self.adapter(x)).reshape(-1)

    def get_target_layer(self) -> nn.Module:
        return self.get_submodule(self.target_layer)


# --- our own networks -------------------------------------------------------------------------

class SeedCNN(nn.Module):
    """The seeds' Keras-style CIFAKE CNN: two Conv+MaxPool blocks, Flatten, Dense, Dropout, one logit."""

    def __init__(self, image_size: int = 32):
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(3, 32, 3), nn.ReLU(inplace=True), nn.MaxPool2d(2),
            nn.Conv2d(32, 32, 3), nn.ReLU(inplace=True), nn.MaxPool2d(2),
        )
        side = ((image_size - 2) // 2 - 2) // 2
        self.head = nn.Sequential(
            nn.Flatten(), nn.Linear(32 * side * side, 64), nn.ReLU(inplace=True), nn.Dropout(0.5), nn.Linear(64, 1),
        )

    def forward(self, x):
        return self.head(self.features(x))


def _conv_bn(cin, cout, stride=1):
    return nn.Sequential(nn.Conv2d(cin, cout, 3, stride, 1, bias=False), nn.BatchNorm2d(cout), nn.GELU())


class FastNet(nn.Module):
    """Native-resolution net for small images (the default model).

    A full-resolution stem keeps the pixel-level evidence (generator artifacts live
    in the highest frequencies), then three stride-2 stages of two 3x3 convs each.
    Global average + max pooling makes it size-agnostic. Width trades accuracy for
    CPU throughput (training-step figures per width in BENCHMARKS.md; a measured
    accuracy/throughput frontier is the speed issue's job).
    """

    def __init__(self, width: int = 32):
        super().__init__()
        w = width
        self.stem = _conv_bn(3, w)
        self.stage1 = nn.Sequential(_conv_bn(w, 2 * w, 2), _conv_bn(2 * w, 2 * w))
        self.stage2 = nn.Sequential(_conv_bn(2 * w, 4 * w, 2), _conv_bn(4 * w, 4 * w))
        self.stage3 = nn.Sequential(_conv_bn(4 * w, 8 * w, 2), _conv_bn(8 * w, 8 * w))
        self.head = nn.Linear(16 * w, 1)

    def forward(self, x):
        x = self.stage3(self.stage2(self.stage1(self.stem(x))))
        pooled = torch.cat([x.mean((2, 3)), x.amax((2, 3))], dim=1)
        return self.head(pooled)


# --- registry ---------------------------------------------------------------------------------

@dataclass(frozen=True)
class ModelInfo:
    name: str
    summary: str
    build: Callable[[bool], tuple[nn.Module, str]]  # pretrained -> (backbone, target layer)
    pretrained_input: int | None  # input size the ImageNet weights expect
    supports_imagenet: bool
    stages: tuple[str, ...] = ()  # attribution features (models/features.py); none: the last Linear's input


def _tv(arch: str, head: Callable[[nn.Module], None], target: str):
    def build(pretrained: bool):
        import torchvision

        weights = "IMAGENET1K_V1" if pretrained else None
        try:
            net = getattr(torchvision.models, arch)(weights=weights)
        except (OSError, RuntimeError) as e:  # urllib's URLError is an OSError; a truncated file a RuntimeError
            if not pretrained:
                raise
            raise FileNotFoundError(pretrained_weights_hint(arch, e)) from None
        head(net)
        return net, target
    return build


def pretrained_weights_hint(arch: str, error: Exception) -> str:
    """One line instead of urllib's traceback: which file, where torchvision looks, what to do."""
    import torch
    import torchvision

    w = torchvision.models.get_model_weights(arch).IMAGENET1K_V1
    file = w.url.rsplit("/", 1)[-1]
    where = Path(torch.hub.get_dir()) / "checkpoints" / file
    return (f"could not get {arch}'s ImageNet weights ({type(error).__name__}: {str(error)[:80]}): put {file} "
            f"(from {w.url}) at {where} ($TORCH_HOME/hub/checkpoints/), or train without --weights imagenet")


def _replace_fc(net):
    net.fc = nn.Linear(net.fc.in_features, 1)


def _replace_last_classifier(net):
    last = net.classifier[-1]
    net.classifier[-1] = nn.Linear(last.in_features, 1)


REGISTRY: dict[str, ModelInfo] = {}


def register(info: ModelInfo):
    REGISTRY[info.name] = info


register(ModelInfo("fastnet", "SynthCheck's native-32px net (default): full-res stem + 3 stride-2 stages, ~1.2M params",
                   lambda p: (FastNet(32), "backbone.stage3"), None, False))
register(ModelInfo("fastnet_s", "narrower fastnet (width 16), ~0.3M params, for fastest CPU scoring",
                   lambda p: (FastNet(16), "backbone.stage3"), None, False))
register(ModelInfo("cnn", "the seeds' CNN: 2x(Conv32+MaxPool), Dense64, Dropout0.5",
                   lambda p: (SeedCNN(32), "backbone.features.3"), None, False))
register(ModelInfo("resnet18", "torchvision ResNet-18, one-logit head", _tv("resnet18", _replace_fc, "backbone.layer4"), 224, True))
register(ModelInfo("resnet50", "torchvision ResNet-50, one-logit head", _tv("resnet50", _replace_fc, "backbone.layer4"), 224, True))
register(ModelInfo("vgg16", "torchvision VGG-16, one-logit head", _tv("vgg16", _replace_last_classifier, "backbone.features.29"), 224, True))
register(ModelInfo("efficientnet_b0", "torchvision EfficientNet-B0, one-logit head",
                   _tv("efficientnet_b0", _replace_last_classifier, "backbone.features.8"), 224, True))
register(ModelInfo("mobilenet_v2", "torchvision MobileNetV2, one-logit head",
                   _tv("mobilenet_v2", _replace_last_classifier, "backbone.features.18"), 224, True,
                   tuple(f"backbone.features.{i}" for i in (3, 6, 10, 13, 16, 18))))


TILE_RULES = ("logit", "probability")


def combine_tiles(z, rule: str = "logit"):
    """Tile logits [..., T] -> one logit per image. "logit": their mean (every bundled model). "probability": the
    logit of the mean tile probability, where one tile at -12 no longer outvotes three at +3; nested choice on
    stored tile logits picked it (scripts/tile_aggregation.py), but trained and calibrated with it the photo v3
    recipe ranked level with the mean (docs/studies/photo-v3.md), so it stays an option. Works on numpy arrays
    and (differentiably) tensors."""
    if rule == "logit":
        return z.mean(-1)
    if rule != "probability":
        raise ValueError(f"unknown tile rule {rule!r}; known: {', '.join(TILE_RULES)}")
    if isinstance(z, torch.Tensor):
        return torch.logit(torch.sigmoid(z.float()).mean(-1), eps=1e-6)
    p = np.clip((1 / (1 + np.exp(-np.clip(z.astype(np.float64), -60, 60)))).mean(-1), 1e-6, 1 - 1e-6)
    return np.log(p / (1 - p)).astype(np.float32)


def build_model(name: str, weights: str | None = None, input_size: int | None = None,
                tile_rule: str = "logit") -> tuple[Classifier, dict]:
    """Build a registry model; returns the network and the architecture config to store with it.

    `weights="imagenet"` loads torchvision's ImageNet weights (cached under
    $TORCH_HOME/hub/checkpoints, downloaded only if missing) and resizes inputs to
    the size the backbone was trained at, unless `input_size` says otherwise.
    """
    if name not in REGISTRY:
        raise KeyError(f"unknown model {name!r}; known: {', '.join(REGISTRY)}")
    info = REGISTRY[name]
    pretrained = weights == "imagenet"
    if weights not in (None, "none", "imagenet"):
        raise ValueError(f"unknown weights {weights!r}: use 'imagenet' or none")
    if pretrained and not info.supports_imagenet:
        raise ValueError(f"model {name!r} has no ImageNet weights")
    backbone, target = info.build(pretrained)
    if pretrained:
        mean, std = IMAGENET_MEAN, IMAGENET_STD
        input_size = input_size or info.pretrained_input
    else:
        mean, std = (IMAGENET_MEAN, IMAGENET_STD) if info.supports_imagenet else (CIFAKE_MEAN, CIFAKE_STD)
    model = Classifier(InputAdapter(mean, std, input_size), backbone, target, info.stages)
    if tile_rule not in TILE_RULES:
        raise ValueError(f"unknown tile rule {tile_rule!r}; known: {', '.join(TILE_RULES)}")
    model.tile_rule = tile_rule
    arch = {"name": name, "weights": "imagenet" if pretrained else None, "input_size": input_size}
    if tile_rule != "logit":  # older models stay byte-identical in their config
        arch["tile_rule"] = tile_rule
    return model, arch


def model_from_arch(arch: dict) -> Classifier:
    """Rebuild an empty network from a stored architecture config (weights are loaded after)."""
    model, _ = build_model(arch["name"], None, arch.get("input_size"), arch.get("tile_rule", "logit"))
    if arch.get("weights") == "imagenet":  # same normalisation as at training time, no download
        model.adapter.mean.copy_(torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1))
        model.adapter.std.copy_(torch.tensor(IMAGENET_STD).view(1, 3, 1, 1))
    return model


def fold_batchnorm(model: nn.Module) -> nn.Module:
    """Fold each eval-mode BatchNorm that directly follows a Conv2d into the conv's weights (in place).

    Same function to ~1e-5 in the logit, ~18% faster CPU scoring for the default model (BENCHMARKS.md);
    layer names are kept (the BatchNorm becomes Identity), so Grad-CAM targets still resolve.
    torch's own fusion utility does the arithmetic.
    """
    from torch.nn.utils.fusion import fuse_conv_bn_eval

    model.eval()
    for mod in model.modules():
        if isinstance(mod, nn.Sequential):
            for i in range(len(mod) - 1):
                conv, bn = mod[i], mod[i + 1]
                if isinstance(conv, nn.Conv2d) and isinstance(bn, nn.BatchNorm2d) and bn.track_running_stats:
                    mod[i] = fuse_conv_bn_eval(conv, bn)
                    mod[i + 1] = nn.Identity()
    return model


def last_linear(model: nn.Module) -> nn.Linear:
    """The one-logit head (the last Linear layer): what a linear probe trains and where features are read."""
    return [m for m in model.modules() if isinstance(m, nn.Linear)][-1]


def count_parameters(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())

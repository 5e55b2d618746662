"""The training recipe (`TrainConfig`, read from TOML (`read_toml`) and flags) and how a model trained by it sees
images: `model_spec`, and `as_tiles` for scoring a native store as inference will."""

from __future__ import annotations

import tomllib
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from ..data.augment import AugmentConfig
from ..data.folders import ImageSet
from ..data.preprocess import PreprocessSpec


def read_toml(path: str | Path, _seen: tuple = ()) -> dict:
    """A TOML config; `base = "other.toml"` (relative to it) starts from that file's tables, this one's keys
    overriding key by key, so a recipe that differs in one option does not copy the pool and its families."""
    path = Path(path)
    if path.resolve() in _seen:
        raise ValueError(f"{path}: its base configs lead back to it ({' -> '.join(str(p) for p in _seen)})")
    raw = tomllib.loads(path.read_text())
    base = raw.pop("base", None)
    return _merged(read_toml(path.parent / base, _seen + (path.resolve(),)), raw) if base else raw


def _merged(base: dict, over: dict) -> dict:
    out = dict(base)
    for k, v in over.items():
        out[k] = _merged(out[k], v) if isinstance(v, dict) and isinstance(out.get(k), dict) else v
    return out


@dataclass
class TrainConfig:
    model: str = "fastnet"
    weights: str | None = None          # "imagenet" for torchvision backbones
    input_size: int | None = None       # resize inside the model (default: what the backbone expects)
    image_size: int = 32                # stored/decoded size
    resize_policy: str = "resize"
    epochs: int = 12
    batch_size: int = 256
    lr: float = 2e-3
    weight_decay: float = 0.05
    optimizer: str = "adamw"            # adamw | sgd
    schedule: str = "onecycle"          # onecycle | cosine | constant
    patience: int = 4                   # early stopping on validation loss
    val_fraction: float = 0.05
    test_fraction: float = 0.0          # hold out a seeded test part when no test data is given
    tiles: int = 1                      # resize_policy "tiles": n x n native crops per image (training draws one)
    crop: int | None = None             # with resize_policy "native": train on one random native crop of this size
                                        # per image per step; the model then scores `tiles` x `tiles` grids of it
    tile_rule: str = "logit"            # how tile scores combine (models.registry.combine_tiles): logit | probability
    freeze_backbone: bool = False       # train only the last linear layer (a linear probe on frozen features)
    seed: int = 0
    augment: AugmentConfig = field(default_factory=AugmentConfig)
    device: str = "auto"
    amp: bool = True                    # bf16 autocast on CUDA
    cpu_amp: bool = False               # bf16 autocast for training steps on CPU too (needs AVX512-BF16/AMX to pay)
    channels_last: bool = True          # CUDA; on CPU too for inputs of 96 px and more (MobileNetV2 at 128 px:
                                        # 63 vs 49 img/s per training step on 2 cores; small inputs gain nothing)
    compile: bool = False
    max_steps_per_epoch: int | None = None  # for smoke tests
    limit_train: int | None = None      # use a stratified subset of this many training images
    adv_eps: float = 0.0                # PGD adversarial training: L-inf radius in grey levels (/255); 0 = off
    adv_steps: int = 3                  # PGD steps per training batch
    max_fpr: float | None = None        # threshold for a target false-positive rate instead of EER
    uncertain_band: float = 0.1         # |P(AI) - threshold| below this -> verdict "uncertain"
    exclude_duplicates: bool = True
    workers: int | None = None

    @classmethod
    def from_dict(cls, d: dict) -> "TrainConfig":
        d = dict(d)
        if isinstance(d.get("augment"), dict):
            d["augment"] = AugmentConfig(**d["augment"])
        known = {f for f in cls.__dataclass_fields__}
        unknown = set(d) - known
        if unknown:
            raise ValueError(f"unknown training options: {sorted(unknown)}")
        return cls(**d)

    def to_dict(self) -> dict:
        return asdict(self)


def model_spec(cfg: TrainConfig) -> PreprocessSpec:
    """How the trained model sees images: its training store's spec, or for random-crop training a tile grid
    of crops of the same size (native pixels either way)."""
    if cfg.crop:
        if cfg.resize_policy != "native":
            raise ValueError("crop (random native crops) needs resize_policy 'native'")
        return PreprocessSpec(cfg.crop, "tiles", tiles=cfg.tiles)
    return PreprocessSpec(cfg.image_size, cfg.resize_policy, tiles=cfg.tiles)


def as_tiles(s: ImageSet, spec: PreprocessSpec) -> ImageSet:
    """A `native` store -> the tile grids inference takes of the same images (identical for images no larger
    than the store, which keeps their whole picture)."""
    from ..data.preprocess import fit

    if not len(s):
        from ..data.folders import empty_imageset
        return empty_imageset(s.source, spec)
    import dataclasses

    side = s.images.shape[-1]
    tiles = np.stack([fit(img[:, :min(h, side), :min(w, side)].transpose(1, 2, 0), spec)
                      for img, (h, w) in zip(s.images, s.sizes)])
    return dataclasses.replace(s, images=tiles, spec=spec)

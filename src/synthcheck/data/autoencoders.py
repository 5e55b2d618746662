"""Tiny latent-diffusion autoencoders (TAESD, TAEF1, TAEF2): a real photo's round trip through one of them
carries a latent-diffusion decoder's pixel traces and nothing else new, which is what `synthcheck pairs` uses.

The architecture is written here from its published description (madebyollin/taesd; layer order in
`../shared/weights/README.md`) so that the weight files are plain state dicts matched key for key and
shape for shape, never unpickled code. The three families share one layout; TAEF2 adds a residual
"pool" branch (1x1 conv 64->256, GroupNorm, ReLU, 1x1 conv 256->64) to its low-resolution blocks.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

WIDTH = 64


@dataclass(frozen=True)
class Family:
    name: str
    latent_channels: int
    mid: bool            # TAEF2's pool branch in the blocks next to the latent
    files: tuple[str, str]  # encoder, decoder file names as published
    url: str             # where real users' copies come from (never fetched by tests or the default path)
    what: str


_REPO = "https://github.com/madebyollin/taesd/raw/main/"
FAMILIES = {
    "taesd": Family("taesd", 4, False, ("taesd_encoder.safetensors", "taesd_decoder.safetensors"), _REPO,
                    "Stable Diffusion 1.x/2.x VAE"),
    "taef1": Family("taef1", 16, False, ("taef1_encoder.safetensors", "taef1_decoder.safetensors"), _REPO,
                    "FLUX.1 VAE"),
    "taef2": Family("taef2", 32, True, ("taef2_encoder.pth", "taef2_decoder.pth"), _REPO, "FLUX.2 VAE"),
}


def _conv(n_in: int, n_out: int, stride: int = 1, bias: bool = True) -> nn.Conv2d:
    return nn.Conv2d(n_in, n_out, 3, stride=stride, padding=1, bias=bias)


class Block(nn.Module):
    """Three 3x3 convs with ReLUs between, a 1x1 skip when widths differ, ReLU after the sum; with `mid`,
    a residual pool branch is added to the input first."""

    def __init__(self, n_in: int = WIDTH, n_out: int = WIDTH, mid: bool = False):
        super().__init__()
        if mid:
            self.pool = nn.Sequential(nn.Conv2d(n_in, 4 * n_in, 1, bias=False), nn.GroupNorm(4, 4 * n_in), nn.ReLU(),
                                      nn.Conv2d(4 * n_in, n_in, 1, bias=False))
        self.conv = nn.Sequential(_conv(n_in, n_out), nn.ReLU(), _conv(n_out, n_out), nn.ReLU(), _conv(n_out, n_out))
        self.skip = nn.Conv2d(n_in, n_out, 1, bias=False) if n_in != n_out else nn.Identity()

    def forward(self, x):
        if hasattr(self, "pool"):
            x = x + self.pool(x)
        return torch.relu(self.conv(x) + self.skip(x))


class Clamp(nn.Module):
    """Soft clamp of the latent to (-3, 3), as the decoders were trained with."""

    def forward(self, x):
        return torch.tanh(x / 3) * 3


def build_encoder(latent_channels: int, mid: bool) -> nn.Sequential:
    layers: list[nn.Module] = [_conv(3, WIDTH), Block()]
    for stage in range(3):
        layers += [_conv(WIDTH, WIDTH, stride=2, bias=False)]
        layers += [Block(mid=mid and stage == 2) for _ in range(3)]
    layers += [_conv(WIDTH, latent_channels)]
    return nn.Sequential(*layers)


def build_decoder(latent_channels: int, mid: bool) -> nn.Sequential:
    layers: list[nn.Module] = [Clamp(), _conv(latent_channels, WIDTH), nn.ReLU()]
    for stage in range(3):
        layers += [Block(mid=mid and stage == 0) for _ in range(3)]
        layers += [nn.Upsample(scale_factor=2), _conv(WIDTH, WIDTH, bias=False)]
    layers += [Block(), _conv(WIDTH, 3)]
    return nn.Sequential(*layers)


class TinyAutoencoder(nn.Module):
    """RGB in [0, 1] (sides multiples of 8) -> latent at 1/8 resolution -> RGB in [0, 1]."""

    def __init__(self, family: str = "taef2"):
        super().__init__()
        if family not in FAMILIES:
            raise ValueError(f"unknown autoencoder {family!r}; choose one of {', '.join(FAMILIES)}")
        self.family = FAMILIES[family]
        self.encoder = build_encoder(self.family.latent_channels, self.family.mid)
        self.decoder = build_decoder(self.family.latent_channels, self.family.mid)

    def forward(self, x):
        return self.decoder(self.encoder(x)).clamp(0, 1)


def cache_dirs() -> list[Path]:
    """Where weight files are looked for, in order: $SYNTHCHECK_AUTOENCODERS, then torch's hub checkpoint folder."""
    dirs = []
    if os.environ.get("SYNTHCHECK_AUTOENCODERS"):
        dirs.append(Path(os.environ["SYNTHCHECK_AUTOENCODERS"]))
    dirs.append(Path(torch.hub.get_dir()) / "checkpoints")
    return dirs


def _read_state(path: Path) -> dict[str, torch.Tensor]:
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        return load_file(str(path))
    # the published TAEF2 files are torch state dicts: weights_only refuses anything but tensors
    return torch.load(path, map_location="cpu", weights_only=True)


def find_weights(family: str, directory: str | Path | None = None, download: bool = False) -> tuple[Path, Path]:
    """The encoder and decoder files of a family: from `directory`, else the cache folders; with
    `download`, fetched from the published repository into torch's hub folder (never in tests)."""
    fam = FAMILIES[family]
    places = [Path(directory)] if directory else cache_dirs()
    for d in places:
        enc, dec = d / fam.files[0], d / fam.files[1]
        if enc.exists() and dec.exists():
            return enc, dec
    if download and not directory:
        dest = Path(torch.hub.get_dir()) / "checkpoints"
        dest.mkdir(parents=True, exist_ok=True)
        for f in fam.files:
            if not (dest / f).exists():
                torch.hub.download_url_to_file(fam.url + f, str(dest / f), progress=True)
        return dest / fam.files[0], dest / fam.files[1]
    where = " or ".join(str(p) for p in places)
    raise FileNotFoundError(f"{family}: {fam.files[0]} and {fam.files[1]} not found in {where}; place them there "
                            f"(from {fam.url}), point --weights-dir at them, or pass --download")


def load_autoencoder(family: str = "taef2", directory: str | Path | None = None, download: bool = False,
                     device: str | torch.device = "cpu") -> TinyAutoencoder:
    """A family's autoencoder with its published weights, matched exactly (strict keys and shapes), in float32."""
    enc_path, dec_path = find_weights(family, directory, download)
    model = TinyAutoencoder(family)
    for part, path in ((model.encoder, enc_path), (model.decoder, dec_path)):
        state = {k: v.float() for k, v in _read_state(path).items()}
        expected = part.state_dict()
        bad = [k for k in state if k in expected and state[k].shape != expected[k].shape]
        missing, extra = sorted(set(expected) - set(state)), sorted(set(state) - set(expected))
        if missing or extra or bad:
            raise ValueError(f"{path}: not a {family} {'encoder' if part is model.encoder else 'decoder'} "
                             f"(missing {missing[:3]}, unexpected {extra[:3]}, wrong shapes {bad[:3]})")
        part.load_state_dict(state, strict=True)
    return model.to(device).eval()


@torch.no_grad()
def round_trip(model: TinyAutoencoder, x: torch.Tensor, bf16: bool = False) -> torch.Tensor:
    """float [N,3,H,W] in [0,1] with H, W multiples of 8 -> its reconstruction in [0,1] (float32)."""
    dev = next(model.parameters()).device
    with torch.autocast(dev.type, torch.bfloat16, enabled=bf16):
        return model(x.to(dev)).float().clamp(0, 1)

"""Near copies: is this image (or the crop a pack took of it) already somewhere else?

Built on the audit's perceptual hash (`audit.phash`). A pack file is a 512-px crop of its original at the offsets
its manifest's `processing` column names (or the whole image), so a whole gallery image and the pack's crop of the
same picture hash apart; the comparison is made at the pack's own offsets instead (scaled when a gallery re-hosts the
picture at another size with the same aspect ratio). A hash match is confirmed on a small grey thumbnail, so two
different flat skies do not count as one picture.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

from ..data.folders import iter_source
from ..data.groups import lookup, manifest_path, read_manifest
from .audit import phash

MAX_BITS = 6          # pHash bits that may differ between copies (re-encode, resize)
MAX_THUMB_DIFF = 8.0  # mean absolute difference of the 16 x 16 grey thumbnails, grey levels, means removed
MIN_THUMB_STD = 3.0   # flatter than this: too featureless to call a near copy (exact bytes still count)
_CROP = re.compile(r"crop (\d+)x(\d+)\+(\d+)\+(\d+)")


@dataclass(frozen=True)
class Fingerprint:
    phash: int
    thumb: np.ndarray  # 16 x 16 float32, mean removed

    @property
    def flat(self) -> bool:
        return float(self.thumb.std()) < MIN_THUMB_STD


def fingerprint(img: Image.Image) -> Fingerprint:
    grey = np.asarray(img.convert("L").resize((16, 16), Image.BILINEAR), np.float32)
    return Fingerprint(int(phash(img), 16), grey - grey.mean())


def same_picture(a: Fingerprint, b: Fingerprint) -> bool:
    if a.flat or b.flat or bin(a.phash ^ b.phash).count("1") > MAX_BITS:
        return False
    return float(np.abs(a.thumb - b.thumb).mean()) <= MAX_THUMB_DIFF


@dataclass(frozen=True)
class PackCrop:
    name: str                               # "<pack>:<path in it>"
    original: tuple[int, int]               # width, height of the image the pack cut it from
    box: tuple[int, int, int, int] | None   # left, top, width, height; None: the whole image
    print: Fingerprint


def crop_box(processing: str) -> tuple[int, int, int, int] | None:
    """The crop a pack manifest's `processing` names ('... crop 512x512+256+128 ...'); None for a whole image."""
    m = _CROP.search(processing or "")
    if not m:
        return None
    w, h, x, y = map(int, m.groups())
    return x, y, w, h


def pack_crops(packs: list[str | Path], progress: bool = False) -> list[PackCrop]:
    """Every image of the packs with where it came from in its original; files without a manifest row are
    taken as whole images."""
    import io

    from tqdm.auto import tqdm

    out = []
    for pack in packs:
        rows = read_manifest(manifest_path(pack))
        for item in tqdm(list(iter_source(pack)), desc=f"hashing {Path(pack).name}", disable=not progress,
                         unit="img"):
            try:
                img = Image.open(io.BytesIO(item.data))
                img.load()
            except Exception:
                continue
            row = lookup(rows, item.name) or {}
            try:
                orig = (int(row["orig_width"]), int(row["orig_height"]))
            except (KeyError, ValueError):
                orig = img.size
            box = crop_box(row.get("processing", ""))
            out.append(PackCrop(f"{Path(pack).name}:{item.name}", orig, box, fingerprint(img)))
    return out


def copies_in_packs(img: Image.Image, crops: list[PackCrop], aspect_tolerance: float = 0.01) -> list[str]:
    """Names of pack images that are `img` (or a crop of it at the pack's own offsets, scaled to this size)."""
    w, h = img.size
    found, cache = [], {}
    for c in crops:
        ow, oh = c.original
        if abs(w / h - ow / oh) > aspect_tolerance * (ow / oh):
            continue
        s = w / ow
        box = (0, 0, w, h) if c.box is None else tuple(int(round(v * s)) for v in c.box)
        if box[0] + box[2] > w + 1 or box[1] + box[3] > h + 1:
            continue
        if box not in cache:
            cache[box] = fingerprint(img.crop((box[0], box[1], box[0] + box[2], box[1] + box[3])))
        if same_picture(cache[box], c.print):
            found.append(c.name)
    return found


def near_pairs(prints: list[Fingerprint]) -> list[tuple[int, int]]:
    """(i, j), i < j: pairs of the same picture among `prints` (vectorised over the hash bits)."""
    if len(prints) < 2:
        return []
    bits = np.unpackbits(np.array([p.phash for p in prints], dtype=">u8").view(np.uint8).reshape(-1, 8), axis=1)
    out = []
    for i in range(len(prints) - 1):
        d = (bits[i + 1:] != bits[i]).sum(1)
        for j in np.nonzero(d <= MAX_BITS)[0] + i + 1:
            if same_picture(prints[i], prints[int(j)]):
                out.append((i, int(j)))
    return out

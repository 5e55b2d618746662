"""Invisible watermarks of open generators: the DWT-DCT marks of the Stable Diffusion reference scripts and SDXL.

The CompVis / Stability AI reference scripts embed the bytes "StableDiffusionV1" (SD 1.x) or "SDV2" (SD 2.x),
and diffusers' SDXL pipeline a fixed 48-bit message whenever `invisible-watermark` is installed, all with that
package's `dwtDct` method. Its decoder, which this module re-implements, reads only the U plane (OpenCV's BGR->YUV,
8-bit): Haar DWT, 4x4 blocks of the approximation band, and in each block the largest coefficient but the first,
quantised with step 36 (the package's `range(2)` loop skips V, and despite its name there is no DCT). Block n
votes for bit n mod L; a bit is 1 where more than 127/255 of its votes are 1.

Why not the package: invisible-watermark 0.2.0 pins OpenCV's GUI build and an unpinned torch. This decoder needs
numpy only, gives the package's bits exactly (tests/test_watermark.py checks against the package, and the U plane
against OpenCV on all 2^24 colours), and computes the per-block votes once for all three messages where the package
decodes the whole image once per message. A mark is easy to remove (crop, resize, re-encode), and ComfyUI,
A1111 and stable-diffusion.cpp embed none, so a missing mark says nothing.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache
from math import comb

import numpy as np

SCALE = 36          # the package's quantisation step for dwtDct (scales=[0, 36, 36]; only U is used)
BLOCK = 4
SCREEN_EVERY, SCREEN_SHARE = 2, 0.40  # the screen in `check`: every 2nd row of blocks, within 40% of the bits
CHUNK_ROWS = 128    # pixel rows per band in `block_votes` (a multiple of 8: one band holds whole blocks)
MIN_SIDE = 256      # diffusers skips images under 256 px; the package refuses under 256 x 256 pixels
MAX_PIXELS = 2048 * 2048  # larger than generators write natively: such a file was resized, which removes the mark
FALSE_MATCH = 1e-6  # allowed bit errors: at most this chance that random bits match a message (see `allowed_errors`)
_HAAR = 0.7071067811865476  # pywt's Haar filter tap; the same products in the same order give pywt's values bit for bit


def _bits_of_bytes(text: bytes) -> tuple[int, ...]:
    return tuple(int(b) for b in np.unpackbits(np.frombuffer(text, np.uint8)))


@dataclass(frozen=True)
class Message:
    key: str
    generator: str
    bits: tuple[int, ...]
    where: str


MESSAGES = (
    Message("sd1", "Stable Diffusion 1.x", _bits_of_bytes(b"StableDiffusionV1"),
            'the CompVis reference scripts\' mark "StableDiffusionV1"'),
    Message("sd2", "Stable Diffusion 2.x", _bits_of_bytes(b"SDV2"), 'the Stability AI reference scripts\' mark "SDV2"'),
    Message("sdxl", "Stable Diffusion XL", tuple(int(c) for c in bin(0b101100111110110010010000011110111011000110011110)[2:]),
            "the 48-bit mark of diffusers' SDXL pipelines"),
)


@lru_cache(maxsize=None)
def allowed_errors(n_bits: int, false_match: float = FALSE_MATCH) -> int:
    """The most bit errors a match may have: the largest k with P(Binomial(n, 1/2) <= k) <= false_match.

    For 32, 48 and 136 bits: 2, 7 and 40. Real photos' decoded bits are not uniform, so the rate is also
    measured on real photos (scripts/watermark_study.py, docs/guides/metadata.md)."""
    k, tail = -1, 0
    while (tail + comb(n_bits, k + 1)) / 2 ** n_bits <= false_match:
        k, tail = k + 1, tail + comb(n_bits, k + 1)
    return k


def u_plane(rgb: np.ndarray) -> np.ndarray:
    """OpenCV's 8-bit BGR->YUV U plane (fixed point, 14-bit coefficients), as int32."""
    r, g, b = (rgb[..., i].astype(np.int32) for i in range(3))
    y = (r * 4899 + g * 9617 + b * 1868 + 8192) >> 14
    return np.clip(((b - y) * 8061 + (128 << 14) + 8192) >> 14, 0, 255)


def _haar_ll(x: np.ndarray) -> np.ndarray:
    """The approximation band of pywt.dwt2(x, 'haar') (rows, then columns), bit for bit; 9x faster than pywt
    since the three detail bands are never computed."""
    x = x.astype(np.float64)
    a = x[0::2] * _HAAR + x[1::2] * _HAAR
    return a[:, 0::2] * _HAAR + a[:, 1::2] * _HAAR


def block_votes(rgb: np.ndarray) -> np.ndarray:
    """Each 4x4 block's vote (0/1), in the package's order (row-major over blocks).

    In bands of CHUNK_ROWS pixel rows (whole blocks): temporaries stay under glibc's mmap threshold, so they
    are reused instead of page-faulted in afresh (3-4x faster on a 512 x 512 image here, same votes)."""
    h, w = rgb.shape[:2]
    h8, w4 = h // 8 * 8, w // 4 * 4
    return np.concatenate([_band_votes(rgb[i:min(i + CHUNK_ROWS, h8), :w4]) for i in range(0, h8, CHUNK_ROWS)]
                          or [np.zeros(0, np.int64)])


def _band_votes(rgb: np.ndarray) -> np.ndarray:
    ll = _haar_ll(u_plane(rgb))
    bh, bw = ll.shape[0] // BLOCK, ll.shape[1] // BLOCK
    blocks = ll[: bh * BLOCK, : bw * BLOCK].reshape(bh, BLOCK, bw, BLOCK).transpose(0, 2, 1, 3).reshape(-1, BLOCK * BLOCK)
    flat = np.abs(blocks[:, 1:])
    val = flat[np.arange(len(flat)), flat.argmax(1)]
    return (val % SCALE > 0.5 * SCALE).astype(np.int64)


def _row_votes(rgb: np.ndarray, rows: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The votes of some rows of blocks (8 pixel rows each) and those blocks' indices in the whole image."""
    w4 = rgb.shape[1] // 4 * 4
    votes = block_votes(rgb[(rows[:, None] * 8 + np.arange(8)).ravel(), :w4])
    per_row = w4 // 2 // BLOCK
    return votes, (rows[:, None] * per_row + np.arange(per_row)).ravel()


def decode(rgb: np.ndarray, n_bits: int, votes: np.ndarray | None = None, index: np.ndarray | None = None) -> np.ndarray:
    """The n_bits message the package's WatermarkDecoder('bits', n_bits).decode(bgr, 'dwtDct') reads (bool array);
    from some blocks' `votes` at their `index` when given (the screen in `check`)."""
    votes = block_votes(rgb) if votes is None else votes
    idx = (np.arange(len(votes)) if index is None else index) % n_bits
    ones = np.bincount(idx, weights=votes, minlength=n_bits)
    count = np.bincount(idx, minlength=n_bits)
    with np.errstate(invalid="ignore", divide="ignore"):
        return (ones / count) * 255 > 127  # an index with no block (nan) reads 0, as in the package


def check(rgb: np.ndarray, screen: bool = True) -> dict:
    """Every known message against the image: {"checked": bool, "reason": str, "found": [...], "distances": {...}}.

    `found` lists {"key", "generator", "errors", "allowed", "bits", "where"} for each message within its allowed
    errors. Images under MIN_SIDE on either side (the decoder needs 256 px) or over MAX_PIXELS (a resized file, and
    the decode would cost more than scoring) are not checked, said in `reason`.

    `screen`: first decode from every SCREEN_EVERY-th row of blocks, and decode the whole image only when a
    message is within SCREEN_SHARE of its bits there; otherwise nothing is found and `distances` is empty. It
    keeps the check within the photo path's 10% (benchmarks/evidence_cost.py); on the watermarked images of
    scripts/file_evidence_study.py it never dropped a mark the whole-image decode found (`screen_missed`)."""
    h, w = rgb.shape[:2]
    if min(h, w) < MIN_SIDE:
        return {"checked": False, "reason": f"{w}x{h} is under {MIN_SIDE} px on a side: too small for the decoder",
                "found": [], "distances": {}}
    if h * w > MAX_PIXELS:
        return {"checked": False, "reason": f"{w}x{h} is larger than generators write (over {MAX_PIXELS / 1e6:.1f} MP): "
                                            "a mark would not have survived the resize", "found": [], "distances": {}}
    if screen:
        votes, index = _row_votes(rgb, np.arange(0, h // 8, SCREEN_EVERY))
        if all(np.sum(decode(rgb, len(m.bits), votes, index) != np.array(m.bits, bool)) > SCREEN_SHARE * len(m.bits)
               for m in MESSAGES):
            return {"checked": True, "reason": "", "found": [], "distances": {}}
    votes = block_votes(rgb)
    found, distances = [], {}
    for m in MESSAGES:
        errors = int(np.sum(decode(rgb, len(m.bits), votes) != np.array(m.bits, bool)))
        allowed = allowed_errors(len(m.bits))
        distances[m.key] = errors
        if errors <= allowed:
            found.append({"key": m.key, "generator": m.generator, "errors": errors, "allowed": allowed,
                          "bits": len(m.bits), "where": m.where})
    return {"checked": True, "reason": "", "found": found, "distances": distances}


def embed(rgb: np.ndarray, bits) -> np.ndarray:
    """The package's dwtDct encoder (RGB in and out), for tests and the survival study; images are only read
    in production. Like the package it writes back the detail bands with horizontal and vertical swapped and
    casts to uint8 by truncation, so the pixels match what the generators shipped."""
    import pywt

    bits = [int(b) % 2 for b in bits]
    h, w = rgb.shape[:2]
    r, g, b = (rgb[..., i].astype(np.int32) for i in range(3))
    y = (r * 4899 + g * 9617 + b * 1868 + 8192) >> 14
    u = np.clip(((b - y) * 8061 + (128 << 14) + 8192) >> 14, 0, 255)
    v = np.clip(((r - y) * 14369 + (128 << 14) + 8192) >> 14, 0, 255)
    h4, w4 = h // 4 * 4, w // 4 * 4
    ca, (ch, cv, cd) = pywt.dwt2(u[:h4, :w4].astype(np.uint8), "haar")
    bh, bw = ca.shape[0] // BLOCK, ca.shape[1] // BLOCK
    blocks = ca[: bh * BLOCK, : bw * BLOCK].reshape(bh, BLOCK, bw, BLOCK).transpose(0, 2, 1, 3).reshape(-1, BLOCK * BLOCK)
    pos = np.abs(blocks[:, 1:]).argmax(1) + 1
    rows = np.arange(len(blocks))
    val = blocks[rows, pos]
    bit = np.array(bits)[rows % len(bits)]
    blocks[rows, pos] = np.sign(val + (val == 0)) * ((np.abs(val) // SCALE + 0.25 + 0.5 * bit) * SCALE)
    ca[: bh * BLOCK, : bw * BLOCK] = blocks.reshape(bh, bw, BLOCK, BLOCK).transpose(0, 2, 1, 3).reshape(bh * BLOCK, bw * BLOCK)
    u = u.copy()
    u[:h4, :w4] = np.trunc(pywt.idwt2((ca, (cv, ch, cd)), "haar")).astype(np.int64) & 255
    d_u, d_v = u - 128, v - 128
    out = np.stack([y + ((d_v * 18678 + 8192) >> 14), y + ((d_v * -9519 + d_u * -6472 + 8192) >> 14),
                    y + ((d_u * 33292 + 8192) >> 14)], -1)
    return np.clip(out, 0, 255).astype(np.uint8)

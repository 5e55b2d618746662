"""What a JPEG file says about its own history: which kind of encoder last wrote it, at what quality, whether its
EXIF agrees, and whether it shows signs of an earlier JPEG save.

This is evidence about the file, never about AI: in the shared data sets compression history follows the label
because of how they were built, and a re-saved real photo is still real. `metadata.combine_verdict` never lets
it move a verdict. The header is read by a small marker walker (Pillow exposes the quantisation tables but not
the Huffman tables, sampling factors or marker order); the re-save trace works on the decoded pixels the detector
already has, so no second decode is paid.
"""

from __future__ import annotations

import hashlib
import io
import json
import struct
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path

import numpy as np

ZIGZAG = np.array([0, 1, 8, 16, 9, 2, 3, 10, 17, 24, 32, 25, 18, 11, 4, 5, 12, 19, 26, 33, 40, 48, 41, 34, 27, 20, 13, 6,
                   7, 14, 21, 28, 35, 42, 49, 56, 57, 50, 43, 36, 29, 22, 15, 23, 30, 37, 44, 51, 58, 59, 52, 45, 38, 31,
                   39, 46, 53, 60, 61, 54, 47, 55, 62, 63])  # zigzag position i holds natural index ZIGZAG[i]
# ITU T.81 Annex K tables (natural order): what libjpeg scales by quality
IJG_LUMA = np.array([16, 11, 10, 16, 24, 40, 51, 61, 12, 12, 14, 19, 26, 58, 60, 55, 14, 13, 16, 24, 40, 57, 69, 56,
                     14, 17, 22, 29, 51, 87, 80, 62, 18, 22, 37, 56, 68, 109, 103, 77, 24, 35, 55, 64, 81, 104, 113, 92,
                     49, 64, 78, 87, 103, 121, 120, 101, 72, 92, 95, 98, 112, 100, 103, 99])
IJG_CHROMA = np.array([17, 18, 24, 47, 99, 99, 99, 99, 18, 21, 26, 66, 99, 99, 99, 99, 24, 26, 56, 99, 99, 99, 99, 99,
                       47, 66, 99, 99, 99, 99, 99, 99] + [99] * 32)
# Annex K.3 Huffman code lengths (BITS) of the four standard tables; an encoder that optimises writes others
STD_HUFFMAN_BITS = {
    (0, 0): (0, 1, 5, 1, 1, 1, 1, 1, 1, 0, 0, 0, 0, 0, 0, 0), (0, 1): (0, 3, 1, 1, 1, 1, 1, 1, 1, 1, 1, 0, 0, 0, 0, 0),
    (1, 0): (0, 2, 1, 3, 3, 2, 4, 3, 5, 5, 4, 4, 0, 0, 1, 0x7D), (1, 1): (0, 2, 1, 2, 4, 4, 3, 4, 7, 5, 4, 4, 0, 1, 2, 0x77),
}
FIRMWARE_FILE = Path(__file__).with_name("jpeg_firmware.json")
# Re-save threshold on the aligned trace (log-likelihood ratio per 1,000 blocks), chosen on photo-train-2 and saves
# made from it, reported on photo-train (scripts/jpeg_history_study.py)
DQ_THRESHOLD = 3.0
MAX_BLOCKS = 16384  # the central 1024 x 1024 at most: enough for the histograms, a few ms at any image size
MODES = ZIGZAG[1:13]  # the twelve lowest AC frequencies (most populated histograms)


@dataclass
class JpegHeader:
    markers: list = field(default_factory=list)  # names in file order up to the first SOS
    tables: dict = field(default_factory=dict)   # DQT id -> 64 ints, natural order
    frame: str = ""                              # baseline | extended | progressive | lossless | ...
    components: list = field(default_factory=list)  # (id, h, v, table id)
    huffman: str = ""                            # standard | optimised | none
    apps: list = field(default_factory=list)     # APPn identifiers ("APP1:Exif", "APP0:JFIF", ...)
    comment: str = ""

    @property
    def subsampling(self) -> str:
        if len(self.components) < 3:
            return "grayscale" if self.components else "?"
        (_, h0, v0, _), (_, h1, v1, _) = self.components[0], self.components[1]
        return {(1, 1): "4:4:4", (2, 1): "4:2:2", (2, 2): "4:2:0", (1, 2): "4:4:0", (4, 1): "4:1:1"}.get(
            (h0 // max(h1, 1), v0 // max(v1, 1)), f"{h0}x{v0}/{h1}x{v1}")

    def table(self, component: int) -> np.ndarray | None:
        if component >= len(self.components):
            return None
        return self.tables.get(self.components[component][3])


_FRAMES = {0xC0: "baseline", 0xC1: "extended", 0xC2: "progressive", 0xC3: "lossless", 0xC9: "arithmetic",
           0xCA: "arithmetic progressive"}


def parse_header(data: bytes) -> JpegHeader | None:
    """The markers of a JPEG up to its first scan; None when the bytes are not a JPEG."""
    if data[:2] != b"\xff\xd8":
        return None
    head, pos, std = JpegHeader(), 2, []
    while pos + 4 <= len(data):
        if data[pos] != 0xFF:
            break
        marker = data[pos + 1]
        if marker == 0xFF:  # fill byte
            pos += 1
            continue
        length = struct.unpack(">H", data[pos + 2:pos + 4])[0]
        body = data[pos + 4:pos + 2 + length]
        if 0xE0 <= marker <= 0xEF:
            ident = body[:12].split(b"\x00")[0].decode("latin-1", "replace")[:14]
            head.apps.append(f"APP{marker - 0xE0}:{ident}")
            head.markers.append(f"APP{marker - 0xE0}")
        elif marker == 0xDB:
            head.markers.append("DQT")
            i = 0
            while i < len(body):
                prec, tid = body[i] >> 4, body[i] & 15
                n = 128 if prec else 64
                raw = np.frombuffer(body[i + 1:i + 1 + n], ">u2" if prec else "u1").astype(np.int64)
                if len(raw) == 64:
                    table = np.zeros(64, np.int64)
                    table[ZIGZAG] = raw
                    head.tables[tid] = table
                i += 1 + n
        elif marker == 0xC4:
            head.markers.append("DHT")
            i = 0
            while i + 17 <= len(body):
                tc_th, bits = body[i], tuple(body[i + 1:i + 17])
                std.append(STD_HUFFMAN_BITS.get((tc_th >> 4, min(tc_th & 15, 1))) == bits)
                i += 17 + sum(bits)
        elif marker in _FRAMES or 0xC0 <= marker <= 0xCF and marker not in (0xC4, 0xC8, 0xCC):
            head.markers.append(f"SOF{marker - 0xC0}")
            head.frame = _FRAMES.get(marker, f"SOF{marker - 0xC0}")
            n = body[5] if len(body) > 5 else 0
            head.components = [(body[6 + 3 * c], body[7 + 3 * c] >> 4, body[7 + 3 * c] & 15, body[8 + 3 * c])
                               for c in range(n) if 8 + 3 * c < len(body)]
        elif marker == 0xFE:
            head.markers.append("COM")
            head.comment = body[:200].decode("latin-1", "replace")
        elif marker == 0xDA:
            head.markers.append("SOS")
            break
        else:
            head.markers.append(f"FF{marker:02X}")
        pos += 2 + length
    head.huffman = "none" if not std else ("standard" if all(std) else "optimised")
    return head


@lru_cache(maxsize=None)
def ijg_tables(quality: int) -> tuple[np.ndarray, np.ndarray]:
    """libjpeg's jpeg_set_quality tables (baseline-clamped), natural order."""
    scale = 5000 // quality if quality < 50 else 200 - 2 * quality
    return tuple(np.clip((base * scale + 50) // 100, 1, 255) for base in (IJG_LUMA, IJG_CHROMA))


@lru_cache(maxsize=1)
def _ijg_index() -> tuple[dict, np.ndarray]:
    """Luma table bytes -> the qualities that write it, and the log luma tables of q = 1..100."""
    index: dict[bytes, list[int]] = {}
    for q in range(1, 101):
        index.setdefault(ijg_tables(q)[0].tobytes(), []).append(q)
    return index, np.log(np.stack([ijg_tables(q)[0] for q in range(1, 101)]))


def ijg_quality(luma: np.ndarray, chroma: np.ndarray | None) -> tuple[int, bool]:
    """(quality, exact): the IJG quality whose tables these are (exact) or the nearest one on the luma table."""
    index, logs = _ijg_index()
    for q in index.get(np.asarray(luma, np.int64).tobytes(), []):
        if chroma is None or np.array_equal(chroma, ijg_tables(q)[1]):
            return q, True
    return int(np.abs(np.log(np.maximum(luma, 1))[None] - logs).mean(1).argmin()) + 1, False


def tables_key(head: JpegHeader) -> str:
    luma, chroma = head.table(0), head.table(1)
    blob = b"".join(t.astype(">u2").tobytes() for t in (luma, chroma) if t is not None)
    return hashlib.sha1(blob).hexdigest()[:16]


@lru_cache(maxsize=1)
def firmware_tables() -> dict:
    """tables_key -> camera makes/models whose original files carry those tables (built by scripts/jpeg_firmware.py)."""
    try:
        return json.loads(FIRMWARE_FILE.read_text())["tables"]
    except (OSError, ValueError, KeyError):
        return {}


# --- re-save traces ---------------------------------------------------------------------------------------------

def _dct_matrix() -> np.ndarray:
    k, n = np.arange(8)[:, None], np.arange(8)[None, :]
    c = np.sqrt(2 / 8) * np.cos((2 * n + 1) * k * np.pi / 16)
    c[0] /= np.sqrt(2)
    return c


_C = _dct_matrix()
_BASIS = np.einsum("ui,vj->ijuv", _C, _C).reshape(64, 64)[:, MODES]  # pixel (i, j) -> frequency (u, v)
_PIECE = 96  # blocks per matrix product: 96 x 192 x 12 stays single-threaded in OpenBLAS
_RGB_BASIS = (_BASIS[:, None, :] * np.array([0.299, 0.587, 0.114])[None, :, None]).reshape(192, -1).astype(np.float32)


def _central(rgb: np.ndarray) -> np.ndarray:
    """The central part on the file's own 8x8 grid, at most MAX_BLOCKS blocks (a view: nothing is copied)."""
    side = int(np.sqrt(MAX_BLOCKS)) * 8
    h, w = rgb.shape[0] // 8 * 8, rgb.shape[1] // 8 * 8
    top, left = max(0, (h - side) // 16 * 8), max(0, (w - side) // 16 * 8)
    return rgb[top:top + min(h, side), left:left + min(w, side)]


def _mode_coefs(region: np.ndarray) -> np.ndarray:
    """[len(MODES), blocks]: the MODES frequencies of the luma of every 8x8 block, as one projection of the RGB
    blocks (luma weights folded into the DCT basis; the -128 level shift only moves DC, which is not used)."""
    h, w = region.shape[0] // 8 * 8, region.shape[1] // 8 * 8
    blocks = region[:h, :w].reshape(h // 8, 8, w // 8, 8, 3).transpose(0, 2, 1, 3, 4).reshape(-1, 192)
    blocks = blocks.astype(np.float32)
    # In pieces under OpenBLAS's threading threshold (m*n*k < 262,144): one thread each. Threaded, these small
    # products spun its threads against the model's and cost predict 9 ms of CPU per image (evidence_cost.py).
    out = [blocks[i:i + _PIECE] @ _RGB_BASIS for i in range(0, len(blocks), _PIECE)]
    return np.ascontiguousarray(np.concatenate(out).T) if out else np.zeros((len(MODES), 0), np.float32)


@lru_cache(maxsize=512)
def _lattices(q2: int, kmax: int) -> tuple[np.ndarray, np.ndarray]:
    """Earlier steps q1 that would leave a trace under q2, and n[q1, k]: how many earlier values m*q1 round to
    k*q2 (integers m in [(k-1/2) q2/q1, (k+1/2) q2/q1)), scaled to mean ~1, plus 0.05 so that it is never zero."""
    cands = np.array([q for q in range(1, min(3 * q2, 120) + 1) if q != q2 and q2 % q])
    k = np.arange(1, kmax + 1)[None, :]
    n = -((-(2 * k + 1) * q2) // (2 * cands[:, None])) + ((-(2 * k - 1) * q2) // (2 * cands[:, None]))
    return cands, n * (cands[:, None] / q2) + 0.05


def _hist(values: np.ndarray, q2: int) -> np.ndarray:
    """Counts of |round(value / q2)| = 0, 1, 2, ..."""
    return np.bincount(np.abs(np.rint(values * (1.0 / q2))).astype(np.int64))


def aligned_trace(rgb: np.ndarray, luma_table: np.ndarray) -> dict:
    """Double quantisation on the file's own grid: per low AC frequency, is the histogram of its quantised values
    better explained by an earlier quantisation step q1 != q2 (periodic gaps or peaks) than by one save?

    The one-save histogram is estimated by calibration (Lukas & Fridrich 2003): the same frequencies on a grid
    shifted by 4 px, where the file's own quantisation left no lattice, quantised with the file's steps. Returns
    the log-likelihood ratio summed over frequencies, per 1,000 blocks, and each frequency's most likely q1."""
    region = _central(rgb)
    coef, ref = _mode_coefs(region), _mode_coefs(region[4:, 4:])
    blocks = coef.shape[1]
    if blocks < 256:
        return {"score": None, "blocks": blocks, "reason": "too few 8x8 blocks"}
    llr_total, used, q1s = 0.0, 0, {}
    for col, mode in enumerate(MODES):
        q2 = int(luma_table[mode])
        if q2 < 2:
            continue  # a step of 1 keeps every earlier lattice point: no gaps to see
        counts = _hist(coef[col], q2)[1:]
        if counts.sum() < 200:
            continue
        kmax = int(min(40, max(4, np.searchsorted(np.cumsum(counts), 0.99 * counts.sum()) + 1)))
        h = np.zeros(kmax)
        h[:min(kmax, len(counts))] = counts[:kmax]
        env = np.ones(kmax)  # the one-save estimate, +1 so that no bin is empty
        r = _hist(ref[col], q2)[1:kmax + 1]
        env[:len(r)] += r
        single = float((h * np.log(env / env.sum())).sum())
        cands, n = _lattices(q2, kmax)
        if len(cands) == 0:
            continue
        p = env[None] * n                                                   # [q1, k]
        ll = (h * np.log(p / p.sum(1, keepdims=True))).sum(1)
        best = int(ll.argmax())
        llr_total += max(0.0, float(ll[best] - single))
        q1s[int(mode)] = int(cands[best])
        used += 1
    if used == 0:
        return {"score": None, "blocks": blocks, "reason": "quantisation too fine to show an earlier save"}
    return {"score": llr_total / blocks * 1000, "blocks": blocks, "modes": used, "q1": q1s, "reason": ""}


# --- the whole reading ------------------------------------------------------------------------------------------

def _exif_fields(img) -> dict:
    try:
        exif = img.getexif()
    except Exception:
        return {}
    return {k: str(exif.get(t)).strip().strip("\x00") for t, k in ((0x010F, "make"), (0x0110, "model"), (0x0131, "software"))
            if exif.get(t)}


def _thumbnail(img, rgb: np.ndarray) -> dict | None:
    """The EXIF thumbnail against the image: correlation of the two at the thumbnail's size (None: no thumbnail)."""
    from PIL import ExifTags, Image

    try:
        ifd1 = img.getexif().get_ifd(ExifTags.IFD.IFD1)
    except Exception:
        return None
    raw = img.info.get("exif") or b""
    tiff = raw[6:] if raw.startswith(b"Exif\x00\x00") else raw
    off, length = ifd1.get(0x0201), ifd1.get(0x0202)
    if not off or not length or off + length > len(tiff):
        return None
    try:
        thumb = np.asarray(Image.open(io.BytesIO(tiff[off:off + length])).convert("L"), np.float64)
    except Exception:
        return {"corr": None, "size": None}
    th, tw = thumb.shape
    rows, cols = np.where(thumb > 12)  # camera thumbnails letterbox other aspect ratios in black
    if len(rows) > 16:
        thumb = thumb[rows.min():rows.max() + 1, cols.min():cols.max() + 1]
    step = max(1, min(rgb.shape[0] // th, rgb.shape[1] // tw) // 2)  # subsample first: a 12 MP photo costs ~1 ms
    small = np.asarray(Image.fromarray(np.ascontiguousarray(rgb[::step, ::step])).convert("L")
                       .resize(thumb.shape[::-1], Image.BILINEAR), np.float64)
    a, b = thumb - thumb.mean(), small - small.mean()
    corr = float((a * b).sum() / (np.sqrt((a * a).sum() * (b * b).sum()) + 1e-9))
    return {"corr": corr, "size": (tw, th)}


def read(data: bytes, img, rgb: np.ndarray | None, resave: bool = True) -> dict | None:
    """Everything about the file's compression history; `rgb` is the image as stored (orientation not applied);
    `resave`: also look for an earlier save in the pixels (about 2 ms for 512 x 512). None for non-JPEG files."""
    head = parse_header(data)
    if head is None or head.table(0) is None:
        return None
    luma, chroma = head.table(0), head.table(1)
    quality, exact = ijg_quality(luma, chroma)
    cameras = firmware_tables().get(tables_key(head), [])
    if exact:
        family = "ijg"
    elif cameras:
        family = "camera"
    else:
        family = "other"
    exif = _exif_fields(img)
    out = {"family": family, "quality": quality, "exact_ijg": exact, "cameras": cameras,
           "subsampling": head.subsampling, "frame": head.frame, "huffman": head.huffman, "apps": head.apps,
           "markers": head.markers, "exif": exif, "thumbnail": None, "aligned": None}
    if rgb is not None:
        out["thumbnail"] = _thumbnail(img, rgb)
        out["aligned"] = aligned_trace(rgb, luma) if resave else None
    return out


def resaved(history: dict) -> tuple[bool | None, str]:
    """The re-save decision on `read`'s aligned trace: (True, what was seen), (False, what the check covers) or
    (None, why it could not look). Blind, by construction, to a second save on a shifted grid (a crop between
    saves), after a resize, after a non-JPEG first encoding (WebP, HEIF) or at a finer quality than about 92."""
    a = history.get("aligned") or {}
    if a.get("score") is None:
        return None, a.get("reason") or "no pixels"
    if a["score"] > DQ_THRESHOLD:
        return True, "an earlier JPEG save on the same 8x8 grid (its quantisation left gaps or peaks)"
    return False, "no trace of an earlier save on the same grid"

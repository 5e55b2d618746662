"""The one preprocessing path: bytes -> RGB uint8 pixels at the model's stored size.

Training, evaluation, the CLI, the API and the web page all call `load_image`
(or `decode_image` + `fit_to_size`), so what is served is exactly what was
measured. Everything after this point works on uint8 tensors; every model
starts with its own `InputAdapter` (float conversion, optional resize,
normalisation), so the network file carries its own normalisation too.
"""

from __future__ import annotations

import io
import warnings
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Union

import numpy as np
from PIL import Image, ImageFile, ImageOps, UnidentifiedImageError

# Bump when decoding changes, so caches built by an older rule are not reused.
PREPROCESS_VERSION = 1

# Pillow's decompression-bomb guard stays on: above this many pixels it raises.
DEFAULT_MAX_PIXELS = 50_000_000
Image.MAX_IMAGE_PIXELS = DEFAULT_MAX_PIXELS
# Truncated files must fail loudly, never decode as half-grey images.
ImageFile.LOAD_TRUNCATED_IMAGES = False

ImageSource = Union[str, Path, bytes, bytearray, memoryview, Image.Image, np.ndarray]

RESIZE_POLICIES = ("resize", "center_crop", "crop", "tiles", "native")

# Only these decoders ever see user bytes. Pillow can open more (EPS hands the file to Ghostscript,
# PSD/ICNS/FITS... are rarely photos and widen the attack surface), so everything else is refused.
Image.init()  # register every plugin first, so the list below names only decoders this Pillow has
ALLOWED_FORMATS = tuple(f for f in ("JPEG", "MPO", "PNG", "WEBP", "GIF", "BMP", "TIFF", "AVIF") if f in Image.OPEN)

# Magic bytes of things people upload by mistake, to say what a rejected file actually is.
_NOT_IMAGES = (
    (b"PK\x03\x04", "a ZIP archive (or Office document)"), (b"%PDF", "a PDF document"),
    (b"\x1f\x8b", "a gzip archive"), (b"Rar!", "a RAR archive"), (b"7z\xbc\xaf", "a 7-Zip archive"),
    (b"\x7fELF", "an executable"), (b"MZ", "an executable"), (b"%!PS", "a PostScript file"),
    (b"8BPS", "a Photoshop document (not accepted)"), (b"GIF8", "a GIF"),
    (b"\xff\xd8\xff", "a JPEG"), (b"\x89PNG", "a PNG"),
)


def sniff(data: bytes) -> str | None:
    """What the bytes look like when Pillow refused them (by content, never by name or declared type)."""
    head = bytes(data[:512])
    for magic, what in _NOT_IMAGES:
        if head.startswith(magic):
            return what
    text = head.lstrip(b"\xef\xbb\xbf \t\r\n").lower()
    if text.startswith(b"<svg") or (text.startswith(b"<?xml") and b"<svg" in head.lower()):
        return "an SVG (vector) file; export it as PNG or JPEG"
    if text.startswith((b"<!doctype html", b"<html", b"<head", b"<body", b"<script")):
        return "an HTML document"
    if text.startswith((b"{", b"[")):
        return "JSON or other text"
    try:
        head.decode("utf-8")
        return "text"
    except UnicodeDecodeError:
        return None


class ImageError(ValueError):
    """An input that cannot be turned into pixels; the message names the file and why."""

    def __init__(self, name: str, problem: str):
        super().__init__(f"{name}: {problem}")
        self.name = name
        self.problem = problem


@dataclass(frozen=True)
class PreprocessSpec:
    """How files become the uint8 tensors a model was trained on (stored in every checkpoint).

    `image_size` is the square size pixels are stored at; `resize_policy` says how
    other sizes are brought to it: `resize` (whole image, bilinear), `center_crop`
    (short side resized, centre cut), `crop` (centre cut at native resolution,
    so generator artifacts are never resampled; smaller images are resized up) or
    `tiles` (a `tiles` x `tiles` grid of native-resolution crops spread evenly over
    the image; the model scores each and combines the tiles' logits by its tile rule). With tiles > 1
    an image becomes [tiles², 3, S, S] instead of [3, S, S]. `native` is a training store: the centre
    S x S of the image at native resolution, never resampled, a smaller image kept whole at the top left
    (zeros around it; its true size is in `ImageSet.sizes`), so training can draw random native crops.
    """

    image_size: int = 32
    resize_policy: str = "resize"
    version: int = PREPROCESS_VERSION
    tiles: int = 1

    def __post_init__(self):
        if self.resize_policy not in RESIZE_POLICIES:
            raise ValueError(f"unknown resize policy {self.resize_policy!r}; choose one of {RESIZE_POLICIES}")
        if self.tiles < 1 or (self.tiles > 1 and self.resize_policy != "tiles"):
            raise ValueError("tiles > 1 needs resize_policy 'tiles' (and tiles must be >= 1)")

    @property
    def n_tiles(self) -> int:
        return self.tiles * self.tiles

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> "PreprocessSpec":
        return cls(**{k: d[k] for k in ("image_size", "resize_policy", "version", "tiles") if k in d})

    @classmethod
    def parse(cls, image_size: int, policy: str) -> "PreprocessSpec":
        """'tiles:3' -> 3x3 tiles; any other policy name as is (for --policy flags)."""
        name, _, n = policy.partition(":")
        if name == "tiles":
            return cls(image_size, "tiles", tiles=int(n or 3))
        if n:
            raise ValueError(f"policy {policy!r}: only 'tiles' takes a count (tiles:N)")
        return cls(image_size, name)

    def label(self) -> str:
        return f"tiles:{self.tiles}" if self.resize_policy == "tiles" else self.resize_policy

    def cache_tag(self) -> str:
        tiles = f"-t{self.tiles}" if self.tiles > 1 else ""
        return f"s{self.image_size}-{self.resize_policy}{tiles}-v{self.version}"


def _to_rgb(img: Image.Image) -> Image.Image:
    """Any Pillow mode -> RGB: 16-bit/float scaled to 8 bits, alpha over white, CMYK/LAB/palette converted."""
    mode = img.mode
    if mode == "RGB":
        return img
    if mode in ("I;16", "I;16B", "I;16L", "I;16N", "I", "F"):
        arr = np.asarray(img, dtype=np.float64)
        if mode.startswith("I;16"):
            arr = arr / 257.0
        else:  # 32-bit int or float: stretch the actual range
            lo, hi = float(np.nanmin(arr)), float(np.nanmax(arr))
            arr = (arr - lo) * (255.0 / (hi - lo)) if hi > lo else np.zeros_like(arr)
        gray = np.clip(np.nan_to_num(arr), 0, 255).astype(np.uint8)
        return Image.fromarray(gray, "L").convert("RGB")
    if mode == "P" and "transparency" in img.info:
        img = img.convert("RGBA")
        mode = "RGBA"
    if mode in ("RGBA", "LA", "PA", "RGBa", "La"):
        rgba = img.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return Image.alpha_composite(background, rgba).convert("RGB")
    if mode == "1":
        return img.convert("L").convert("RGB")
    return img.convert("RGB")


def _open(source: ImageSource, name: str) -> Image.Image:
    if isinstance(source, Image.Image):
        return source
    if isinstance(source, (str, Path)):
        path = Path(source)
        try:
            data = path.read_bytes()
        except FileNotFoundError:
            raise ImageError(name, "file not found") from None
        except IsADirectoryError:
            raise ImageError(name, "is a directory, not an image") from None
        except OSError as e:
            raise ImageError(name, f"cannot read file ({e.strerror or e})") from None
    else:
        data = bytes(source)
    if len(data) == 0:
        raise ImageError(name, "empty file (0 bytes)")
    try:
        with warnings.catch_warnings():  # the size check in decode_image follows and names the limit
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            return Image.open(io.BytesIO(data), formats=ALLOWED_FORMATS)
    except UnidentifiedImageError:
        what = sniff(data)
        if what in ("a JPEG", "a PNG", "a GIF"):
            raise ImageError(name, f"looks like {what} but its header is corrupt") from None
        detail = f": the content is {what}" if what else ""
        raise ImageError(name, f"not a supported image (JPEG, PNG, WebP, GIF, BMP, TIFF, AVIF){detail}") from None
    except Image.DecompressionBombError as e:
        raise ImageError(name, f"image too large ({e})") from None
    except Exception as e:  # Pillow raises many types on hostile headers
        if "truncat" in str(e).lower():
            raise ImageError(name, "truncated or incomplete image data") from None
        raise ImageError(name, f"cannot open image ({type(e).__name__}: {e})") from None


def decode_image(source: ImageSource, name: str | None = None, max_pixels: int | None = DEFAULT_MAX_PIXELS) -> np.ndarray:
    """Decode to an RGB uint8 HxWx3 array with EXIF orientation applied; raise ImageError on any failure."""
    if name is None:
        name = str(source) if isinstance(source, (str, Path)) else "<image>"
    if isinstance(source, np.ndarray):
        return _array_to_rgb(source, name)
    img = _open(source, name)
    try:
        w, h = img.size
        if w <= 0 or h <= 0:
            raise ImageError(name, f"invalid image size {w}x{h}")
        if max_pixels is not None and w * h > max_pixels:
            raise ImageError(name, f"image has {w}x{h} = {w * h:,} pixels, over the limit of {max_pixels:,}")
        if getattr(img, "n_frames", 1) > 1:
            img.seek(0)  # animated: the first frame is the image
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            img.load()
            img = ImageOps.exif_transpose(img) or img
        rgb = _to_rgb(img)
        arr = np.asarray(rgb, dtype=np.uint8)
    except ImageError:
        raise
    except Image.DecompressionBombWarning as e:
        raise ImageError(name, f"image too large ({e})") from None
    except Image.DecompressionBombError as e:
        raise ImageError(name, f"image too large ({e})") from None
    except OSError as e:
        msg = str(e)
        if "truncated" in msg.lower():
            raise ImageError(name, "truncated or incomplete image data") from None
        raise ImageError(name, f"corrupt image data ({msg})") from None
    except Exception as e:
        raise ImageError(name, f"cannot decode image ({type(e).__name__}: {e})") from None
    if arr.ndim != 3 or arr.shape[2] != 3:
        raise ImageError(name, f"unexpected decoded shape {arr.shape}")
    return arr


def _array_to_rgb(arr: np.ndarray, name: str) -> np.ndarray:
    if arr.ndim == 2:
        arr = np.stack([arr] * 3, axis=-1)
    if arr.ndim != 3 or arr.shape[2] not in (1, 3, 4):
        raise ImageError(name, f"array of shape {arr.shape} is not an HxW[xC] image")
    if arr.shape[2] == 1:
        arr = np.repeat(arr, 3, axis=2)
    if arr.shape[2] == 4:
        return decode_image(Image.fromarray(arr.astype(np.uint8), "RGBA"), name)
    if arr.dtype != np.uint8:
        if np.issubdtype(arr.dtype, np.floating) and arr.max(initial=0) <= 1.0:
            arr = arr * 255.0
        arr = np.clip(arr, 0, 255).astype(np.uint8)
    return np.ascontiguousarray(arr)


def fit_to_size(arr: np.ndarray, size: int, policy: str = "resize") -> np.ndarray:
    """Bring an RGB uint8 HxWx3 array to size x size by the named policy (no-op when it already fits)."""
    h, w = arr.shape[:2]
    if h == size and w == size:
        return arr
    if policy not in RESIZE_POLICIES:
        raise ValueError(f"unknown resize policy {policy!r}; choose one of {RESIZE_POLICIES}")
    img = Image.fromarray(arr)
    if policy == "resize":
        img = img.resize((size, size), Image.BILINEAR, reducing_gap=None)
    elif policy == "center_crop":
        img = Image.fromarray(_resize_short_side(arr, size))
        nw, nh = img.size
        left, top = (nw - size) // 2, (nh - size) // 2
        img = img.crop((left, top, left + size, top + size))
    elif policy == "tiles":  # one image: the centre tile
        return tile_grid(arr, size, 1)[0]
    elif policy == "native":
        out = np.zeros((size, size, 3), np.uint8)
        ch, cw = min(h, size), min(w, size)
        top, left = (h - ch) // 2, (w - cw) // 2
        out[:ch, :cw] = arr[top:top + ch, left:left + cw]
        return out
    else:  # crop (and each tile): keep native pixels; upsample only images smaller than the crop
        if min(h, w) < size:
            return fit_to_size(arr, size, "center_crop")
        left, top = (w - size) // 2, (h - size) // 2
        img = img.crop((left, top, left + size, top + size))
    return np.asarray(img, dtype=np.uint8)


def _resize_short_side(arr: np.ndarray, size: int) -> np.ndarray:
    """Resize (bilinear, aspect kept) so that the short side is `size`."""
    h, w = arr.shape[:2]
    scale = size / min(h, w)
    return np.asarray(Image.fromarray(arr).resize((max(size, round(w * scale)), max(size, round(h * scale))),
                                                  Image.BILINEAR), dtype=np.uint8)


def tiling_canvas(arr: np.ndarray, size: int) -> np.ndarray:
    """The array tiles are cut from: the image itself, or (smaller than one tile) its short side brought up to `size`."""
    return _resize_short_side(arr, size) if min(arr.shape[:2]) < size else arr


def tile_boxes(height: int, width: int, size: int, n: int) -> list[tuple[int, int]]:
    """(top, left) of the n x n tiles of `size` spread evenly over a canvas of height x width, row by row."""
    ys = np.linspace(0, height - size, n).round().astype(int) if n > 1 else [(height - size) // 2]
    xs = np.linspace(0, width - size, n).round().astype(int) if n > 1 else [(width - size) // 2]
    return [(int(y), int(x)) for y in ys for x in xs]


def tile_grid(arr: np.ndarray, size: int, n: int) -> np.ndarray:
    """n x n native-resolution size x size crops spread evenly over an HxWx3 image -> [n², size, size, 3].

    Pixels are never resampled unless the image is smaller than one tile (then its short side is
    brought up to `size` first, as `crop` does). Tiles overlap when n * size exceeds the image.
    """
    arr = tiling_canvas(arr, size)
    return np.stack([arr[y:y + size, x:x + size] for y, x in tile_boxes(*arr.shape[:2], size, n)])


def load_image(source: ImageSource, spec: PreprocessSpec, name: str | None = None,
               max_pixels: int | None = DEFAULT_MAX_PIXELS, return_size: bool = False):
    """The shared entry point: any source -> uint8 CxHxW array at spec.image_size ([T,C,H,W] for tiles > 1).

    With `return_size`, also the decoded (height, width) before fitting, which the
    out-of-domain check compares with the training data.
    """
    arr = decode_image(source, name, max_pixels=max_pixels)
    size = arr.shape[:2]
    return (fit(arr, spec), size) if return_size else fit(arr, spec)


def identical_tiles(images: np.ndarray) -> np.ndarray:
    """[N,T,3,S,S] -> per image, whether all its tiles are one and the same (an image no larger than a tile).
    The last tile is compared with the first before the full check, so a batch of full-size photos costs one
    tile comparison per image instead of all of them (that full comparison was the attribution head's
    measurable cost: BENCHMARKS.md)."""
    n = images.shape[0]
    same = (images[:, -1] == images[:, 0]).reshape(n, -1).all(1)
    for i in np.flatnonzero(same):
        same[i] = bool((images[i] == images[i, :1]).all())
    return same


def fit(arr: np.ndarray, spec: PreprocessSpec) -> np.ndarray:
    """Decoded HxWx3 RGB -> the model's uint8 input: [3,S,S], or [T,3,S,S] when the spec tiles."""
    if spec.tiles > 1:
        return np.ascontiguousarray(tile_grid(arr, spec.image_size, spec.tiles).transpose(0, 3, 1, 2))
    return np.ascontiguousarray(fit_to_size(arr, spec.image_size, spec.resize_policy).transpose(2, 0, 1))


def image_info(source: ImageSource, name: str | None = None) -> dict:
    """Size and mode of an image without decoding its pixels (for out-of-domain checks)."""
    name = name or (str(source) if isinstance(source, (str, Path)) else "<image>")
    if isinstance(source, np.ndarray):
        return {"width": int(source.shape[1]), "height": int(source.shape[0]), "mode": "array", "format": None}
    img = _open(source, name)
    return {"width": img.size[0], "height": img.size[1], "mode": img.mode, "format": img.format}

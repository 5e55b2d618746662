"""A corpus of hostile and odd uploads, generated in memory (nothing is stored in the repo).

Each case is (id, file name sent by the client, bytes, expect) where expect is
"verdict" (a readable image: must get a verdict), "reject" (must get a clean 422 naming the file)
or "bad-request" (the request itself is malformed: a clean 400),
and optionally the id of a case whose verdict it must equal (e.g. EXIF-rotated vs upright).
"""

from __future__ import annotations

import io
import struct
import zipfile
import zlib
from pathlib import Path

import numpy as np
from PIL import Image

SAMPLES = Path(__file__).resolve().parents[1] / "src" / "synthcheck" / "samples"


def _save(img: Image.Image, fmt: str, **kw) -> bytes:
    buf = io.BytesIO()
    img.save(buf, fmt, **kw)
    return buf.getvalue()


def _chunk(kind: bytes, data: bytes, crc: int | None = None) -> bytes:
    c = zlib.crc32(kind + data) if crc is None else crc
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", c & 0xFFFFFFFF)


def png_raw(width: int, height: int, bit_depth: int, colour_type: int, idat: bytes, bad_crc: bool = False) -> bytes:
    """A PNG written chunk by chunk, so headers can lie about the body."""
    ihdr = struct.pack(">IIBBBBB", width, height, bit_depth, colour_type, 0, 0, 0)
    return (b"\x89PNG\r\n\x1a\n" + _chunk(b"IHDR", ihdr) + _chunk(b"IDAT", idat, 0 if bad_crc else None)
            + _chunk(b"IEND", b""))


def _jpeg_with_dims(jpeg: bytes, width: int, height: int) -> bytes:
    """Rewrite the SOF0 frame size of a baseline JPEG (header claims a huge image, body stays tiny)."""
    i = jpeg.index(b"\xff\xc0")
    return jpeg[:i + 5] + struct.pack(">HH", height, width) + jpeg[i + 9:]


def corpus() -> list[tuple[str, str, bytes, str, str | None]]:
    base = Image.open(SAMPLES / "ai_cifake_102_9.jpg").convert("RGB")
    real = Image.open(SAMPLES / "real_cifake_0102_4.jpg").convert("RGB")
    rng = np.random.default_rng(0)
    jpg = (SAMPLES / "ai_cifake_102_9.jpg").read_bytes()
    png = _save(base, "PNG")
    big = base.resize((256, 256), Image.BICUBIC)
    big_jpg = _save(big, "JPEG", quality=90)

    cases: list[tuple[str, str, bytes, str, str | None]] = []

    def add(cid, name, data, expect, same_as=None):
        cases.append((cid, name, data, expect, same_as))

    # --- not images at all, or not ours -------------------------------------------------------
    add("empty", "empty.jpg", b"", "reject")
    add("text-as-jpg", "notes.jpg", b"just some text, not a picture\n" * 10, "reject")
    add("html-as-jpg", "page.jpg", b"<!DOCTYPE html><html><body><script>alert(1)</script></body></html>", "reject")
    add("svg-as-jpg", "vector.jpg", b'<?xml version="1.0"?><svg xmlns="http://www.w3.org/2000/svg" width="10" '
                                     b'height="10"><script>alert(1)</script></svg>', "reject")
    zbuf = io.BytesIO()
    with zipfile.ZipFile(zbuf, "w") as z:
        z.writestr("a.txt", "hello")
    add("zip-as-jpg", "archive.jpg", zbuf.getvalue(), "reject")
    add("pdf-as-png", "doc.png", b"%PDF-1.7\n1 0 obj<<>>endobj\ntrailer<<>>\n%%EOF", "reject")
    add("elf-as-png", "prog.png", b"\x7fELF\x02\x01\x01" + bytes(100), "reject")
    add("json-as-jpg", "data.jpg", b'{"image": "no"}', "reject")
    add("random-bytes", "noise.jpg", rng.integers(0, 256, 2048, dtype=np.uint8).tobytes(), "reject")
    add("eps-refused", "figure.eps", b"%!PS-Adobe-3.0 EPSF-3.0\n%%BoundingBox: 0 0 10 10\nshowpage\n", "reject")
    add("psd-refused", "layers.jpg", b"8BPS\x00\x01" + bytes(200), "reject")
    add("ico-refused", "favicon.jpg", _save(base, "ICO"), "reject")

    # --- broken images -------------------------------------------------------------------------
    add("truncated-jpeg", "cut.jpg", big_jpg[: len(big_jpg) // 2], "reject")
    add("truncated-png", "cut.png", _save(big, "PNG")[:3000], "reject")
    add("jpeg-soi-eoi-only", "hollow.jpg", b"\xff\xd8\xff\xd9", "reject")
    add("jpeg-header-only", "head.jpg", jpg[:40], "reject")
    add("png-signature-only", "sig.png", b"\x89PNG\r\n\x1a\n", "reject")
    add("wrong-magic-png", "magic.png", b"\x00\x00\x00\x00" + png[4:], "reject")
    add("png-idat-garbage", "idat.png", png_raw(8, 8, 8, 2, b"not zlib at all"), "reject")
    add("html-with-png-magic", "trick.png", b"\x89PNG\r\n\x1a\n<html><script>alert(1)</script></html>", "reject")
    add("gif-js-polyglot", "poly.gif", b"GIF89a/*\x00\x00*/=1;alert(document.domain);//", "reject")
    add("tiff-corrupt", "bad.tif", _save(big, "TIFF")[:200], "reject")

    # --- size attacks --------------------------------------------------------------------------
    add("png-30000x30000-header", "huge.png", png_raw(30000, 30000, 8, 2, zlib.compress(b"\x00" * 100)), "reject")
    add("jpeg-30000x30000-header", "huge.jpg", _jpeg_with_dims(_save(base, "JPEG", quality=90), 30000, 30000), "reject")
    # decompression bomb: 10000 x 10000 grey (100 MP) from ~100 KB of zlib
    row = b"\x00" + bytes(10000)
    add("png-bomb-100mp", "bomb.png", png_raw(10000, 10000, 8, 0, zlib.compress(row * 10000, 9)), "reject")
    add("gif-0x0", "zero.gif", b"GIF89a\x00\x00\x00\x00\x00\x00\x00,\x00\x00\x00\x00\x00\x00\x00\x00\x00\x02\x00;",
        "reject")

    # --- odd but valid: must get a verdict ------------------------------------------------------
    add("1x1-jpeg", "dot.jpg", _save(Image.new("RGB", (1, 1), (120, 30, 200)), "JPEG"), "verdict")
    add("1x1-png", "dot.png", _save(Image.new("RGB", (1, 1), (0, 0, 0)), "PNG"), "verdict")
    add("cmyk-jpeg", "print.jpg", _save(big.convert("CMYK"), "JPEG", quality=90), "verdict")
    add("grey-jpeg", "grey.jpg", _save(big.convert("L"), "JPEG"), "verdict")
    add("progressive-jpeg", "prog.jpg", _save(big, "JPEG", progressive=True, quality=85), "verdict")
    add("png-16bit-grey", "deep.png", _save(Image.fromarray((np.asarray(big.convert("L"), np.uint16) * 257)), "PNG"),
        "verdict")
    rgb16 = (np.asarray(base, np.uint16) * 257).astype(">u2")
    raw16 = b"".join(b"\x00" + rgb16[y].tobytes() for y in range(rgb16.shape[0]))
    add("png-16bit-rgb", "deep-rgb.png", png_raw(32, 32, 16, 2, zlib.compress(raw16)), "verdict")
    pal = base.convert("P", palette=Image.ADAPTIVE, colors=64)
    add("png-palette-alpha", "pal.png", _save(pal, "PNG", transparency=0), "verdict")
    rgba = big.convert("RGBA")
    rgba.putalpha(128)
    add("png-rgba", "alpha.png", _save(rgba, "PNG"), "verdict")
    add("png-la", "la.png", _save(big.convert("LA"), "PNG"), "verdict")
    add("png-1bit", "bw.png", _save(big.convert("1"), "PNG"), "verdict")
    frames = [base, real, base.transpose(Image.FLIP_LEFT_RIGHT)]
    add("animated-gif", "anim.gif", _save(frames[0], "GIF", save_all=True, append_images=frames[1:], duration=100,
                                          loop=0), "verdict")
    add("webp", "photo.webp", _save(big, "WEBP", quality=90), "verdict")
    add("bmp", "photo.bmp", _save(base, "BMP"), "verdict")
    add("tiff", "photo.tif", _save(base, "TIFF"), "verdict")
    add("tiff-float", "float.tif", _save(Image.fromarray(np.asarray(big.convert("L"), np.float32) / 255.0, "F"),
                                         "TIFF"), "verdict")
    add("tiff-multipage", "pages.tif", _save(base, "TIFF", save_all=True, append_images=[real]), "verdict")
    add("wide-20000x2", "strip.png", _save(Image.new("RGB", (20000, 2), (90, 90, 90)), "PNG"), "verdict")
    # EXIF orientation 6 (rotate 90 CW to view): stored pixels are the upright image turned CCW
    exif = Image.Exif()
    exif[0x0112] = 6
    add("upright-png", "upright.png", _save(big, "PNG"), "verdict")
    add("exif-rotated-png", "rotated.png", _save(big.transpose(Image.ROTATE_90), "PNG", exif=exif.tobytes()),
        "verdict", "upright-png")
    exif_big = Image.Exif()
    exif_big[0x010E] = "x" * 60000  # ImageDescription: a 60 KB EXIF block
    add("huge-exif-jpeg", "exif.jpg", _save(big, "JPEG", quality=90, exif=exif_big.tobytes()), "verdict")
    add("jpeg-plus-zip-polyglot", "polyglot.jpg", big_jpg + zbuf.getvalue(), "verdict")
    add("png-plus-html-polyglot", "polyglot.png", png + b"<html><script>alert(1)</script></html>", "verdict")
    add("png-sent-as-jpg", "really-a-png.jpg", png, "verdict")
    # a wrong chunk CRC over valid data: Pillow, like browsers, does not check CRCs when loading
    add("png-bad-crc", "crc.png", png_raw(8, 8, 8, 2, zlib.compress(bytes(8 * 25)), bad_crc=True), "verdict")

    # --- names are data ------------------------------------------------------------------------
    add("unicode-name", "фото 📷 صورة.jpg", jpg, "verdict")
    add("path-traversal-name", "../../../../etc/passwd", jpg, "verdict")
    add("control-chars-name", "a\r\nX-Injected: 1\x00b.jpg", jpg, "verdict")
    add("html-name", "<img src=x onerror=alert(1)>.jpg", jpg, "verdict")
    add("very-long-name", "n" * 4000 + ".jpg", jpg, "verdict")
    # past the multipart parser's header-line limit the whole request is refused (400), not the file
    add("oversized-part-header", "n" * 20000 + ".jpg", jpg, "bad-request")
    return cases

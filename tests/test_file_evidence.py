"""Evidence from the file beyond metadata: generator watermarks (decoded bit for bit as the reference package
does) and the JPEG's compression history (encoder, quality, EXIF consistency, thumbnail, re-save trace)."""

import io
import struct

import numpy as np
import pytest
from PIL import Image

from synthcheck.data.preprocess import decode_image
from synthcheck.inference import jpeg_history, watermark
from synthcheck.inference.metadata import combine_verdict, history_summary, inspect


def natural(h: int = 512, w: int = 512, seed: int = 0) -> np.ndarray:
    """A photo-like test image: smooth colour fields, edges and fine texture (made here, no shared data)."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:h, 0:w] / max(h, w)
    base = np.stack([np.sin(6 * xx + c) * np.cos(4 * yy - c) for c in (0.0, 1.3, 2.6)], -1) * 70 + 120
    for _ in range(12):  # discs with hard edges
        cy, cx, r = rng.uniform(0, 1, 3) * (h / max(h, w), w / max(h, w), 0.2)
        base[(yy - cy) ** 2 + (xx - cx) ** 2 < r * r] += rng.uniform(-60, 60, 3)
    base += rng.normal(0, 6, base.shape)
    return np.clip(base, 0, 255).astype(np.uint8)


def encode(rgb: np.ndarray, fmt: str = "PNG", **kw) -> bytes:
    b = io.BytesIO()
    Image.fromarray(rgb).save(b, fmt, **kw)
    return b.getvalue()


def by_field(ev, field):
    return [e for e in ev if e.field == field]


# --- watermarks -------------------------------------------------------------------------------------------------

def test_match_rule():
    # at most a 1e-6 chance that uniform random bits pass, per message
    assert [watermark.allowed_errors(n) for n in (32, 48, 136)] == [2, 7, 40]


@pytest.mark.parametrize("key", [m.key for m in watermark.MESSAGES])
def test_watermarked_image_is_strong_ai_evidence_and_plain_one_is_not(key):
    msg = next(m for m in watermark.MESSAGES if m.key == key)
    marked = watermark.embed(natural(seed=1), msg.bits)
    ev = inspect(encode(marked))
    (wm,) = by_field(ev, "invisible watermark (DWT-DCT)")
    assert (wm.indicates, wm.strength) == ("ai", "strong") and msg.generator in wm.value
    assert combine_verdict("real", ev)[0] == "ai"
    plain = by_field(inspect(encode(natural(seed=1))), "invisible watermark (DWT-DCT)")
    assert [(e.indicates, e.value) for e in plain] == [("none", "no known mark")]
    assert combine_verdict("real", inspect(encode(natural(seed=1))))[0] == "real"


def test_small_images_are_not_checked_and_say_so():
    (wm,) = by_field(inspect(encode(natural(200, 600))), "invisible watermark (DWT-DCT)")
    assert wm.value == "not checked" and "under 256 px" in wm.note and wm.indicates == "none"


def test_watermark_is_read_from_the_pixels_as_stored_under_exif_rotation():
    msg = watermark.MESSAGES[2]
    stored = watermark.embed(natural(384, 512, seed=2), msg.bits)
    exif = Image.Exif()
    exif[0x0112] = 6  # shown rotated 90 degrees clockwise
    data = encode(stored, "PNG", exif=exif.tobytes())
    shown = decode_image(data)
    assert shown.shape[:2] == (512, 384)  # the detector sees it upright...
    ev = inspect(data, pixels=shown)      # ...and the check undoes the rotation
    assert any(e.indicates == "ai" and "XL" in e.value for e in ev)


def test_decoder_matches_the_reference_package_bit_for_bit():
    iw = pytest.importorskip("imwatermark", reason="invisible-watermark (installed by .ci/run, --no-deps) is absent")
    import cv2

    for seed, msg in enumerate(watermark.MESSAGES):
        rgb = natural(300 + 37 * seed, 520 - 44 * seed, seed=seed)
        enc = iw.WatermarkEncoder()
        enc.set_watermark("bits", list(msg.bits))
        ref_marked = enc.encode(np.ascontiguousarray(rgb[:, :, ::-1]), "dwtDct")[:, :, ::-1]
        assert np.array_equal(ref_marked, watermark.embed(rgb, msg.bits))  # same pixels as the generators shipped
        for img in (rgb, ref_marked, np.asarray(Image.open(io.BytesIO(encode(ref_marked, "JPEG", quality=80))))):
            ref = iw.WatermarkDecoder("bits", len(msg.bits)).decode(np.ascontiguousarray(img[:, :, ::-1]), "dwtDct")
            assert np.array_equal(np.asarray(ref, bool), watermark.decode(img, len(msg.bits)))
    # the U plane is OpenCV's on every 8-bit colour
    v = np.arange(256, dtype=np.uint8)
    r, g, b = (a.reshape(4096, 4096) for a in np.meshgrid(v, v, v, indexing="ij"))
    rgb = np.stack([r, g, b], -1)
    assert np.array_equal(cv2.cvtColor(np.ascontiguousarray(rgb[:, :, ::-1]), cv2.COLOR_BGR2YUV)[..., 1],
                          watermark.u_plane(rgb))


# --- JPEG history -----------------------------------------------------------------------------------------------

@pytest.mark.parametrize("quality", [50, 75, 92])
def test_ijg_encoder_and_quality(quality):
    head = jpeg_history.parse_header(encode(natural(64, 64), "JPEG", quality=quality))
    assert jpeg_history.ijg_quality(head.table(0), head.table(1)) == (quality, True)
    assert head.subsampling == "4:2:0" and head.frame == "baseline" and head.huffman == "standard"
    ev = inspect(encode(natural(64, 64), "JPEG", quality=quality, optimize=True, subsampling=0))
    (enc,) = by_field(ev, "last encoder")
    assert enc.value == f"an IJG-standard encoder at quality {quality}" and "4:4:4" in enc.note and "optimised" in enc.note


def test_resave_trace_on_test_made_single_and_double_saves():
    found = {"single": 0, "double": 0}
    for seed in range(4):
        rgb = natural(seed=10 + seed)
        once = encode(rgb, "JPEG", quality=90)
        twice = encode(np.asarray(Image.open(io.BytesIO(encode(rgb, "JPEG", quality=70)))), "JPEG", quality=90)
        for kind, data in (("single", once), ("double", twice)):
            (trace,) = by_field(inspect(data), "re-save trace")
            found[kind] += trace.value == "sign of a second save"
    assert found == {"single": 0, "double": 4}


def test_resave_trace_cannot_see_through_fine_quantisation():
    (trace,) = by_field(inspect(encode(natural(), "JPEG", quality=100)), "re-save trace")
    assert trace.value == "can't tell about a second save"


def _exif_with_thumbnail(make: str, thumb: bytes) -> bytes:
    """EXIF (little-endian TIFF) with IFD0 naming the maker and IFD1 holding a JPEG thumbnail."""
    make_b = make.encode() + b"\x00"
    ifd0_at, ifd1_at = 8, 8 + 2 + 12 + 4
    make_at = ifd1_at + 2 + 2 * 12 + 4
    thumb_at = make_at + len(make_b)
    ifd0 = struct.pack("<H", 1) + struct.pack("<HHII", 0x010F, 2, len(make_b), make_at) + struct.pack("<I", ifd1_at)
    ifd1 = (struct.pack("<H", 2) + struct.pack("<HHII", 0x0201, 4, 1, thumb_at)
            + struct.pack("<HHII", 0x0202, 4, 1, len(thumb)) + struct.pack("<I", 0))
    tiff = b"II*\x00" + struct.pack("<I", ifd0_at) + ifd0 + ifd1 + make_b + thumb
    return b"Exif\x00\x00" + tiff


def test_exif_thumbnail_and_camera_consistency(monkeypatch):
    rgb = natural(480, 640, seed=5)
    own = encode(np.asarray(Image.fromarray(rgb).resize((160, 120))), "JPEG", quality=80)
    other = encode(np.asarray(Image.fromarray(natural(480, 640, seed=99)).resize((160, 120))), "JPEG", quality=80)
    same = inspect(encode(rgb, "JPEG", quality=95, exif=_exif_with_thumbnail("Canon", own)))
    (thumb,) = by_field(same, "EXIF thumbnail")
    assert thumb.value.startswith("matches")
    (thumb,) = by_field(inspect(encode(rgb, "JPEG", quality=95, exif=_exif_with_thumbnail("Canon", other))),
                        "EXIF thumbnail")
    assert thumb.value.startswith("differs") and "changed after" in thumb.note
    # IJG tables under a camera's name: software re-saved it (unless that camera writes standard tables)
    (cons,) = by_field(same, "EXIF consistency")
    assert cons.value == "EXIF names Canon, last written by IJG-standard software"
    # tables from the firmware list: consistent with that maker, or another maker's
    custom = [list(range(2, 66)), [9] * 64]
    data = encode(rgb, "JPEG", qtables=custom, exif=_exif_with_thumbnail("Canon", own))
    key = jpeg_history.tables_key(jpeg_history.parse_header(data))
    monkeypatch.setattr(jpeg_history, "firmware_tables", lambda: {key: ["Canon PowerShot Test"]})
    assert by_field(inspect(data), "EXIF consistency")[0].value == "consistent with Canon"
    assert by_field(inspect(data), "last encoder")[0].value == "camera firmware (Canon PowerShot Test)"
    other_maker = encode(rgb, "JPEG", qtables=custom, exif=_exif_with_thumbnail("Nikon", own))
    assert by_field(inspect(other_maker), "EXIF consistency")[0].value == "EXIF names Nikon, tables are Canon PowerShot Test's"


def test_file_history_is_information_and_never_a_verdict():
    ev = inspect(encode(np.asarray(Image.open(io.BytesIO(encode(natural(), "JPEG", quality=70)))), "JPEG", quality=90))
    history = [e for e in ev if e.source == "jpeg"]
    assert history and all((e.indicates, e.strength) == ("history", "info") for e in history)
    for pixels in ("ai", "real", "uncertain"):
        assert combine_verdict(pixels, ev) == (pixels, "pixels")
    assert history_summary(ev) == ("last written by an IJG-standard encoder at quality 90; camera metadata absent; "
                                   "sign of a second save; no known generator watermark")


def test_hostile_jpeg_headers_never_raise():
    good = encode(natural(64, 64), "JPEG", quality=80)
    for bad in (good[:40], good[:2] + b"\xff\xdb\x00\x05\x00", b"\xff\xd8" + b"\xff\xc4\xff\xff" + b"\x00" * 20):
        inspect(bad)  # no exception, whatever it finds
        jpeg_history.parse_header(bad)


def test_predict_runs_the_resave_trace_only_when_asked(tmp_path):
    """predict keeps the photo path within 10% (watermark and header checks only); --resave-check, inspect and
    the server add the pixel trace."""
    from synthcheck import Detector

    path = tmp_path / "twice.jpg"
    path.write_bytes(encode(np.asarray(Image.open(io.BytesIO(encode(natural(), "JPEG", quality=70)))), "JPEG", quality=90))
    det = Detector.load("default")
    (p,) = det.predict([path])
    fields = {e["field"] for e in p.evidence}
    assert {"last encoder", "EXIF consistency", "invisible watermark (DWT-DCT)"} <= fields and "re-save trace" not in fields
    det.resave_check = True
    (p,) = det.predict([path])
    assert [e["value"] for e in p.evidence if e["field"] == "re-save trace"] == ["sign of a second save"]
    from synthcheck.serving.service import ServeSettings

    assert ServeSettings().resave_check and not ServeSettings.from_env(resave_check=False).resave_check

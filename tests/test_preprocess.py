import io

import numpy as np
import pytest
from PIL import Image

from synthcheck.data.preprocess import ImageError, PreprocessSpec, decode_image, fit_to_size, load_image


def _bytes(img: Image.Image, fmt: str, **kw) -> bytes:
    b = io.BytesIO()
    img.save(b, fmt, **kw)
    return b.getvalue()


@pytest.mark.parametrize("mode", ["RGB", "L", "1", "P", "RGBA", "LA", "CMYK", "I;16", "I", "F", "YCbCr"])
def test_every_colour_mode_becomes_rgb_uint8(mode):
    img = Image.new("RGB", (20, 10), (200, 100, 50)).convert(mode) if mode not in ("I;16",) else Image.new("I;16", (20, 10), 40000)
    fmt = {"CMYK": "JPEG", "YCbCr": "JPEG", "I": "TIFF", "F": "TIFF", "I;16": "PNG"}.get(mode, "PNG")
    arr = decode_image(_bytes(img, fmt), "x")
    assert arr.dtype == np.uint8 and arr.shape == (10, 20, 3)


def test_sixteen_bit_is_scaled_not_clipped():
    arr = decode_image(_bytes(Image.new("I;16", (4, 4), 65535), "PNG"), "x")
    assert arr.min() == 255
    arr = decode_image(_bytes(Image.new("I;16", (4, 4), 257 * 100), "PNG"), "x")
    assert arr.max() == 100


def test_alpha_composited_on_white_and_palette_transparency():
    rgba = Image.new("RGBA", (4, 4), (0, 0, 0, 0))
    assert decode_image(_bytes(rgba, "PNG"), "x").min() == 255
    p = Image.new("P", (4, 4), 0)
    p.putpalette([10, 20, 30] * 256)
    data = _bytes(p, "PNG", transparency=0)
    assert decode_image(data, "x").min() == 255


def test_exif_orientation_applied():
    img = Image.new("RGB", (40, 20), (255, 0, 0))
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90 degrees clockwise on display
    arr = decode_image(_bytes(img, "JPEG", exif=exif.tobytes()), "x")
    assert arr.shape[:2] == (40, 20)


@pytest.mark.parametrize("data,problem", [
    (b"", "empty"),
    (b"hello world, not an image", "the content is text"),
    (b"<svg xmlns='http://www.w3.org/2000/svg'></svg>", "an SVG"),
])
def test_bad_bytes_raise_image_error_naming_file(data, problem):
    with pytest.raises(ImageError) as e:
        decode_image(data, "bad.jpg")
    assert "bad.jpg" in str(e.value) and problem in str(e.value)


def test_truncated_jpeg_and_png():
    img = Image.fromarray(np.random.default_rng(0).integers(0, 255, (64, 64, 3), dtype=np.uint8))
    for fmt in ("JPEG", "PNG"):
        data = _bytes(img, fmt)
        with pytest.raises(ImageError, match="truncated|corrupt|cannot"):
            decode_image(data[: len(data) // 2], f"cut.{fmt}")


def test_pixel_limit_and_missing_file(tmp_path):
    data = _bytes(Image.new("RGB", (300, 300)), "PNG")
    with pytest.raises(ImageError, match="over the limit"):
        decode_image(data, "big.png", max_pixels=10_000)
    with pytest.raises(ImageError, match="not found"):
        decode_image(tmp_path / "nope.png")
    with pytest.raises(ImageError, match="directory"):
        decode_image(tmp_path)


def test_animated_gif_uses_first_frame():
    frames = [Image.new("RGB", (8, 8), c) for c in [(255, 0, 0), (0, 0, 255)]]
    b = io.BytesIO()
    frames[0].save(b, "GIF", save_all=True, append_images=frames[1:])
    arr = decode_image(b.getvalue(), "anim.gif")
    assert arr[0, 0, 0] > 200 and arr[0, 0, 2] < 50


@pytest.mark.parametrize("policy", ["resize", "center_crop", "crop"])
def test_fit_policies_give_square_size(policy):
    arr = np.random.default_rng(0).integers(0, 255, (50, 80, 3), dtype=np.uint8)
    out = fit_to_size(arr, 32, policy)
    assert out.shape == (32, 32, 3) and out.dtype == np.uint8


def test_crop_keeps_native_pixels():
    arr = np.random.default_rng(0).integers(0, 255, (64, 64, 3), dtype=np.uint8)
    out = fit_to_size(arr, 32, "crop")
    assert np.array_equal(out, arr[16:48, 16:48])


def test_load_image_is_chw_and_accepts_all_source_types(tmp_path):
    img = Image.new("RGB", (32, 32), (1, 2, 3))
    path = tmp_path / "a.png"
    img.save(path)
    spec = PreprocessSpec(32)
    outs = [load_image(s, spec) for s in (path, str(path), path.read_bytes(), img, np.asarray(img))]
    for o in outs:
        assert o.shape == (3, 32, 32) and np.array_equal(o, outs[0])

"""`synthcheck pairs`: tiny-autoencoder loading (strict), JPEG tables carried over, layout, resume, bad files."""

from __future__ import annotations

import csv
import io

import numpy as np
import pytest
import torch
from PIL import Image, JpegImagePlugin
from safetensors.torch import save_file

from synthcheck.data.autoencoders import FAMILIES, TinyAutoencoder, load_autoencoder
from synthcheck.data.folders import load_imageset
from synthcheck.data.pairs import encode_like, make_pairs, reconstruct
from synthcheck.data.preprocess import PreprocessSpec

from conftest import SHARED


def _save_random(family: str, folder, seed=0):
    """A randomly initialised autoencoder of the family's exact shape, saved under the published file names."""
    torch.manual_seed(seed)
    m = TinyAutoencoder(family)
    enc, dec = FAMILIES[family].files
    folder.mkdir(parents=True, exist_ok=True)
    for part, name in ((m.encoder, enc), (m.decoder, dec)):
        state = {k: v.half() for k, v in part.state_dict().items()}
        if name.endswith(".safetensors"):
            save_file(state, str(folder / name))
        else:
            torch.save(state, folder / name)
    return m


@pytest.mark.parametrize("family", sorted(FAMILIES))
def test_each_family_loads_by_exact_key_and_shape_match(tmp_path, family):
    ref = _save_random(family, tmp_path)
    m = load_autoencoder(family, tmp_path)
    for a, b in zip(ref.state_dict().values(), m.state_dict().values()):
        assert torch.allclose(a.half().float(), b)
    x = torch.rand(1, 3, 40, 48)
    assert m.encoder(x).shape == (1, FAMILIES[family].latent_channels, 5, 6)
    assert m(x).shape == x.shape


def test_a_file_of_another_family_is_refused_with_its_name(tmp_path):
    _save_random("taesd", tmp_path / "sd")
    (tmp_path / "sd" / "taesd_encoder.safetensors").rename(tmp_path / "sd" / "taef1_encoder.safetensors")
    (tmp_path / "sd" / "taesd_decoder.safetensors").rename(tmp_path / "sd" / "taef1_decoder.safetensors")
    with pytest.raises(ValueError, match="taef1_encoder.safetensors: not a taef1 encoder"):
        load_autoencoder("taef1", tmp_path / "sd")
    with pytest.raises(FileNotFoundError, match="taef2_encoder.pth"):
        load_autoencoder("taef2", tmp_path / "nothing-here")


def test_reconstruction_keeps_odd_sizes_and_tiles_large_images(tmp_path):
    m = _save_random("taesd", tmp_path) and load_autoencoder("taesd", tmp_path)
    rgb = np.random.default_rng(0).integers(0, 255, (37, 53, 3), dtype=np.uint8)
    assert reconstruct(m, rgb).shape == (37, 53, 3)
    big = np.random.default_rng(1).integers(0, 255, (72, 60, 3), dtype=np.uint8)
    whole, tiled = reconstruct(m, big), reconstruct(m, big, tile=48, margin=8)
    assert tiled.shape == whole.shape == big.shape


def test_jpeg_reconstructions_keep_the_originals_tables_and_subsampling():
    rgb = np.random.default_rng(0).integers(0, 255, (64, 64, 3), dtype=np.uint8)
    for quality, sub in ((70, 0), (93, 2)):
        buf = io.BytesIO()
        Image.fromarray(rgb).save(buf, "JPEG", quality=quality, subsampling=sub)
        out, ext = encode_like(buf.getvalue(), rgb[::-1].copy())
        a, b = Image.open(buf), Image.open(io.BytesIO(out))
        assert ext == ".jpg" and a.quantization == b.quantization
        assert JpegImagePlugin.get_sampling(a) == JpegImagePlugin.get_sampling(b) == sub
    buf = io.BytesIO()
    Image.fromarray(rgb).save(buf, "PNG")
    out, ext = encode_like(buf.getvalue(), rgb)
    assert ext == ".png" and np.array_equal(np.asarray(Image.open(io.BytesIO(out))), rgb)  # lossless


@pytest.fixture
def photos(tmp_path):
    d = tmp_path / "photos" / "2024"
    d.mkdir(parents=True)
    rng = np.random.default_rng(0)
    for i in range(3):
        Image.fromarray(rng.integers(0, 255, (48, 56, 3), dtype=np.uint8)).save(d / f"cam_{i}.jpg", quality=80)
    Image.fromarray(rng.integers(0, 255, (40, 40, 3), dtype=np.uint8)).save(d / "screen.png")
    (d / "broken.jpg").write_bytes(b"\xff\xd8\xff\xe0" + b"\x00" * 40)
    (d / "empty.jpg").write_bytes(b"")
    (d / "notes.txt").write_text("not an image")
    return tmp_path / "photos"


@pytest.mark.slow
def test_pairs_layout_manifest_resume_and_bad_files(tmp_path, photos):
    weights = tmp_path / "w"
    _save_random("taef2", weights)
    out = tmp_path / "pairs"
    s = make_pairs([photos], out, "taef2", weights, workers=1, bf16=False, progress=False)
    assert s["written"] == 4 and s["skipped"] == 0
    assert sorted(n.split("/")[-1] for n, _ in s["failed"]) == ["broken.jpg", "empty.jpg"]
    rows = list(csv.DictReader(open(out / "manifest.csv")))
    fakes = [r for r in rows if r["label"] == "ai"]
    assert len(fakes) == 4 and all(r["group"] == "aligned:taef2" and r["autoencoder"] == "taef2" for r in fakes)
    assert {r["format"] for r in fakes} == {"jpeg", "png"}
    for r in fakes:
        fake, real = out / r["path"], out / r["path"].replace("fake/", "real/")
        real = next(real.parent.glob(real.stem + ".*"))
        assert Image.open(fake).size == Image.open(real).size
        if r["format"] == "jpeg":
            assert Image.open(fake).quantization == Image.open(real).quantization
    # train reads it: groups from the manifest, each fake knows its original's content digest
    s_ = load_imageset(out, PreprocessSpec(32, "resize"), progress=False)
    assert sorted(set(s_.groups)) == ["aligned:taef2", "real:photos"] and len(s_) == 8
    from synthcheck.data.store import digest
    originals = {digest(p.read_bytes()).hex() for p in (photos / "2024").glob("*.*")}
    assert {t for t, g in zip(s_.twins, s_.groups) if g.startswith("aligned")} <= originals
    # resume: nothing is done twice; the bad files are reported again
    again = make_pairs([photos], out, "taef2", weights, workers=1, bf16=False, progress=False)
    assert again["written"] == 0 and again["skipped"] == 4 and len(again["failed"]) == 2
    assert len(list(csv.DictReader(open(out / "manifest.csv")))) == 8


def test_cli_pairs_names_missing_weights_in_one_line(tmp_path, photos):
    from typer.testing import CliRunner

    from synthcheck.cli import app

    r = CliRunner().invoke(app, ["pairs", str(photos), "--out", str(tmp_path / "o"), "--weights-dir", str(tmp_path / "none")])
    assert r.exit_code == 2 and "taef2_encoder.pth" in r.output and "Traceback" not in r.output


@pytest.mark.shared
@pytest.mark.skipif(not (SHARED / "weights" / "taef2_decoder.pth").exists(), reason="needs ../shared/weights")
def test_published_taef2_round_trip_error_is_as_documented():
    m = load_autoencoder("taef2", SHARED / "weights")
    yy, xx = np.mgrid[0:128, 0:128]
    img = np.stack([xx * 2, yy * 2, (xx + yy)], -1).clip(0, 255).astype(np.uint8)  # smooth: easy to reconstruct
    rec = reconstruct(m, img)
    assert np.abs(rec.astype(float) - img).mean() / 255 < 0.03


def test_a_folder_named_real_gives_its_photos_and_zero_results_say_why(tmp_path):
    """`synthcheck pairs my_photos/real` makes pairs (it once found none: the folder itself is the label folder),
    and a run that finds no real photo says why instead of "0 pair(s) written"."""
    from typer.testing import CliRunner

    from synthcheck.cli import app
    from synthcheck.data.pairs import iter_originals

    rng = np.random.default_rng(1)
    for label, n in (("real", 2), ("fake", 1)):
        (tmp_path / "my_photos" / label).mkdir(parents=True)
        for i in range(n):
            Image.fromarray(rng.integers(0, 255, (40, 48, 3), dtype=np.uint8)).save(tmp_path / "my_photos" / label / f"{i}.jpg")
    real, fake = tmp_path / "my_photos" / "real", tmp_path / "my_photos" / "fake"
    assert sorted(o.short for o in iter_originals([real])) == ["real/0.jpg", "real/1.jpg"]
    assert len(list(iter_originals([tmp_path / "my_photos"]))) == 2  # a labelled layout: its real photos only
    ignored = {}
    assert list(iter_originals([fake], ignored)) == [] and sum(ignored.values()) == 1
    weights = tmp_path / "w"
    _save_random("taef2", weights)
    run = CliRunner().invoke
    r = run(app, ["pairs", str(fake), "--out", str(tmp_path / "o1"), "--weights-dir", str(weights), "-q"])
    assert r.exit_code == 1 and "no real photos found" in r.output and "1 file(s) not in a real-photo folder" in r.output
    r = run(app, ["pairs", str(real), "--out", str(tmp_path / "o2"), "--weights-dir", str(weights), "-q",
                  "--workers", "1", "--precision", "fp32"])
    assert r.exit_code == 0 and "2 pair(s) written" in r.output

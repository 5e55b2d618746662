"""`synthcheck build-data`: recipes -> corpus, on small git repositories these tests make themselves.

Checked: files are copied byte for byte or cut losslessly; a missing blob, a wrong sha256 and a crop that would
need re-encoding are named and skipped; duplicates (same bytes, a resized copy, a pack's crop at its own offsets)
are dropped with what they copy; the lockbox is built apart and keeps a picture also listed for training; a held-out
repository is refused case-insensitively before anything is read; an interrupted build resumes from its state;
without a snapshot the pinned commit is cloned.
"""

from __future__ import annotations

import csv
import hashlib
import io
import shutil
import subprocess
import tarfile
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from synthcheck.analysis.corpus import build_corpus
from synthcheck.data.folders import iter_source
from synthcheck.data.recipes import RecipeError, load_recipes

GIT = shutil.which("git")
pytestmark = pytest.mark.skipif(GIT is None, reason="git is not installed")


def _photo(seed: int, w: int = 640, h: int = 480) -> np.ndarray:
    rng = np.random.default_rng(seed)
    small = rng.integers(0, 256, (h // 16, w // 16, 3), dtype=np.uint8)
    img = np.asarray(Image.fromarray(small).resize((w, h), Image.BICUBIC)).astype(np.int16)
    return np.clip(img + rng.integers(-6, 7, img.shape), 0, 255).astype(np.uint8)


def _jpeg(arr: np.ndarray, quality: int = 90, exif_make: str | None = None, **kw) -> bytes:
    img = Image.fromarray(arr)
    buf = io.BytesIO()
    if exif_make:
        exif = Image.Exif()
        exif[0x010F], exif[0x0110] = exif_make, "Test 1"
        kw["exif"] = exif.tobytes()
    img.save(buf, format="JPEG", quality=quality, **kw)
    return buf.getvalue()


def _png(arr: np.ndarray) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(arr).save(buf, format="PNG")
    return buf.getvalue()


def _git_repo(root: Path, files: dict[str, bytes]) -> str:
    root.mkdir(parents=True)
    for rel, data in files.items():
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_bytes(data)
    env = ["-c", "user.name=t", "-c", "user.email=t@t", "-c", "commit.gpgsign=false"]
    subprocess.run([GIT, "init", "-q", str(root)], check=True)
    subprocess.run([GIT, "-C", str(root), "add", "-A"], check=True)
    subprocess.run([GIT, "-C", str(root), *env, "commit", "-q", "-m", "images"], check=True)
    return subprocess.run([GIT, "-C", str(root), "rev-parse", "HEAD"], check=True, capture_output=True,
                          text=True).stdout.strip()


def _sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _source(repo, commit, label, generator, family, collection, split, files) -> str:
    lines = ["[[source]]", f'repository = "{repo}"', f'commit = "{commit}"', f'label = "{label}"',
             f'generator = "{generator}"', f'family = "{family}"', f'collection = "{collection}"', f'split = "{split}"',
             'looks = "photo"', 'licence = "test"', 'note = "made by the test"']
    for path, sha, extra in files:
        lines += ["[[source.files]]", f'path = "{path}"', f'sha256 = "{sha}"'] + extra
    return "\n".join(lines) + "\n\n"


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    """Two repositories (as bare snapshots in a mirrors folder and as clonable remotes), a pack with a crop of one
    gallery image, recipes for both."""
    tmp = tmp_path_factory.mktemp("build")
    sheet = np.concatenate([_photo(1, 200, 300), np.full((300, 20, 3), 255, np.uint8), _photo(2, 200, 300)], 1)
    gallery = {"img/sheet.png": _png(sheet), "img/one.png": _png(_photo(3)), "img/two.jpg": _jpeg(_photo(4)),
               "img/grey.jpg": _jpeg(_photo(5)[..., 0]), "img/colour.jpg": _jpeg(_photo(6), subsampling=2),
               "img/packed.png": _png(_photo(7, 1024, 768)), "img/anim.webp": b""}
    buf = io.BytesIO()
    Image.fromarray(_photo(8)).save(buf, format="WEBP", quality=90)
    gallery["img/anim.webp"] = buf.getvalue()
    cam = {"photos/a.jpg": _jpeg(_photo(10), exif_make="Pixel Co"),
           "photos/b.jpg": _jpeg(_photo(11), exif_make="Phone Inc"),
           "photos/a_copy.jpg": _jpeg(_photo(10), exif_make="Pixel Co"),  # same bytes as a.jpg
           "photos/small_a.jpg": _jpeg(np.asarray(Image.fromarray(_photo(10)).resize((320, 240), Image.LANCZOS)),
                                       quality=80),  # a resized copy of a.jpg
           "photos/also_gallery.png": gallery["img/one.png"]}  # a training file that is also in the lockbox
    remotes, mirrors = tmp / "remotes", tmp / "mirrors"
    commits = {}
    for repo, files in (("Gal/gallery", gallery), ("Cam/photos", cam)):
        commits[repo] = _git_repo(remotes / repo, files)
        subprocess.run([GIT, "clone", "-q", "--bare", str(remotes / repo), str(mirrors / repo.replace("/", "+") / "repo")],
                       check=True)
    # a pack: the 512 x 512 crop at +256+128 of img/packed.png, saved as JPEG 92 like the shared packs
    pack_dir = tmp / "pack"
    (pack_dir / "ai").mkdir(parents=True)
    crop = _photo(7, 1024, 768)[128:640, 256:768]
    (pack_dir / "ai" / "src__gen__packed.jpg").write_bytes(_jpeg(crop, quality=92))
    with open(pack_dir / "manifest.csv", "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["path_in_tar", "label", "orig_width", "orig_height", "processing"])
        w.writerow(["ai/src__gen__packed.jpg", "ai", 1024, 768, "PIL center crop 512x512+256+128 (no resize), JPEG q92"])
    gal = [("img/sheet.png", _sha(gallery["img/sheet.png"]), ["crop = [0, 0, 200, 300]"]),
           ("img/sheet.png", _sha(gallery["img/sheet.png"]), ["crop = [220, 0, 200, 300]", 'looks = "illustration"']),
           ("img/one.png", _sha(gallery["img/one.png"]), []),
           ("img/two.jpg", _sha(gallery["img/two.jpg"]), []),
           ("img/grey.jpg", _sha(gallery["img/grey.jpg"]), ["crop = [64, 32, 256, 256]"]),
           ("img/colour.jpg", _sha(gallery["img/colour.jpg"]), ["crop = [8, 8, 256, 256]"]),  # 4:2:0: not aligned
           ("img/anim.webp", _sha(gallery["img/anim.webp"]), ["crop = [0, 0, 64, 64]"]),  # WebP: no lossless cut
           ("img/packed.png", _sha(gallery["img/packed.png"]), []),
           ("img/gone.png", "0" * 64, []),  # not in the commit
           ("img/two.jpg", "1" * 64, ["crop = [0, 0, 16, 16]"])]  # wrong sha256
    cams = [(p, _sha(d), []) for p, d in cam.items()]
    recipes = tmp / "recipes"
    recipes.mkdir()
    (recipes / "gal.toml").write_text(
        _source("Gal/gallery", commits["Gal/gallery"], "ai", "gen-x", "fam-x", "gal-x", "lockbox", gal))
    (recipes / "cam.toml").write_text(
        _source("Cam/photos", commits["Cam/photos"], "real", "real-photo", "cam", "cam-photos", "train", cams))
    return {"tmp": tmp, "mirrors": mirrors, "remotes": remotes, "recipes": recipes, "pack": pack_dir,
            "gallery": gallery, "cam": cam, "commits": commits}


def _manifest(path: Path) -> list[dict]:
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def test_build_from_snapshots(world, tmp_path):
    out = tmp_path / "corpus"
    rep = build_corpus([world["recipes"]], out, world["mirrors"], against=[world["pack"]], clone=False, workers=1,
                       progress=False)
    lock = {r["original_path"] + "|" + r["crop"]: r for r in _manifest(out / "lockbox" / "manifest.csv")}
    train = {r["original_path"]: r for r in _manifest(out / "train" / "manifest.csv")}
    # whole files byte for byte, under <collection>__<generator>__ names
    row = lock["img/two.jpg|"]
    assert (out / "lockbox" / row["path_in_tar"]).read_bytes() == world["gallery"]["img/two.jpg"]
    assert Path(row["path_in_tar"]).name.startswith("gal-x__gen-x__") and row["path_in_tar"].startswith("ai/")
    assert row["jpeg_quality"] == "90" and row["subsampling"] == "4:2:0" and row["family"] == "fam-x"
    # PNG panels cut out exactly; the JPEG cut by jpegtran decodes to the same pixels
    sheet = np.asarray(Image.open(io.BytesIO(world["gallery"]["img/sheet.png"])))
    for box in ((0, 0, 200, 300), (220, 0, 200, 300)):
        r = lock["img/sheet.png|" + "x".join(map(str, box))]
        got = np.asarray(Image.open(out / "lockbox" / r["path_in_tar"]))
        assert np.array_equal(got, sheet[box[1]:box[1] + box[3], box[0]:box[0] + box[2]])
    assert lock["img/sheet.png|220x0x200x300"]["looks"] == "illustration"
    reasons = {(s["path"], tuple(s["crop"] or ())): s["reason"] for s in rep["skipped"]}
    assert "MCU" in reasons[("img/colour.jpg", (8, 8, 256, 256))]
    assert "cannot be cropped losslessly" in reasons[("img/anim.webp", (0, 0, 64, 64))]
    assert "missing from the snapshot" in reasons[("img/gone.png", ())]
    assert "sha256 differs" in reasons[("img/two.jpg", (0, 0, 16, 16))]
    # duplicates: the pack's crop at its offsets, same bytes, a resized copy, a lockbox picture listed for training
    dropped = {d["path_in_tar"].split("__")[-1]: d for d in rep["dropped"]}
    assert dropped["img-packed.png"]["dropped"] == "copy of a pack image"
    assert dropped["photos-a_copy.jpg"]["dropped"] == "same bytes"
    assert dropped["photos-small_a.jpg"]["dropped"] == "near copy"
    assert dropped["photos-also_gallery.png"]["copy_of"].startswith("lockbox/")
    assert set(train) == {"photos/a.jpg", "photos/b.jpg"}
    assert train["photos/a.jpg"]["exif_make"] == "Pixel Co"
    assert not any((out / "train" / "real").glob("*small_a*"))  # dropped files leave the folder
    # groups as the packs' names give them: AI by generator, real by collection
    groups = {i.name: i.group for i in iter_source(out / "train")}
    assert set(groups.values()) == {"real:cam-photos"}
    assert {i.group for i in iter_source(out / "lockbox")} == {"ai:gen-x"}
    assert (out / "build_report.md").read_text().count("| lockbox | gal-x |") == 1


def test_a_recipe_change_rebuilds_and_leaves_no_stale_file(world, tmp_path):
    """Moving a collection to the lockbox on a resumed build moves its files: none stays where the training
    folder's reader would still find it."""
    out = tmp_path / "corpus"
    build_corpus([world["recipes"] / "cam.toml"], out, world["mirrors"], clone=False, workers=1, progress=False)
    assert any((out / "train" / "real").iterdir())
    moved = tmp_path / "moved.toml"
    moved.write_text((world["recipes"] / "cam.toml").read_text().replace('split = "train"', 'split = "lockbox"'))
    rep = build_corpus([moved], out, world["mirrors"], clone=False, workers=1, progress=False)
    assert rep["totals"]["lockbox"] == {"real": 3} and not any((out / "train" / "real").iterdir())


@pytest.mark.skipif(shutil.which("jpegtran") is None, reason="jpegtran not installed (Debian: libjpeg-turbo-progs; "
                                                              ".ci/run installs it)")
def test_a_jpeg_frame_is_cut_losslessly_by_jpegtran(world, tmp_path):
    out = tmp_path / "corpus"
    build_corpus([world["recipes"] / "gal.toml"], out, world["mirrors"], clone=False, workers=1, progress=False)
    r = next(r for r in _manifest(out / "lockbox" / "manifest.csv") if r["original_path"] == "img/grey.jpg")
    assert "jpegtran" in r["processing"] and r["crop"] == "64x32x256x256"
    whole = np.asarray(Image.open(io.BytesIO(world["gallery"]["img/grey.jpg"])))
    assert np.array_equal(np.asarray(Image.open(out / "lockbox" / r["path_in_tar"])), whole[32:288, 64:320])


def test_resume_reads_nothing_again(world, tmp_path):
    out = tmp_path / "corpus"
    build_corpus([world["recipes"]], out, world["mirrors"], clone=False, workers=1, progress=False)
    first = (out / "train" / "manifest.csv").read_text()
    # no snapshot any more, no clone: every file already built comes from the state, nothing is read
    rep = build_corpus([world["recipes"]], out, tmp_path / "no-mirrors", clone=False, workers=1, progress=False)
    assert (out / "train" / "manifest.csv").read_text() == first
    assert all("no snapshot" in s["reason"] or "missing" in s["reason"] or "sha256" in s["reason"]
               or "MCU" in s["reason"] or "losslessly" in s["reason"] for s in rep["skipped"])


def test_clone_at_the_pinned_commit(world, tmp_path):
    out = tmp_path / "corpus"
    rep = build_corpus([world["recipes"] / "cam.toml"], out, None, clone=True,
                       git_base=world["remotes"].as_uri(), workers=1, progress=False)
    assert rep["totals"]["train"] == {"real": 3}  # a.jpg, b.jpg, also_gallery.png (no lockbox built here)


def test_refusals_and_schema(world, tmp_path):
    held = tmp_path / "held-out.txt"
    held.write_text("# kept for evaluation\nCAM/Photos\n")
    with pytest.raises(RecipeError, match="refused, nothing was read"):
        build_corpus([world["recipes"]], tmp_path / "out", world["mirrors"], refused_lists=(held,), clone=False,
                     progress=False)
    assert not (tmp_path / "out" / "train").exists()
    bad = tmp_path / "bad.toml"
    text = (world["recipes"] / "gal.toml").read_text()
    bad.write_text(text.replace('label = "ai"', 'label = "fake"'))
    with pytest.raises(RecipeError, match="label must be one of"):
        load_recipes([bad])
    with pytest.raises(RecipeError, match="in the crossval config"):
        load_recipes([world["recipes"] / "gal.toml"], merge={"gen-x": "other-family"})
    assert load_recipes([world["recipes"] / "gal.toml"], merge={"gen-x": "fam-x"})


def test_committed_recipes_parse_and_agree_with_the_pool():
    """Every committed recipe follows the schema, names no held-out repository, and its families are the pool's."""
    from synthcheck.data.recipes import read_list
    from synthcheck.training.config import read_toml

    root = Path(__file__).resolve().parents[1]
    recipes = sorted((root / "configs" / "data").glob("*.toml"))
    if not recipes:
        pytest.skip("no recipes committed yet")
    refused = read_list(root / "configs" / "data" / "refused.txt") | read_list(
        root.parent / "shared" / "data" / "held-out-repos.txt")
    pool = root / "configs" / "crossval_photo_corpus.toml"
    merge = read_toml(pool)["data"]["merge"] if pool.is_file() else None
    sources = load_recipes(recipes, refused, merge)
    assert {s.split for s in sources} == {"train", "lockbox"}


def test_cli_builds_and_refuses_with_a_clear_message(world, tmp_path):
    from typer.testing import CliRunner

    from synthcheck.cli import app

    (tmp_path / "none.txt").write_text("# no repository refused here\n")
    r = CliRunner().invoke(app, ["build-data", str(world["recipes"] / "cam.toml"), "--out", str(tmp_path / "c"),
                                 "--mirrors", str(world["mirrors"]), "--no-clone", "--against", str(world["pack"]),
                                 "--held-out", str(tmp_path / "none.txt"), "-q"], env={"COLUMNS": "200"})
    assert r.exit_code == 0, r.output
    assert "cam-photos" in r.output and "2 duplicate(s) dropped" in " ".join(r.output.split())  # a_copy, small_a
    held = tmp_path / "held.txt"
    held.write_text("cam/PHOTOS\n")
    r = CliRunner().invoke(app, ["build-data", str(world["recipes"]), "--out", str(tmp_path / "d"), "--no-clone",
                                 "--held-out", str(held)])
    assert r.exit_code == 2 and "refused, nothing was read" in " ".join(r.output.split()) and "Traceback" not in r.output
    # nothing reachable: one line per cause, and a failing exit
    r = CliRunner().invoke(app, ["build-data", str(world["recipes"] / "cam.toml"), "--out", str(tmp_path / "e"),
                                 "--no-clone", "--held-out", str(tmp_path / "none.txt")], env={"COLUMNS": "200"})
    flat = " ".join(r.output.split())
    assert r.exit_code == 1 and "nothing was built" in flat and flat.count("skipped 5 files of Cam/photos") == 1
    assert "no --mirrors given" in flat
    # a list of refusals that cannot be read stops the build before it starts
    r = CliRunner().invoke(app, ["build-data", str(world["recipes"]), "--out", str(tmp_path / "f"), "--no-clone",
                                 "--held-out", str(tmp_path / "missing.txt")])
    assert r.exit_code == 2 and "list of refused repositories not found" in " ".join(r.output.split())

"""What a newcomer meets first: the version, and a training run that says what it will do to their images."""

from __future__ import annotations

import numpy as np
from PIL import Image
from typer.testing import CliRunner

from synthcheck import __version__
from synthcheck.cli import app


def test_version():
    r = CliRunner().invoke(app, ["--version"])
    assert r.exit_code == 0 and r.output.strip() == f"synthcheck {__version__}"


def _folder(root, side, n=20):
    rng = np.random.default_rng(0)
    for label in ("real", "fake"):
        (root / label).mkdir(parents=True)
        for i in range(n):
            Image.fromarray(rng.integers(0, 256, (side, side, 3), dtype=np.uint8)).save(root / label / f"{i}.jpg")
    return root


def test_train_on_full_size_photos_says_the_recipe_resizes_them(tmp_path):
    data = _folder(tmp_path / "photos", 256)
    r = CliRunner().invoke(app, ["train", str(data), "--model", "cnn", "--epochs", "1", "--out", str(tmp_path / "run"),
                                 "--quiet"])
    assert r.exit_code == 0, r.output
    line = next(x for x in r.output.splitlines() if x.startswith("recipe:"))
    assert "resized to 32 px" in line and "about 256 px" in line and "configs/photo_native.toml" in line


def test_train_at_the_recipe_size_gives_no_photo_hint(tmp_path):
    data = _folder(tmp_path / "thumbs", 32)
    r = CliRunner().invoke(app, ["train", str(data), "--model", "cnn", "--epochs", "1", "--out", str(tmp_path / "run"),
                                 "--quiet"])
    assert r.exit_code == 0, r.output
    line = next(x for x in r.output.splitlines() if x.startswith("recipe:"))
    assert "about 32 px" in line and "photo_native" not in line

"""Shared fixtures: a tiny labelled dataset the tests make themselves (no ../shared, no network)."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

SHARED = Path(__file__).resolve().parents[1].parent / "shared"


def make_image(label: int, rng: np.random.Generator, size: int = 32) -> Image.Image:
    """Learnable toy classes: 'real' = smooth gradients, 'ai' = the same plus a periodic checkerboard artifact."""
    yy, xx = np.mgrid[0:size, 0:size]
    base = np.stack([(xx * rng.uniform(2, 6) + rng.uniform(0, 120)),
                     (yy * rng.uniform(2, 6) + rng.uniform(0, 120)),
                     np.full((size, size), rng.uniform(40, 200))], -1)
    if label == 1:
        base = base + 40 * (((xx + yy) % 2) - 0.5)[..., None]
    base = base + rng.normal(0, 3, base.shape)
    return Image.fromarray(np.clip(base, 0, 255).astype(np.uint8))


def write_dataset(root: Path, n_per_class: int = 60, splits=("train", "test"), labels=("REAL", "FAKE"), seed: int = 0,
                  size: int = 32, fmt: str = "png") -> Path:
    rng = np.random.default_rng(seed)
    for split in splits:
        for li, lab in enumerate(labels):
            d = root / split / lab if split else root / lab
            d.mkdir(parents=True, exist_ok=True)
            for i in range(n_per_class):
                make_image(li, rng, size).save(d / f"{i}.{fmt}")
    return root


def write_manifest(root: Path, rows: list[dict]) -> Path:
    """root/manifest.csv with one row per file (the columns of the first row)."""
    import csv

    with open(root / "manifest.csv", "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=list(rows[0]))
        w.writeheader()
        w.writerows(rows)
    return root


@pytest.fixture(scope="session")
def tiny_dataset(tmp_path_factory) -> Path:
    return write_dataset(tmp_path_factory.mktemp("tiny"), n_per_class=80)


@pytest.fixture(autouse=True)
def _isolated_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("SYNTHCHECK_CACHE", str(tmp_path / "cache"))
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch_home"))  # never touch a user's hub cache or the network
    yield


# --- a real `synthcheck serve` process (API tests and the browser test) -----------------------------

def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    """`synthcheck serve` in its own process, with a private TMPDIR to prove uploads leave nothing behind."""
    tmp = tmp_path_factory.mktemp("server-tmp")
    port = _free_port()
    env = {**os.environ, "TMPDIR": str(tmp), "GRADIO_TEMP_DIR": str(tmp / "gradio")}
    log = tmp_path_factory.mktemp("server-log") / "server.log"
    proc = subprocess.Popen([sys.executable, "-m", "synthcheck.cli", "serve", "--port", str(port)], env=env,
                            stdout=log.open("wb"), stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    import httpx

    for _ in range(240):
        try:
            if httpx.get(url + "/readyz", timeout=1).status_code == 200:
                break
        except httpx.HTTPError:
            pass
        if proc.poll() is not None:
            raise RuntimeError(log.read_text())
        time.sleep(0.25)
    else:
        proc.kill()
        raise RuntimeError("server did not start")
    yield url, proc, tmp
    proc.terminate()
    proc.wait(10)



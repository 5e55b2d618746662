"""`synthcheck predict --engine ray`: Ray Data actors on a local Ray instance, Parquet shards, resume;
results must equal single-process `predict` exactly."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from conftest import write_dataset
from synthcheck.inference.detector import Detector

pytest.importorskip("ray", reason="Ray not installed (pip install -e '.[test]' installs it)")
SAMPLES = Path(__file__).resolve().parents[1] / "src" / "synthcheck" / "samples"


def run_cli(*args, env=None):
    env = {k: v for k, v in {**os.environ, **(env or {})}.items() if k != "RAY_ADDRESS"}  # a local instance
    r = subprocess.run([sys.executable, "-m", "synthcheck.cli", *args], capture_output=True, text=True, timeout=600,
                       env=env)
    return r


@pytest.mark.slow
def test_ray_predict_equals_single_process_and_resumes(tmp_path):
    data = write_dataset(tmp_path / "data", n_per_class=20, splits=("train",), fmt="jpg")
    folder = data / "train"
    for p in SAMPLES.glob("*.jpg"):
        shutil.copy(p, folder / p.name)
    (folder / "broken.jpg").write_bytes(b"\xff\xd8\xff\xe0 not really")
    files = sorted(str(p) for p in folder.rglob("*") if p.is_file())
    manifest = tmp_path / "list.txt"
    manifest.write_text("\n".join(files[:5]))  # also read through a manifest (these 5 appear twice)
    out = tmp_path / "scored"
    r = run_cli("predict", str(folder), "--manifest", str(manifest), "--engine", "ray", "--out", str(out),
                "--shard-size", "12", "--ray-workers", "2", "--batch-size", "8")
    assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-3000:]
    from synthcheck.serving.ray_scoring import read_results

    got = read_results(out)
    inputs = files + files[:5]
    assert got["source"].tolist() == inputs
    want = Detector.load().predict(inputs)
    assert [None if np.isnan(v) else v for v in got["prob_ai"]] == [p.prob_ai for p in want]  # exactly
    assert got["verdict"].tolist() == [p.verdict for p in want]
    assert got["error"].tolist() == [p.error for p in want]
    assert [json.loads(w) for w in got["warnings"]] == [p.warnings for p in want]
    n_shards = len(list(out.glob("part-*.parquet")))
    assert n_shards == -(-len(inputs) // 12)

    # resume: one shard lost -> only it is scored again, the others are left untouched
    kept = {p: p.stat().st_mtime_ns for p in out.glob("part-*.parquet") if p.name != "part-00001.parquet"}
    (out / "part-00001.parquet").unlink()
    r = run_cli("predict", str(folder), "--manifest", str(manifest), "--engine", "ray", "--out", str(out),
                "--shard-size", "12", "--ray-workers", "1")
    assert r.returncode == 0, r.stderr[-3000:]
    assert "scored 12 now" in r.stdout and f"{n_shards - 1} shard(s) already done" in r.stdout, r.stdout
    assert all(p.stat().st_mtime_ns == t for p, t in kept.items())
    import pandas as pd

    pd.testing.assert_frame_equal(read_results(out), got)

    # a different input list may not be mixed into the same output folder
    r = run_cli("predict", str(SAMPLES), "--engine", "ray", "--out", str(out))
    assert r.returncode == 2 and "different input list" in r.stdout + r.stderr

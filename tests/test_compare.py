"""`synthcheck compare`: several models, one protocol, one table and plot (tiny data, one epoch)."""

from __future__ import annotations

import json

from typer.testing import CliRunner

from synthcheck.cli import app


def test_compare_two_models_one_protocol(tiny_dataset, tmp_path):
    cfg = tmp_path / "cmp.toml"
    cfg.write_text(f"""
data = ["{tiny_dataset / 'train'}"]
test = ["{tiny_dataset / 'test'}"]
[train]
epochs = 2
batch_size = 32
lr = 0.003
val_fraction = 0.2
[[model]]
name = "cnn"
[[model]]
name = "fastnet_s"
label = "small fastnet"
""")
    r = CliRunner().invoke(app, ["compare", str(cfg), "--out", str(tmp_path / "out"), "--quiet"])
    assert r.exit_code == 0, r.output
    rows = json.loads((tmp_path / "out" / "compare.json").read_text())["rows"]
    assert [x["label"] for x in rows] == ["cnn", "small fastnet"]
    for x in rows:
        assert x["epochs"] == 2 and x["parameters"] > 0 and x["score_img_s"] > 0
        assert 0 <= x["test_accuracy"] <= 1 and 0 <= x["jpeg75_accuracy"] <= 1
    assert rows[0]["parameters"] != rows[1]["parameters"]
    assert (tmp_path / "out" / "compare.png").stat().st_size > 0
    assert "small fastnet" in (tmp_path / "out" / "compare.md").read_text()
    # --resume with one more model: the measured two are kept as they are, only the new one trains
    cfg.write_text(cfg.read_text() + '[[model]]\nname = "fastnet_s"\nlabel = "third"\n')
    (tmp_path / "out" / "cnn" / "history.csv").unlink()
    r = CliRunner().invoke(app, ["compare", str(cfg), "--out", str(tmp_path / "out"), "--quiet", "--resume"])
    assert r.exit_code == 0, r.output
    again = json.loads((tmp_path / "out" / "compare.json").read_text())["rows"]
    assert [x["label"] for x in again] == ["cnn", "small fastnet", "third"] and again[:2] == rows
    assert not (tmp_path / "out" / "cnn" / "history.csv").exists()


def test_compare_rejects_a_config_without_models(tmp_path):
    cfg = tmp_path / "bad.toml"
    cfg.write_text('data = ["x"]\n')
    r = CliRunner().invoke(app, ["compare", str(cfg)])
    assert r.exit_code == 2 and "[[model]]" in r.output

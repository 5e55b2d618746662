"""A tiled model's tile scores combine by the rule stored with it (the mean logit, or the mean tile probability),
the same in PyTorch scoring, the ONNX graph, the Detector, the explanations' whole-image wrapper and the card;
configs may start from a base config."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from synthcheck.inference.detector import Detector
from synthcheck.inference.explain import TileMean
from synthcheck.inference.export import TOLERANCE, export_onnx
from synthcheck.inference.scoring import score_logits
from synthcheck.models.checkpoint import load_model, save_model
from synthcheck.models.registry import build_model, combine_tiles
from synthcheck.training.config import read_toml


def test_probability_rule_is_the_logit_of_the_mean_tile_probability():
    z = np.array([[-12.0, 3.0, 3.0, 3.0], [0.5, 0.5, 0.5, 0.5]], dtype=np.float32)
    p = 1 / (1 + np.exp(-z.astype(np.float64)))
    want = np.log(p.mean(1) / (1 - p.mean(1)))
    got = combine_tiles(z, "probability")
    assert np.allclose(got, want, atol=1e-5)
    assert got[0] > 0 > combine_tiles(z, "logit")[0]  # one confident tile no longer outvotes three
    assert np.allclose(got[1], 0.5) and np.allclose(combine_tiles(z[1:], "logit"), 0.5)  # equal tiles: same answer
    assert np.allclose(combine_tiles(torch.from_numpy(z), "probability").numpy(), got, atol=1e-5)
    assert np.isfinite(combine_tiles(np.array([[80.0, 90.0]]), "probability")).all()
    with pytest.raises(ValueError, match="unknown tile rule"):
        combine_tiles(z, "max")


@pytest.fixture(scope="module")
def tiled_model(tmp_path_factory):
    torch.manual_seed(0)
    model, arch = build_model("cnn", None, None, tile_rule="probability")
    assert arch["tile_rule"] == "probability" and "tile_rule" not in build_model("cnn")[1]  # old configs unchanged
    with torch.no_grad():  # spread the logits so the two rules disagree clearly
        model.backbone.head[-1].weight.mul_(40)
    d = tmp_path_factory.mktemp("tiled") / "m"
    save_model(model.eval(), d, {"arch": arch, "preprocess": {"image_size": 32, "resize_policy": "tiles",
                                                               "version": 1, "tiles": 2},
                                 "temperature": 1.0, "threshold": 0.5})
    return d


def test_a_tiled_model_scores_by_its_stored_rule_everywhere(tiled_model, tmp_path):
    model, _ = load_model(tiled_model)
    assert model.tile_rule == "probability"
    x = np.random.default_rng(0).integers(0, 256, (5, 4, 3, 32, 32), dtype=np.uint8)
    per_tile = score_logits(model, x.reshape(20, 3, 32, 32)).reshape(5, 4)
    want = combine_tiles(per_tile, "probability")
    assert np.abs(want - per_tile.mean(1)).max() > 0.1  # the rules differ on these images
    assert np.allclose(score_logits(model, x), want, atol=1e-5)
    assert np.allclose(Detector.load(tiled_model, precision="fp32").logits(x), want, atol=1e-5)
    export_onnx(tiled_model, tmp_path / "onnx")
    assert np.abs(Detector.load(tmp_path / "onnx", backend="onnx").logits(x) - want).max() <= TOLERANCE
    from synthcheck.inference.export import OpenVinoScorer, openvino_available

    if openvino_available():  # the same graph under OpenVINO reads the rule from the same metadata
        ov = OpenVinoScorer(tmp_path / "onnx" / "model.onnx", "fp32")
        assert ov.tile_rule == "probability" and np.abs(ov(x) - want).max() <= 1e-3
    canvas = np.zeros((1, 3, 64, 64), np.float32)  # the explanations' whole-image wrapper: same rule
    boxes = [(0, 0), (0, 32), (32, 0), (32, 32)]
    for (y, left), tile in zip(boxes, x[0]):
        canvas[0, :, y:y + 32, left:left + 32] = tile / 255.0
    with torch.no_grad():
        wrapped = TileMean(model, boxes, 32)(torch.from_numpy(canvas)).numpy()
    assert np.allclose(wrapped, want[:1], atol=1e-4)
    from synthcheck.analysis.card import write_model_card

    write_model_card(tmp_path / "onnx", load_model(tiled_model)[1])
    assert "the logit of the mean tile probability" in (tmp_path / "onnx" / "MODEL_CARD.md").read_text()


def test_a_config_starts_from_its_base_and_overrides_key_by_key(tmp_path):
    (tmp_path / "base.toml").write_text('[data]\nsources = ["a.tar"]\nfolds = 5\n[data.merge]\nx = "y"\n'
                                        '[train]\nepochs = 8\ntile_rule = "logit"\n')
    (tmp_path / "child.toml").write_text('base = "base.toml"\n[data]\nfolds = 3\n[train]\ntile_rule = "probability"\n')
    raw = read_toml(tmp_path / "child.toml")
    assert raw == {"data": {"sources": ["a.tar"], "folds": 3, "merge": {"x": "y"}},
                   "train": {"epochs": 8, "tile_rule": "probability"}}
    (tmp_path / "loop.toml").write_text('base = "loop.toml"\n')
    with pytest.raises(ValueError, match="lead back"):
        read_toml(tmp_path / "loop.toml")

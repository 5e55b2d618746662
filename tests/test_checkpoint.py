import json

import pytest
import torch

from synthcheck.models.checkpoint import load_model, load_state, save_model, save_state
from synthcheck.models.registry import build_model


def test_model_roundtrip_is_exact_and_pickle_free(tmp_path):
    model, arch = build_model("fastnet_s")
    model.eval()
    save_model(model, tmp_path / "m", {"arch": arch, "preprocess": {"image_size": 32, "resize_policy": "resize"}})
    assert sorted(p.name for p in (tmp_path / "m").iterdir()) == ["config.json", "model.safetensors"]
    again, config = load_model(tmp_path / "m")
    x = torch.rand(3, 3, 32, 32)
    with torch.no_grad():
        assert torch.equal(model(x), again(x))
    assert config["synthcheck_version"]


def test_wrong_architecture_is_refused(tmp_path):
    model, arch = build_model("fastnet_s")
    save_model(model, tmp_path / "m", {"arch": {**arch, "name": "cnn"}, "preprocess": {"image_size": 32}})
    with pytest.raises(ValueError, match="do not match"):
        load_model(tmp_path / "m")


def test_training_state_roundtrip(tmp_path):
    model, _ = build_model("cnn")
    opt = torch.optim.AdamW(model.parameters())
    model(torch.rand(2, 3, 32, 32)).sum().backward()
    opt.step()
    state = {"optimizer": opt.state_dict(), "epoch": 3, "history": [{"a": 1.5}], "rng": torch.get_rng_state()}
    save_state(tmp_path, state)
    back = load_state(tmp_path)
    assert back["epoch"] == 3 and back["history"] == [{"a": 1.5}]
    assert torch.equal(back["rng"], state["rng"])
    opt2 = torch.optim.AdamW(model.parameters())
    opt2.load_state_dict(back["optimizer"])
    assert json.loads((tmp_path / "state.json").read_text())  # plain JSON, no pickle

import shutil

import pytest
import torch

from synthcheck.models.registry import REGISTRY, build_model

from conftest import SHARED


@pytest.mark.parametrize("name", list(REGISTRY))
def test_every_model_gives_one_logit_per_image(name):
    torch.manual_seed(0)
    model, arch = build_model(name)
    model.eval()
    with torch.no_grad():
        out = model(torch.rand(2, 3, 32, 32))
    assert out.shape == (2,) and torch.isfinite(out).all()
    assert model.get_target_layer() is not None
    assert arch["name"] == name


def test_imagenet_weights_refused_for_own_nets():
    with pytest.raises(ValueError):
        build_model("fastnet", "imagenet")


@pytest.mark.skipif(not (SHARED / "weights" / "mobilenet_v2-b0353104.pth").exists(), reason="../shared/weights absent")
def test_imagenet_weights_load_offline_from_torch_home(tmp_path, monkeypatch):
    ckpt = tmp_path / "th" / "hub" / "checkpoints"
    ckpt.mkdir(parents=True)
    shutil.copy(SHARED / "weights" / "mobilenet_v2-b0353104.pth", ckpt)
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "th"))
    model, arch = build_model("mobilenet_v2", "imagenet")
    assert arch["input_size"] == 224 and arch["weights"] == "imagenet"
    import torchvision

    ref = torchvision.models.mobilenet_v2(weights="IMAGENET1K_V1")
    assert torch.equal(model.backbone.features[0][0].weight, ref.features[0][0].weight)
    with torch.no_grad():
        assert model.eval()(torch.rand(1, 3, 32, 32)).shape == (1,)


def test_missing_pretrained_weights_fail_in_one_clear_line(monkeypatch, tmp_path):
    """No network: torchvision's download fails; the error names the file, where it goes and what else to do."""
    import urllib.request

    from synthcheck.models.registry import build_model

    def offline(*a, **k):
        raise urllib.error.URLError("no network")

    monkeypatch.setattr(urllib.request, "urlopen", offline)
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    with pytest.raises(FileNotFoundError) as e:
        build_model("mobilenet_v2", "imagenet")
    msg = str(e.value)
    assert "mobilenet_v2-b0353104.pth" in msg and str(tmp_path / "hub" / "checkpoints") in msg and "\n" not in msg

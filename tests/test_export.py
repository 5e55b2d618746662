"""ONNX export: the exported graph scores like PyTorch (to 1e-4 in logits), through Detector and the CLI."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from synthcheck.cli import app
from synthcheck.inference.detector import Detector
from synthcheck.inference.export import TOLERANCE, export_onnx
from synthcheck.inference.export import openvino_available
from synthcheck.inference.scoring import cpu_has_bf16
from synthcheck.models.checkpoint import save_model
from synthcheck.models.registry import build_model

SAMPLES = sorted((Path(__file__).resolve().parents[1] / "src" / "synthcheck" / "samples").glob("*.jpg"))


def test_bundled_default_ships_an_onnx_model_that_matches_pytorch():
    torch_det, onnx_det = Detector.load("default", precision="fp32"), Detector.load("default", backend="onnx")
    rng = np.random.default_rng(1)
    images = np.concatenate([np.stack([torch_det.preprocess(p) for p in SAMPLES]),
                             rng.integers(0, 256, (200, 3, 32, 32), dtype=np.uint8)])
    diff = np.abs(torch_det.logits(images) - onnx_det.logits(images, batch_size=77))  # odd batch: dynamic axis
    assert diff.max() <= TOLERANCE
    a = [p.verdict for p in torch_det.predict([str(p) for p in SAMPLES])]
    b = [p.verdict for p in onnx_det.predict([str(p) for p in SAMPLES])]
    assert a == b


@pytest.mark.parametrize("arch,size", [("cnn", 32), ("resnet18", 48)])
def test_export_other_architectures(tmp_path, arch, size):
    torch.manual_seed(0)
    model, arch_cfg = build_model(arch)
    model.eval()
    for m in model.modules():  # non-trivial BatchNorm statistics, so folding them is really exercised
        if isinstance(m, torch.nn.BatchNorm2d):
            m.running_mean.uniform_(-0.5, 0.5)
            m.running_var.uniform_(0.5, 2.0)
    config = {"arch": arch_cfg, "preprocess": {"image_size": size, "resize_policy": "resize", "version": 1},
              "temperature": 1.3, "threshold": 0.4}
    save_model(model, tmp_path / "m", config)
    info = export_onnx(tmp_path / "m", tmp_path / "m_onnx")
    assert not list((tmp_path / "m_onnx").glob("*.data"))  # weights inside the .onnx, no stale side file
    assert info["check"]["max_abs_logit_diff"] <= TOLERANCE
    assert json.loads((tmp_path / "m_onnx" / "onnx.json").read_text())["input"] == f"uint8 [batch, 3, {size}, {size}]"
    det = Detector.load(tmp_path / "m_onnx", backend="onnx")
    x = np.random.default_rng(0).integers(0, 256, (9, 3, size, size), dtype=np.uint8)
    assert np.abs(det.logits(x) - Detector.load(tmp_path / "m", precision="fp32").logits(x)).max() <= TOLERANCE
    import onnx

    meta = {p.key: json.loads(p.value) for p in onnx.load(str(tmp_path / "m_onnx" / "model.onnx")).metadata_props}
    assert meta["synthcheck.preprocess"]["image_size"] == size and meta["synthcheck.threshold"] == 0.4


def test_cli_export_and_predict_with_onnx_backend(tmp_path):
    r = CliRunner().invoke(app, ["export", "default", "--out", str(tmp_path / "exp"), "--cpu-backend", "onnx"])
    assert r.exit_code == 0, r.output
    assert "max |logit diff|" in r.output and (tmp_path / "exp" / "model.onnx").exists()
    assert json.loads((tmp_path / "exp" / "config.json").read_text())["cpu_backend"] == "onnx"
    assert CliRunner().invoke(app, ["export", "default", "--out", str(tmp_path / "x"), "--cpu-backend", "gpu"]).exit_code == 2
    outs = {}
    for backend in ("torch", "onnx"):
        r = CliRunner().invoke(app, ["predict", *map(str, SAMPLES), "--model", str(tmp_path / "exp"), "--backend",
                                     backend, "--precision", "fp32", "--json"])
        assert r.exit_code == 0, r.output
        outs[backend] = [json.loads(line) for line in r.output.splitlines() if line.startswith("{")]
    assert [o["verdict"] for o in outs["torch"]] == [o["verdict"] for o in outs["onnx"]]
    assert np.allclose([o["prob_ai"] for o in outs["torch"]], [o["prob_ai"] for o in outs["onnx"]], atol=1e-4)


def test_onnx_backend_without_export_is_a_clear_error(tmp_path):
    model, arch_cfg = build_model("cnn")
    save_model(model, tmp_path / "m", {"arch": arch_cfg, "preprocess": {"image_size": 32, "resize_policy": "resize",
                                                                         "version": 1}})
    with pytest.raises(FileNotFoundError, match="synthcheck export"):
        Detector.load(tmp_path / "m", backend="onnx")
    r = CliRunner().invoke(app, ["predict", str(SAMPLES[0]), "--model", str(tmp_path / "m"), "--backend", "onnx"])
    assert r.exit_code == 2 and "synthcheck export" in r.output


@pytest.mark.parametrize("model", ["default", "photo"])
def test_bf16_precision_keeps_the_fp32_verdicts(model):
    """The fast path (bf16, what "auto" picks on CPUs with AMX/AVX512-BF16) gives the fp32 verdicts on the shipped
    samples (each model on its own kind of image and on the other's): the 32-px model's P(AI) within 0.03; the
    photo model's logits within its measured bf16 margin (`bf16_margin`, scripts/bf16_margin.py: its depthwise
    network moves more in bf16, which is why its default is the cascade), and the same verdict wherever the fp32
    score is farther than that from a verdict edge."""
    from synthcheck.inference.export import verdict_edges

    fp32, bf16 = Detector.load(model, precision="fp32"), Detector.load(model, precision="bf16")
    assert (fp32.precision, bf16.precision) == ("fp32", "bf16")
    a, b = fp32.predict([str(p) for p in SAMPLES]), bf16.predict([str(p) for p in SAMPLES])
    margin = fp32.config.get("bf16_margin")
    if margin is None:
        assert np.abs(np.array([p.prob_ai for p in a]) - np.array([p.prob_ai for p in b])).max() < 0.03
        far = [(x.verdict, y.verdict) for x, y in zip(a, b) if min(abs(x.prob_ai - t) for t in x.uncertain_range) > 0.03]
    else:
        x = np.stack([fp32.preprocess(p) for p in SAMPLES])
        la, lb = fp32.logits(x), bf16.logits(x)
        assert np.abs(la - lb).max() <= margin
        edges = np.array(verdict_edges(fp32.config))
        far = [(p.verdict, q.verdict) for p, q, z in zip(a, b, la) if np.abs(z - edges).min() > margin]
    assert all(x == y for x, y in far), far


def test_auto_precision_is_bf16_only_where_the_cpu_has_it(monkeypatch):
    import synthcheck.inference.scoring as scoring
    from synthcheck.inference.scoring import resolve_precision

    cpu, cuda = torch.device("cpu"), torch.device("cuda")
    for has in (True, False):
        monkeypatch.setattr(scoring, "cpu_has_bf16", lambda has=has: has)
        assert resolve_precision("auto", cpu) == ("bf16" if has else "fp32")
        assert Detector.load("default").precision == ("bf16" if has else "fp32")
        assert Detector.load("default").backend == ("torch" if has else "onnx")
        assert resolve_precision("auto", cuda) == "bf16" and resolve_precision("auto", cpu, "onnx") == "fp32"
        assert resolve_precision("fp32", cpu) == "fp32" and resolve_precision("bf16", cpu) == "bf16"
    with pytest.raises(ValueError, match="precision must be one of"):
        resolve_precision("fp16", cpu)


def test_auto_detector_on_onnx_runtime_matches_pytorch():
    """Both bundled models ship model.onnx: the auto detector runs on ONNX Runtime too, tiles included."""
    samples = sorted((Path(__file__).resolve().parents[1] / "src" / "synthcheck" / "samples").glob("*.jpg"))
    torch_preds = Detector.load(precision="fp32").predict([str(p) for p in samples])
    onnx_preds = Detector.load(backend="onnx").predict([str(p) for p in samples])
    assert {p.model for p in onnx_preds} == {"default:fastnet", "photo:mobilenet_v2"}
    for a, b in zip(torch_preds, onnx_preds):
        assert a.model == b.model and abs(a.prob_ai - b.prob_ai) < 1e-3 and a.verdict == b.verdict


def test_photo_model_onnx_gives_pytorch_features_and_is_its_default_cpu_path():
    """backend "auto" scores the photo model with ONNX Runtime on CPU (its config names it, benchmarks/
    photo_throughput.py measured it faster than PyTorch bf16): the same logits and attribution features as
    PyTorch fp32, so the same verdicts and the same generator; asking for bf16 takes OpenVINO where the CPU has
    native bf16, PyTorch elsewhere."""
    auto, ref = Detector.load("photo", precision="fp32"), Detector.load("photo", backend="torch", precision="fp32")
    assert (auto.backend, auto.precision) == ("onnx", "fp32")
    assert (Detector.load("photo").backend == "openvino+onnx") == (cpu_has_bf16() and openvino_available())
    assert Detector.load("photo", precision="bf16").backend == ("openvino" if cpu_has_bf16() else "torch")
    # the 32-px model: PyTorch bf16 where the CPU has it, else ONNX Runtime (cpu_backend "onnx-where-no-bf16")
    assert Detector.load("default").backend == ("torch" if cpu_has_bf16() else "onnx")
    assert Detector.load("default", precision="fp32").backend == "onnx"
    x = np.stack([ref.preprocess(p) for p in SAMPLES[:3]])
    (la, fa), (lr, fr) = auto.logits_and_features(x), ref.logits_and_features(x)
    assert np.abs(la - lr).max() <= TOLERANCE and np.abs(fa - fr).max() <= 1e-3
    for a, b in zip(auto.predict([str(p) for p in SAMPLES]), ref.predict([str(p) for p in SAMPLES])):
        assert a.verdict == b.verdict and abs(a.prob_ai - b.prob_ai) < 1e-4
        assert (a.generator or {}).get("name") == (b.generator or {}).get("name")


def test_export_carries_the_features_pytorch_scoring_reads():
    """The exported wrapper's second output is what `score_with_features` reads by the same hooks: the stage
    channel means for a network with a stage list, the last Linear's input for one without (even when the
    Linear is not the last step), and its logits stay the plain model's."""
    class Odd(torch.nn.Module):  # last Linear followed by another operation, no stage list
        def __init__(self):
            super().__init__()
            from synthcheck.models.registry import InputAdapter
            self.adapter = InputAdapter((0.5, 0.5, 0.5), (0.5, 0.5, 0.5), None)
            self.backbone = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(3 * 8 * 8, 1), torch.nn.Tanh())

        def forward(self, x):
            return self.backbone(self.adapter(x)).reshape(-1)

    from synthcheck.inference.export import _FromUint8, _with_features
    from synthcheck.inference.scoring import score_with_features

    x = torch.randint(0, 256, (3, 3, 8, 8), dtype=torch.uint8, generator=torch.Generator().manual_seed(1))
    odd = Odd().eval()
    wrapper = _with_features(odd, 8)
    with torch.inference_mode():
        logits, feats = wrapper(x)
        assert torch.allclose(logits, _FromUint8(odd)(x))
        assert torch.allclose(feats, odd.adapter(x.float() / 255).flatten(1))
    model, _ = build_model("mobilenet_v2", None, 32)
    model.eval()
    with torch.inference_mode():
        _, feats = _with_features(model, 32)(x.repeat(1, 1, 4, 4))
    _, scored = score_with_features(model, x.repeat(1, 1, 4, 4).numpy(), 8)
    assert feats.shape == (3, 24 + 32 + 64 + 96 + 160 + 1280)
    assert np.abs(scored[:, :feats.shape[1]] - feats.numpy()).max() < 1e-5 and (scored[:, feats.shape[1]:] == 0).all()


def test_openvino_backend_gives_onnx_runtimes_scores_and_features_in_fp32(monkeypatch):
    """OpenVINO runs the same model.onnx: in fp32 the same logits and attribution features as ONNX Runtime (so
    the same verdicts and generator); bf16 on a CPU without native bf16 is refused, saying why."""
    ov, ort = Detector.load("photo", backend="openvino", precision="fp32"), Detector.load("photo", backend="onnx")
    assert (ov.backend, ov.precision) == ("openvino", "fp32")
    x = np.stack([ort.preprocess(p) for p in SAMPLES[:3]])
    (la, fa), (lb, fb) = ov.logits_and_features(x), ort.logits_and_features(x)
    assert np.abs(la - lb).max() <= TOLERANCE and np.abs(fa - fb).max() <= 1e-3
    for a, b in zip(ov.predict([str(p) for p in SAMPLES]), ort.predict([str(p) for p in SAMPLES])):
        assert a.verdict == b.verdict and (a.generator or {}).get("name") == (b.generator or {}).get("name")
    import synthcheck.inference.scoring as scoring

    monkeypatch.setattr(scoring, "cpu_has_bf16", lambda: False)
    with pytest.raises(ValueError, match="native bf16"):
        Detector.load("photo", backend="openvino", precision="bf16")


class _StubScorer:
    """Logit = first pixel / 10 + offset: a stand-in runtime whose error we choose."""

    has_features = True

    def __init__(self, offset):
        self.offset, self.calls = offset, []

    def with_features(self, images, batch_size=512, features=True):
        self.calls.append(len(images))
        logits = images.reshape(len(images), -1)[:, 0].astype(np.float32) / 10 + self.offset
        return logits, np.repeat(logits[:, None], 2, 1) if features else None


def test_cascade_scores_again_in_fp32_only_near_a_verdict_edge():
    """bf16 everywhere, fp32 within the margin of an edge: those images get fp32's logit and features, the
    others keep bf16's, and with a margin above the bf16 error every verdict is fp32's."""
    from synthcheck.inference.export import CascadeScorer

    x = np.zeros((60, 3, 4, 4), np.uint8)
    x[:, 0, 0, 0] = np.arange(60) * 4  # logits 0.0 .. 23.6
    exact, fast = _StubScorer(0.0), _StubScorer(0.25)  # bf16's error: 0.25
    cascade = CascadeScorer(fast, exact, edges=[5.0, 12.0, float("inf")], margin=0.5)
    logits, feats = cascade.with_features(x)
    truth = x[:, 0, 0, 0] / 10
    near = np.minimum(np.abs(truth + 0.25 - 5.0), np.abs(truth + 0.25 - 12.0)) <= 0.5
    assert cascade.rescored == near.sum() == exact.calls[0] and 0 < near.sum() < 10
    assert np.allclose(logits[near], truth[near]) and np.allclose(logits[~near], truth[~near] + 0.25)
    assert np.allclose(feats[:, 0], logits)
    side = lambda v: np.searchsorted([5.0, 12.0], v)  # which verdict region a logit falls in
    assert (side(logits) == side(truth)).all()


@pytest.mark.skipif(not (cpu_has_bf16() and openvino_available()), reason="needs a CPU with native bf16 and OpenVINO")
def test_photo_models_default_on_a_bf16_cpu_is_the_cascade_with_fp32_verdicts():
    """What `--precision auto` runs for the photo model on AMX/AVX512-BF16 CPUs: OpenVINO bf16, then ONNX Runtime
    fp32 near the verdict edges (`bf16_margin` from scripts/bf16_margin.py): fp32's verdicts and generators."""
    auto, ref = Detector.load("photo"), Detector.load("photo", precision="fp32")
    assert (auto.backend, auto.precision) == ("openvino+onnx", "bf16+fp32")
    x = np.stack([ref.preprocess(p) for p in SAMPLES])
    la, lr = auto.logits(x), ref.logits(x)
    assert np.abs(la - lr).max() <= auto._onnx.margin
    for a, b in zip(auto.predict([str(p) for p in SAMPLES]), ref.predict([str(p) for p in SAMPLES])):
        assert a.verdict == b.verdict and (a.generator or {}).get("name") == (b.generator or {}).get("name")


def test_an_openvino_that_fails_to_compile_falls_back_to_onnx_runtime(monkeypatch):
    """The cascade's bf16 half is an optimisation: if OpenVINO cannot compile on this machine, the photo model
    still loads and scores exactly, on ONNX Runtime fp32, with a warning."""
    import synthcheck.inference.export as export

    def broken(*a, **k):
        raise RuntimeError("no plugin for this CPU")

    monkeypatch.setattr("synthcheck.inference.scoring.cpu_has_bf16", lambda: True)
    monkeypatch.setattr(export, "openvino_available", lambda: True)
    monkeypatch.setattr(export, "OpenVinoScorer", broken)
    with pytest.warns(UserWarning, match="no plugin for this CPU"):
        det = Detector.load("photo")
    assert (det.backend, det.precision) == ("onnx", "fp32")
    assert det.predict([str(SAMPLES[0])])[0].error is None


def test_a_graph_without_todays_feature_metadata_scores_but_gives_no_features(tmp_path):
    """Both runtimes read `synthcheck.features` from the model they loaded: a graph exported before the stage
    features (its second output is another vector) still scores, and names no generator from pixels."""
    import onnx

    from synthcheck.inference.export import OnnxScorer, OpenVinoScorer

    model, arch_cfg = build_model("cnn")
    config = {"arch": arch_cfg, "preprocess": {"image_size": 32, "resize_policy": "resize", "version": 1}}
    save_model(model.eval(), tmp_path / "m", config)
    export_onnx(tmp_path / "m", tmp_path / "new")
    old = onnx.load(str(tmp_path / "new" / "model.onnx"))
    kept = [p for p in old.metadata_props if p.key != "synthcheck.features"]
    del old.metadata_props[:]
    old.metadata_props.extend(kept)
    onnx.save(old, str(tmp_path / "old.onnx"))
    x = np.random.default_rng(0).integers(0, 256, (4, 3, 32, 32), dtype=np.uint8)
    runtimes = [OnnxScorer] + ([lambda p: OpenVinoScorer(p, "fp32")] if openvino_available() else [])
    for make in runtimes:
        new, stale = make(tmp_path / "new" / "model.onnx"), make(tmp_path / "old.onnx")
        assert new.has_features and not stale.has_features
        logits, feats = stale.with_features(x)
        assert feats is None and np.allclose(logits, new(x), atol=1e-5)

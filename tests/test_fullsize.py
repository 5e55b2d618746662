"""Full-size inputs: native-resolution tiles, held-out test parts, linear probes, and the auto detector that
sends each image to the model made for its size."""

from __future__ import annotations

import io
import json

import numpy as np
import pytest
import torch
from PIL import Image

from conftest import make_image, write_dataset
from synthcheck.analysis.evaluate import evaluate_sets
from synthcheck.data.folders import load_imageset
from synthcheck.data.preprocess import PreprocessSpec, load_image, tile_grid
from synthcheck.data.splits import make_splits
from synthcheck.inference.detector import AutoDetector, Detector
from synthcheck.inference.scoring import score_logits
from synthcheck.models.registry import build_model
from synthcheck.training.config import TrainConfig
from synthcheck.training.train import train


def test_tiles_are_native_pixels_spread_over_the_image():
    arr = np.random.default_rng(0).integers(0, 256, (300, 400, 3), dtype=np.uint8)
    t = tile_grid(arr, 100, 3)
    assert t.shape == (9, 100, 100, 3)
    assert np.array_equal(t[0], arr[:100, :100])                 # top-left
    assert np.array_equal(t[8], arr[200:, 300:])                 # bottom-right
    assert np.array_equal(t[4], arr[100:200, 150:250])           # centre
    one = tile_grid(arr, 100, 1)
    assert np.array_equal(one[0], arr[100:200, 150:250])         # n=1: the centre crop


def test_small_images_are_brought_up_to_one_tile():
    arr = np.full((40, 60, 3), 7, np.uint8)
    t = tile_grid(arr, 64, 2)
    assert t.shape == (4, 64, 64, 3) and (t == 7).all()


def test_spec_parse_and_validation():
    assert PreprocessSpec.parse(224, "tiles:3") == PreprocessSpec(224, "tiles", tiles=3)
    assert PreprocessSpec.parse(224, "crop").resize_policy == "crop"
    assert PreprocessSpec.parse(224, "tiles:3").label() == "tiles:3"
    with pytest.raises(ValueError):
        PreprocessSpec(32, "resize", tiles=2)
    with pytest.raises(ValueError):
        PreprocessSpec(32, "stretch")
    with pytest.raises(ValueError):
        PreprocessSpec.parse(32, "crop:2")
    # a tiles spec survives the checkpoint round trip, and older configs without the field still load
    spec = PreprocessSpec(224, "tiles", tiles=2)
    assert PreprocessSpec.from_dict(spec.to_dict()) == spec
    assert PreprocessSpec.from_dict({"image_size": 32, "resize_policy": "resize", "version": 1}).tiles == 1


def test_load_image_gives_tile_stacks():
    buf = io.BytesIO()
    make_image(1, np.random.default_rng(0), 96).save(buf, "PNG")
    x = load_image(buf.getvalue(), PreprocessSpec(32, "tiles", tiles=3))
    assert x.shape == (9, 3, 32, 32) and x.dtype == np.uint8


def test_tiled_score_is_the_mean_of_the_tile_logits():
    torch.manual_seed(0)
    model, _ = build_model("fastnet_s")
    x = np.random.default_rng(0).integers(0, 256, (5, 4, 3, 32, 32), dtype=np.uint8)
    per_tile = score_logits(model, x.reshape(20, 3, 32, 32), device=torch.device("cpu"))
    tiled = score_logits(model, x, device=torch.device("cpu"))
    assert tiled.shape == (5,)
    np.testing.assert_allclose(tiled, per_tile.reshape(5, 4).mean(1), rtol=0, atol=1e-6)


def big_image(label: int, rng, size: int) -> Image.Image:
    """A toy image of any size (multiple of 32) whose artifact, if any, is everywhere: toy 32 px images tiled."""
    k = size // 32
    return Image.fromarray(np.tile(np.asarray(make_image(label, rng, 32)), (k, k, 1)))


def _sourced_dataset(root, n=24, size=64):
    """real/ and ai/ folders whose names carry a source, like the DiffusionDB set (coco_*, imagenet_*, diffusion_*)."""
    rng = np.random.default_rng(1)
    (root / "real").mkdir(parents=True)
    (root / "ai").mkdir()
    for i in range(n):
        big_image(0, rng, size).save(root / "real" / f"{'coco' if i % 2 else 'imagenet'}_{i:04d}.png")
        big_image(1, rng, size).save(root / "ai" / f"diffusion_{i:04d}.png")
    return root


def test_held_out_test_part_is_seeded_disjoint_and_stratified_by_source(tmp_path):
    src = _sourced_dataset(tmp_path / "d")
    s = load_imageset(src, PreprocessSpec(32, "tiles", tiles=2), progress=False)
    assert s.images.shape[1:] == (4, 3, 32, 32)
    a = make_splits([s], 0.2, seed=3, test_fraction=0.25)
    b = make_splits([s], 0.2, seed=3, test_fraction=0.25)
    assert a.test.names == b.test.names and a.val.names == b.val.names
    parts = [set(a.train.names), set(a.val.names), set(a.test.names)]
    assert sum(map(len, parts)) == len(s) and not (parts[0] & parts[2]) and not (parts[1] & parts[2])
    sources = [n.split("/")[-1].split("_")[0] for n in a.test.names]
    assert {k: sources.count(k) for k in set(sources)} == {"diffusion": 6, "coco": 3, "imagenet": 3}
    assert a.report["test_held_out"]["seed"] == 3


@pytest.fixture(scope="module")
def two_models(tmp_path_factory):
    """A toy CIFAKE-sized model (32 px images) and a toy full-size model (96 px images, 2x2 native tiles)."""
    root = tmp_path_factory.mktemp("auto")
    small = write_dataset(root / "small", n_per_class=60, size=32)
    large = _sourced_dataset(root / "large", n=80, size=96)
    cfg = dict(model="fastnet_s", epochs=6, batch_size=16, lr=3e-3, patience=9, device="cpu")
    train([small], root / "run_small", TrainConfig(**cfg), progress=False)
    train([large], root / "run_large", TrainConfig(**cfg, image_size=32, resize_policy="tiles", tiles=2,
                                                  test_fraction=0.25), progress=False)
    return root


def test_tiled_training_learns_and_records_its_held_out_part(two_models):
    det = Detector.load(two_models / "run_large" / "model")
    assert det.spec == PreprocessSpec(32, "tiles", tiles=2)
    tm = det.config["test_metrics"]
    assert tm["n"] == 40 and tm["accuracy"] >= 0.9
    # evaluating the whole set scores exactly the held-out part: train and val files are dropped
    res = evaluate_sets(det, [two_models / "large"], progress=False, plots=False)
    m = next(iter(res["sets"].values()))
    assert m["n"] == 40 and m["excluded_train_identical"] == 120
    assert m["accuracy"] == pytest.approx(tm["accuracy"])


def test_explaining_a_tiled_verdict_covers_the_whole_image(two_models):
    from synthcheck.data.preprocess import tile_grid
    from synthcheck.inference.explain import gradcam

    det = Detector.load(two_models / "run_large" / "model")
    buf = io.BytesIO()
    img = big_image(1, np.random.default_rng(5), 96)
    img.save(buf, "PNG")
    cam, lime = det.explain(buf.getvalue(), ["gradcam", "lime"], n_samples=40)
    assert cam.image.shape == (96, 96, 3) and cam.attribution.shape == (96, 96) and cam.details["tiles"] == 4
    assert lime.attribution.shape == (96, 96)
    assert cam.prob_ai == pytest.approx(det.predict(buf.getvalue())[0].prob_ai, abs=1e-6)
    # 2 x 2 tiles of 32 px on 96 px leave a gap in the middle: the model never saw it, and the map says so
    assert np.isnan(cam.attribution[40:56, 40:56]).all() and np.isfinite(cam.attribution[:32, :32]).all()
    # each tile's region holds that tile's own Grad-CAM (the corners overlap no other tile)
    tiles = tile_grid(np.asarray(img), 32, 2)
    own = gradcam(det.model, np.ascontiguousarray(tiles[3]), cam.details["towards_ai"])
    assert np.allclose(cam.attribution[64:, 64:], own, atol=1e-5)


def test_linear_probe_trains_only_the_last_layer(tmp_path, tiny_dataset):
    cfg = TrainConfig(model="fastnet_s", epochs=1, batch_size=32, device="cpu", freeze_backbone=True,
                      max_steps_per_epoch=3)
    torch.manual_seed(0)
    before, _ = build_model("fastnet_s")
    train([tiny_dataset / "train"], tmp_path / "run", cfg, progress=False)
    from synthcheck.models.checkpoint import load_model

    after, _ = load_model(tmp_path / "run" / "model")
    changed = [n for n, p in after.state_dict().items()
               if p.dtype.is_floating_point and not torch.equal(p, before.state_dict()[n])]
    assert changed and all(n.startswith("backbone.head.") for n in changed)


def _png(size, label=1, seed=0):
    buf = io.BytesIO()
    big_image(label, np.random.default_rng(seed), size).save(buf, "PNG")
    return buf.getvalue()


def test_auto_detector_routes_by_size_and_says_which(two_models):
    small = Detector.load(two_models / "run_small" / "model")
    large = Detector.load(two_models / "run_large" / "model")
    auto = AutoDetector({"default": small, "photo": large})
    imgs = [_png(32, 1, 1), _png(96, 1, 2), _png(32, 0, 3), _png(96, 0, 4), b"not an image"]
    preds = auto.predict(imgs, names=[f"f{i}" for i in range(5)])
    assert [p.model for p in preds[:4]] == [small.model_id, large.model_id, small.model_id, large.model_id]
    assert all("auto:" in p.route for p in preds[:4]) and preds[4].error
    # each routed score equals that model's own
    assert preds[0].prob_ai == small.predict(imgs[0])[0].prob_ai
    assert preds[1].prob_ai == large.predict(imgs[1])[0].prob_ai
    assert preds[1].threshold == large.threshold
    # the boundary sits between the two training sizes (32 and 96 px: geometric mean ~55)
    assert auto.route_name(50, 400) == "default" and auto.route_name(60, 60) == "photo"
    # explanations come from the routed model
    (e,) = auto.explain(imgs[1], ["gradcam"])
    assert e.image.shape == (96, 96, 3) and e.details["tiles"] == 4  # the whole image, tile maps placed back
    with pytest.raises(ValueError, match="name it"):
        auto.probabilities_from_arrays(np.zeros((1, 3, 32, 32), np.uint8))


def test_auto_detector_evaluates_mixed_sets(two_models, tmp_path):
    small = Detector.load(two_models / "run_small" / "model")
    large = Detector.load(two_models / "run_large" / "model")
    auto = AutoDetector({"default": small, "photo": large})
    res = evaluate_sets(auto, [two_models / "small" / "test", two_models / "large"], progress=False, plots=False)
    a, b = res["sets"].values()
    assert a["routed"] == {"default": 120, "photo": 0} and b["routed"] == {"default": 0, "photo": 40}
    # same figures as the routed model alone (metrics at a common threshold: ranking and verdicts unchanged)
    alone = next(iter(evaluate_sets(large, [two_models / "large"], progress=False, plots=False)["sets"].values()))
    assert b["roc_auc"] == pytest.approx(alone["roc_auc"]) and b["accuracy"] == pytest.approx(alone["accuracy"])


def test_no_model_name_means_auto_with_the_bundled_models():
    det = Detector.load()
    assert isinstance(det, AutoDetector)
    assert det.route_name(32, 32) == "default" and det.route_name(512, 512) == "photo"
    assert det.route_name(1024, 768) == "photo"
    assert set(det.members) == {"default", "photo"}


def test_auto_detector_loads_a_member_only_when_an_image_needs_it():
    det = Detector.load()
    det.metadata = False  # a setting made before a member loads reaches it when it does
    assert det._loaded == {}
    (p,) = det.predict(_png(32))
    assert p.ok and p.model.startswith("default:") and set(det._loaded) == {"default"}
    assert det.member("default").metadata is False
    assert "default:" in det.describe() and "photo:" not in det.describe()  # the models that scored, only


def test_an_onnx_backed_detector_builds_its_network_only_to_explain():
    det = Detector.load("photo", backend="onnx")
    assert det._model is None  # scoring needs no PyTorch network
    (p,) = det.predict(_png(512))
    assert p.ok and det._model is None
    (e,) = det.explain(_png(512), ["gradcam"])
    assert det._model is not None and e.image.shape[:2] == (512, 512)


def test_evaluate_can_score_under_another_policy(two_models, tmp_path):
    from typer.testing import CliRunner

    from synthcheck.cli import app

    model = str(two_models / "run_large" / "model")
    for policy in ("tiles:3", "resize", "crop"):
        r = CliRunner().invoke(app, ["evaluate", model, str(two_models / "large"), "--policy", policy,
                                     "--out", str(tmp_path / policy.replace(":", "")), "--quiet"])
        assert r.exit_code == 0, r.output
        res = json.loads((tmp_path / policy.replace(":", "") / "evaluation.json").read_text())
        assert res["model"].endswith(f"[{policy}]")
        assert next(iter(res["sets"].values()))["n"] == 40
    r = CliRunner().invoke(app, ["evaluate", model, str(two_models / "large"), "--policy", "stretch"])
    assert r.exit_code == 2 and "unknown resize policy" in r.output


def test_a_tiled_model_warns_only_when_it_had_to_enlarge_the_image(two_models):
    det = Detector.load(two_models / "run_large" / "model")  # 32 px tiles, trained on 96 px images
    assert not det.predict(_png(64))[0].warnings
    assert not det.predict(_png(32))[0].warnings  # one whole tile at native resolution
    small = det.predict(np.random.default_rng(0).integers(0, 255, (24, 40, 3), dtype=np.uint8))[0]  # enlarged
    assert small.warnings and "enlarged" in small.warnings[0] and small.verdict == "uncertain"


def test_the_photo_model_gives_no_aspect_ratio_warning_on_ordinary_photos():
    """16:9 phone photos, 3:2 camera photos cropped a little, 1408 x 768 Gemini images: the tiles see them as
    trained (issue 37 found 119 of 119 Gemini images flagged by the old aspect-ratio rule)."""
    det = Detector.load("photo")
    rng = np.random.default_rng(0)
    shapes = [(1080, 1920), (1920, 1080), (849, 1280), (768, 1408), (3000, 4000), (400, 1600)]
    preds = det.predict([rng.integers(0, 255, (h, w, 3), dtype=np.uint8) for h, w in shapes])
    assert all(p.ok and not p.warnings for p in preds), [(s, p.warnings) for s, p in zip(shapes, preds)]
    assert det.domain_warnings(100, 300)  # shorter than one 128 px tile: enlarged


def test_a_set_too_big_to_decode_is_refused_with_the_numbers(tmp_path, monkeypatch):
    import synthcheck.data.store as store

    src = _sourced_dataset(tmp_path / "d", n=4)
    monkeypatch.setattr(store, "_available_memory", lambda: 1_000_000)
    with pytest.raises(ValueError, match=r"would take .* GiB decoded, more than this machine has free"):
        load_imageset(src, PreprocessSpec(224, "tiles", tiles=3), progress=False)


def test_robustness_report_runs_on_a_tiled_model(two_models, tmp_path):
    from synthcheck.analysis.robustness import robustness_report

    det = Detector.load(two_models / "run_large" / "model")
    rep = robustness_report(det, two_models / "large", tmp_path / "rob", limit=6, eps=(2,), steps=2, progress=False)
    assert rep["n"] == 12 and set(rep["damage"]) >= {"jpeg", "resize", "blur"}
    assert 0 <= rep["attacks"]["pgd"]["2"]["accuracy"] <= rep["clean"]["accuracy"]
    assert (tmp_path / "rob" / "robustness.png").exists() and (tmp_path / "rob" / "adversarial_examples.png").exists()


def test_identical_tiles_needs_every_tile_equal_not_only_the_first_and_last():
    """A small image (all tiles one and the same) is scored once; an image whose first and last tiles happen
    to match but whose others differ is scored tile by tile."""
    from synthcheck.data.preprocess import identical_tiles
    from synthcheck.inference.scoring import tile_mean

    rng = np.random.default_rng(0)
    one = np.repeat(rng.integers(0, 255, (1, 1, 3, 8, 8), dtype=np.uint8), 4, axis=1)
    ends = one.copy()
    ends[0, 1] = 255 - ends[0, 1]
    varied = rng.integers(0, 255, (1, 4, 3, 8, 8), dtype=np.uint8)
    imgs = np.concatenate([one, ends, varied])
    assert identical_tiles(imgs).tolist() == [True, False, False]
    seen = []
    tile_mean(lambda flat: (seen.append(len(flat)), np.arange(len(flat), dtype=np.float32))[1], imgs)
    assert seen == [1 + 4 + 4]


def test_a_photo_verdict_says_what_its_score_meant_on_unseen_sources_and_a_cifake_one_does_not():
    det = Detector.load()
    photo, small = det.predict([_png(600), _png(32)])
    table = det.member("photo").reading
    assert photo.model.startswith("photo:") and photo.reading["ai_share"] in table["ai_share"]
    assert photo.reading["range"][0] <= photo.prob_ai <= photo.reading["range"][1]
    assert photo.reading["text"].startswith("Among images from sources it never saw, mixed half AI and half real")
    assert photo.to_dict()["reading"] == photo.reading
    assert small.model.startswith("default:") and small.reading is None  # no left-out table for CIFAKE's model

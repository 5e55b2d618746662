"""ONNX export and the ONNX Runtime scorer.

The exported graph takes the same uint8 [N,3,S,S] batch as `scoring.score_logits` (the /255 and the
model's own normalisation are inside it) and returns one logit per image, with a dynamic batch axis.
Preprocessing (decode, fit to S) stays in `data/preprocess.py` for every backend, so what ONNX Runtime
scores is exactly what PyTorch scores; `export_onnx` checks the two agree before it writes anything.
"""

from __future__ import annotations

import json
import shutil
import time
from pathlib import Path

import numpy as np
import torch

from ..models.checkpoint import load_model
from ..models.features import FEATURES, aggregate
from .scoring import cpu_threads

ONNX_FILE = "model.onnx"
ONNX_INFO = "onnx.json"
TOLERANCE = 1e-4  # max |logit difference| allowed between PyTorch and ONNX Runtime


class _FromUint8(torch.nn.Module):
    """uint8 pixels -> the model's logit: the graph carries the whole float path. With `features`, also the
    attribution features of each image (`models.features`: read by the same hooks as in PyTorch scoring), so
    ONNX Runtime and OpenVINO name the generator from the same pass, as PyTorch does."""

    def __init__(self, model: torch.nn.Module, features: bool = False):
        super().__init__()
        self.model, self.tap = model, None
        if features:
            import copy

            from ..models.features import FeatureTap

            self.model = copy.deepcopy(model)  # the hooks stay on the copy
            self.tap = FeatureTap(self.model, keep_device=True)

    def forward(self, images: torch.Tensor):
        x = images.float() / 255.0
        if self.tap is None:
            return self.model(x)
        logits = self.model(x)
        return logits, self.tap.take()


def _with_features(model: torch.nn.Module, size: int) -> _FromUint8:
    """The export wrapper with the features output when its logits are the plain model's, else logits only."""
    plain = _FromUint8(model).eval()
    x = torch.randint(0, 256, (2, 3, size, size), dtype=torch.uint8, generator=torch.Generator().manual_seed(0))
    try:
        both = _FromUint8(model, features=True).eval()
        with torch.inference_mode():
            same = torch.allclose(both(x)[0], plain(x), atol=1e-5)
    except Exception:  # e.g. a network whose stages cannot be hooked
        return plain
    return both if same else plain


def _is_current(value: str | None) -> bool:
    """The graph's `synthcheck.features` metadata names this version's attribution features (older graphs
    carry the last Linear's input, which today's heads do not read: such a graph scores, and the generator
    comes from PyTorch). Each runtime reads the metadata from the model it already loaded."""
    return value == json.dumps(FEATURES)


def _session(path: Path, threads: int | None = None):
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    opts.intra_op_num_threads = threads or cpu_threads()
    opts.inter_op_num_threads = 1
    # idle worker threads sleep rather than spin: the cores are shared with the decoding threads
    opts.add_session_config_entry("session.intra_op.allow_spinning", "0")
    return ort.InferenceSession(str(path), sess_options=opts, providers=["CPUExecutionProvider"])


class OnnxScorer:
    """Logits from an exported model with ONNX Runtime (CPU); same call shape as `score_logits`."""

    backend, precision = "onnx", "fp32"

    def __init__(self, path: Path, threads: int | None = None):
        self.path = Path(path)
        self.session = _session(self.path, threads)
        self.input = self.session.get_inputs()[0].name
        meta = self.session.get_modelmeta().custom_metadata_map
        self.has_features = len(self.session.get_outputs()) > 1 and _is_current(meta.get("synthcheck.features"))
        self.tile_rule = _tile_rule(meta.get("synthcheck.arch"))

    def __call__(self, images: np.ndarray, batch_size: int = 512) -> np.ndarray:
        return self.with_features(images, batch_size, features=False)[0]

    def _run(self, chunk: np.ndarray, features: bool) -> list[np.ndarray]:
        return self.session.run(None if features else [self.session.get_outputs()[0].name], {self.input: chunk})

    def with_features(self, images: np.ndarray, batch_size: int = 512, features: bool = True):
        """-> (logits, features or None); for tiles the tiles' logits combined by the model's rule and the mean
        feature vector per image, as `scoring.score_with_features` (identical tiles scored once, chunks of at least
        one image's tiles)."""
        from .scoring import cpu_chunk, tile_mean

        images = np.ascontiguousarray(images, dtype=np.uint8)
        features = features and self.has_features
        kept: list[np.ndarray] = []

        def flat_scores(flat, min_chunk=1):
            # small chunks stay in cache: 2,490 img/s at 64 vs 1,780 at 1024 (2 cores, 32 px)
            bs = min(batch_size, max(cpu_chunk(flat.shape[-1]), min_chunk))
            out = []
            for i in range(0, len(flat), bs):  # padded chunks: batch-invariant, as score_logits
                chunk = flat[i:i + bs]
                k = len(chunk)
                if k < bs:
                    chunk = np.concatenate([chunk, np.zeros((bs - k, *chunk.shape[1:]), np.uint8)])
                res = self._run(chunk, features)
                out.append(res[0].reshape(-1)[:k])
                if features:
                    kept.append(res[1][:k])
            return np.concatenate(out).astype(np.float32) if out else np.zeros(0, np.float32)

        if images.ndim != 5:
            logits = flat_scores(images)
            return logits, (aggregate(np.concatenate(kept), images) if features and kept else None)
        n, t = images.shape[:2]
        logits = tile_mean(lambda flat: flat_scores(flat, t), images, self.tile_rule)
        if not features:
            return logits, None
        f = np.concatenate(kept).astype(np.float32) if kept else np.zeros((0, 0), np.float32)
        return logits, aggregate(f, images)


class OpenVinoScorer(OnnxScorer):
    """The same model.onnx compiled by OpenVINO for this CPU. Why a second runtime: with bf16 on AMX/AVX512-BF16
    cores it runs the photo model's depthwise network 2.5x faster than ONNX Runtime fp32 and ~4x faster than
    PyTorch bf16 (ONNX Runtime has no bf16 CPU kernels; BENCHMARKS.md), with PyTorch bf16's accuracy. In fp32 it
    matches ONNX Runtime's scores and speed. Same call shape and chunking as `OnnxScorer`."""

    backend = "openvino"

    def __init__(self, path: Path, precision: str = "bf16", threads: int | None = None):
        import threading

        import openvino as ov

        self.path, self.precision = Path(path), precision
        core = ov.Core()
        graph = core.read_model(str(self.path))
        key = ["framework", "synthcheck.features"]
        self.compiled = core.compile_model(graph, "CPU", {
            "INFERENCE_PRECISION_HINT": "bf16" if precision == "bf16" else "f32", "PERFORMANCE_HINT": "LATENCY",
            "INFERENCE_NUM_THREADS": threads or cpu_threads()})
        self.request = self.compiled.create_infer_request()
        self.has_features = len(self.compiled.outputs) > 1 and graph.has_rt_info(key) and _is_current(
            graph.get_rt_info(key).astype(str))
        arch = ["framework", "synthcheck.arch"]
        self.tile_rule = _tile_rule(graph.get_rt_info(arch).astype(str) if graph.has_rt_info(arch) else None)
        self._lock = threading.Lock()  # one infer request: the server's threads take turns

    def _run(self, chunk: np.ndarray, features: bool) -> list[np.ndarray]:
        with self._lock:
            res = self.request.infer({0: chunk})
            return [np.array(res[o]) for o in self.compiled.outputs[: 2 if features else 1]]


class CascadeScorer:
    """bf16 first, fp32 where it could change a verdict. Every image is scored by the fast bf16 runtime; those
    whose bf16 logit lies within `margin` of a verdict edge (the uncertain band's ends, in logit space) are
    scored again in fp32 and keep the fp32 logit and features. `margin` is the largest bf16-vs-fp32 logit
    difference measured on the model's own images, with room to spare (`scripts/bf16_margin.py`), so every
    verdict is fp32's while most images are scored once, in bf16. Why not bf16 alone: on the photo model it
    changes ~2% of verdicts (BENCHMARKS.md), over the 1% the speed goal allows."""

    backend, precision = "openvino+onnx", "bf16+fp32"

    def __init__(self, fast: OnnxScorer, exact: OnnxScorer, edges, margin: float):
        self.fast, self.exact = fast, exact
        self.edges, self.margin = np.asarray([e for e in edges if np.isfinite(e)], np.float64), float(margin)
        self.has_features = fast.has_features and exact.has_features
        self.rescored = 0  # images scored twice so far (for inspection and tests)

    def __call__(self, images: np.ndarray, batch_size: int = 512) -> np.ndarray:
        return self.with_features(images, batch_size, features=False)[0]

    def with_features(self, images: np.ndarray, batch_size: int = 512, features: bool = True):
        logits, feats = self.fast.with_features(images, batch_size, features)
        if not len(logits) or not len(self.edges):
            return logits, feats
        near = np.flatnonzero(np.abs(logits[:, None].astype(np.float64) - self.edges[None]).min(1) <= self.margin)
        if len(near):
            exact_logits, exact_feats = self.exact.with_features(np.asarray(images)[near], batch_size, features)
            logits[near] = exact_logits
            if feats is not None and exact_feats is not None:
                feats[near] = exact_feats
            self.rescored += len(near)
        return logits, feats


def verdict_edges(config: dict) -> list[float]:
    """The logits at which a verdict changes: the uncertain band's ends (P(AI) = sigmoid((logit - shift) / T))."""
    from .prediction import uncertain_range

    t, shift = float(config.get("temperature", 1.0)), float(config.get("logit_shift", 0.0))
    return [shift + t * float(np.log(q / (1 - q))) for q in uncertain_range(config) if 0 < q < 1]


def openvino_available() -> bool:
    import importlib.util

    return importlib.util.find_spec("openvino") is not None


def fast_cpu_scorer(config: dict, directory: Path | None, device: torch.device, precision: str) -> "OnnxScorer | None":
    """backend "auto": the fastest CPU runtime for this model, precision and CPU, from model.onnx where the
    model's config names one (`cpu_backend`); None means PyTorch. With an attribution head, only a graph with
    the features output. Measured (BENCHMARKS.md):
      "onnx"                  ONNX Runtime fp32 on CPU (PyTorch fp32's scores): the photo model's depthwise
                              network is faster there than even PyTorch bf16 on AMX cores
                              (benchmarks/photo_throughput.py);
      "onnx-where-no-bf16"    the same, unless "auto" precision picks bf16 (a CPU with AMX/AVX512-BF16): the
                              32-px model is faster in PyTorch bf16 there (benchmarks/predict_throughput.py).
    An explicit `--precision bf16` on a CPU with native bf16 takes OpenVINO bf16 for either (the fastest bf16
    runtime for these networks), PyTorch bf16 where OpenVINO is not installed. With "auto" precision on such a
    CPU, a model whose config carries `bf16_margin` takes the bf16-then-fp32 cascade (`CascadeScorer`): fp32's
    verdicts at close to bf16's speed."""
    from .attribution import HEAD_FILE
    from .scoring import cpu_has_bf16

    mode = config.get("cpu_backend")
    if (device.type != "cpu" or mode not in ("onnx", "onnx-where-no-bf16") or directory is None
            or not (directory / ONNX_FILE).exists()):
        return None
    bf16_here = cpu_has_bf16() and openvino_available()
    if precision == "bf16":
        if not bf16_here:
            return None
        scorer = OpenVinoScorer(directory / ONNX_FILE, "bf16")
    elif mode == "onnx-where-no-bf16" and precision == "auto" and cpu_has_bf16():
        return None
    elif precision == "auto" and bf16_here and config.get("bf16_margin") is not None:
        try:
            fast = OpenVinoScorer(directory / ONNX_FILE, "bf16")
        except Exception as e:  # an OpenVINO that cannot compile here: the exact path still works
            import warnings

            warnings.warn(f"OpenVINO bf16 unavailable ({type(e).__name__}: {e}); scoring with ONNX Runtime fp32")
            fast = None
        scorer = OnnxScorer(directory / ONNX_FILE)
        if fast is not None:
            scorer = CascadeScorer(fast, scorer, verdict_edges(config), config["bf16_margin"])
    else:
        scorer = OnnxScorer(directory / ONNX_FILE)
    return scorer if scorer.has_features or not (directory / HEAD_FILE).exists() else None


def export_onnx(model_dir: Path, out_dir: Path, opset: int = 18, check_batch: int = 64, seed: int = 0) -> dict:
    """Write OUT/model.onnx (+ the model's config, weights and card, so OUT is a complete model directory).

    Raises ValueError if ONNX Runtime's logits differ from PyTorch's by more than TOLERANCE.
    """
    model_dir, out_dir = Path(model_dir), Path(out_dir)
    model, config = load_model(model_dir)
    size = config["preprocess"]["image_size"]
    wrapper = _with_features(model, size)
    example = torch.randint(0, 256, (2, 3, size, size), dtype=torch.uint8)
    out_dir.mkdir(parents=True, exist_ok=True)
    if out_dir.resolve() != model_dir.resolve():
        for f in model_dir.iterdir():
            if f.is_file() and f.name not in (ONNX_FILE, ONNX_INFO):
                shutil.copy2(f, out_dir / f.name)
    path = out_dir / ONNX_FILE
    t0 = time.perf_counter()
    features = wrapper.tap is not None
    torch.onnx.export(wrapper, (example,), str(path), input_names=["images_uint8"],
                      output_names=["logits", "features"] if features else ["logits"],
                      dynamic_shapes={"images": {0: torch.export.Dim("batch")}}, opset_version=opset, dynamo=True,
                      verbose=False, external_data=False)
    _add_metadata(path, config, FEATURES if features else None)
    export_s = time.perf_counter() - t0

    rng = np.random.default_rng(seed)
    check = rng.integers(0, 256, (check_batch, 3, size, size), dtype=np.uint8)
    with torch.inference_mode():
        want = _FromUint8(model).eval()(torch.from_numpy(check)).numpy()
        want_f = aggregate(wrapper(torch.from_numpy(check))[1].numpy(), check) if features else None
    got, got_f = OnnxScorer(path).with_features(check)
    diff = float(np.abs(got - want).max())
    if features:
        diff = max(diff, float(np.abs(got_f - want_f).max()))
    info = {"file": ONNX_FILE, "input": f"uint8 [batch, 3, {size}, {size}]",
            "output": "logit per image" + (f", attribution features per image ({FEATURES})" if features else ""),
            "opset": opset, "preprocess": config["preprocess"], "temperature": config.get("temperature"),
            "logit_shift": config.get("logit_shift", 0.0), "threshold": config.get("threshold"), "check": {"images": check_batch, "max_abs_logit_diff": diff,
                                                            "tolerance": TOLERANCE},
            "torch": torch.__version__, "onnxruntime": _ort_version(), "export_s": round(export_s, 2)}
    if diff > TOLERANCE:
        path.unlink()
        raise ValueError(f"ONNX Runtime disagrees with PyTorch by {diff:.2e} (> {TOLERANCE:g}); export discarded")
    (out_dir / ONNX_INFO).write_text(json.dumps(info, indent=2))
    return info


def _tile_rule(arch_json: str | None) -> str:
    """The stored architecture's tile rule (models.registry.combine_tiles); files exported before it: "logit"."""
    return json.loads(arch_json).get("tile_rule", "logit") if arch_json else "logit"


def _add_metadata(path: Path, config: dict, features: str | None = None):
    """The .onnx file alone says how to feed it: preprocessing, calibration and operating point."""
    import onnx

    m = onnx.load(str(path))
    for key, value in {"synthcheck.preprocess": config["preprocess"], "synthcheck.temperature": config.get("temperature"),
                       "synthcheck.logit_shift": config.get("logit_shift", 0.0),
                       "synthcheck.threshold": config.get("threshold"), "synthcheck.arch": config["arch"],
                       **({"synthcheck.features": features} if features else {})}.items():
        p = m.metadata_props.add()
        p.key, p.value = key, json.dumps(value)
    onnx.save(m, str(path))


def _ort_version() -> str:
    import onnxruntime

    return onnxruntime.__version__

"""ONNX export and the ONNX Runtime scorer.

The exported graph takes the same uint8 [N,3,S,S] batch as `scoring.score_logits` (the /255 and the
model's own normalisation are inside it) and returns one logit per image, with a dynamic batch axis.
Preprocessing (decode, fit to S) stays in `data/preprocess.py` for every backend, so what ONNX Runtime
scores is exactly what PyTorch scores; `export_onnx` checks the two agree before it writes anything.
"""

from __future__ import annotations

import json
import os
import shutil
import time
from pathlib import Path

import numpy as np
import torch

from ..models.checkpoint import load_model

ONNX_FILE = "model.onnx"
ONNX_INFO = "onnx.json"
TOLERANCE = 1e-4  # max |logit difference| allowed between PyTorch and ONNX Runtime


class _FromUint8(torch.nn.Module):
    """uint8 pixels -> the model's logit: the graph carries the whole float path."""

    def __init__(self, model: torch.nn.Module):
        super().__init__()
        self.model = model

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.model(images.float() / 255.0)


def _session(path: Path, threads: int | None = None):
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    opts.intra_op_num_threads = threads or os.cpu_count() or 1
    opts.inter_op_num_threads = 1
    # idle worker threads sleep rather than spin: the cores are shared with the decoding threads
    opts.add_session_config_entry("session.intra_op.allow_spinning", "0")
    return ort.InferenceSession(str(path), sess_options=opts, providers=["CPUExecutionProvider"])


class OnnxScorer:
    """Logits from an exported model with ONNX Runtime (CPU); same call shape as `score_logits`."""

    def __init__(self, path: Path, threads: int | None = None):
        self.path = Path(path)
        self.session = _session(self.path, threads)
        self.input = self.session.get_inputs()[0].name

    def __call__(self, images: np.ndarray, batch_size: int = 512) -> np.ndarray:
        from .scoring import cpu_chunk

        images = np.ascontiguousarray(images, dtype=np.uint8)
        if images.ndim == 5:  # tiles: mean logit per image, as score_logits
            from .scoring import tile_mean

            return tile_mean(lambda flat: self(flat, batch_size), images)
        # small chunks stay in cache: 2,490 img/s at 64 vs 1,780 at 1024 (2 cores, 32 px)
        batch_size = min(batch_size, cpu_chunk(images.shape[-1]))
        out = []
        for i in range(0, len(images), batch_size):  # padded chunks: batch-invariant, as score_logits
            chunk = images[i:i + batch_size]
            k = len(chunk)
            if k < batch_size:
                chunk = np.concatenate([chunk, np.zeros((batch_size - k, *chunk.shape[1:]), np.uint8)])
            out.append(self.session.run(None, {self.input: chunk})[0].reshape(-1)[:k])
        return np.concatenate(out).astype(np.float32) if out else np.zeros(0, np.float32)


def export_onnx(model_dir: Path, out_dir: Path, opset: int = 18, check_batch: int = 64, seed: int = 0) -> dict:
    """Write OUT/model.onnx (+ the model's config, weights and card, so OUT is a complete model directory).

    Raises ValueError if ONNX Runtime's logits differ from PyTorch's by more than TOLERANCE.
    """
    model_dir, out_dir = Path(model_dir), Path(out_dir)
    model, config = load_model(model_dir)
    size = config["preprocess"]["image_size"]
    wrapper = _FromUint8(model).eval()
    example = torch.randint(0, 256, (2, 3, size, size), dtype=torch.uint8)
    out_dir.mkdir(parents=True, exist_ok=True)
    if out_dir.resolve() != model_dir.resolve():
        for f in model_dir.iterdir():
            if f.is_file() and f.name not in (ONNX_FILE, ONNX_INFO):
                shutil.copy2(f, out_dir / f.name)
    path = out_dir / ONNX_FILE
    t0 = time.perf_counter()
    torch.onnx.export(wrapper, (example,), str(path), input_names=["images_uint8"], output_names=["logits"],
                      dynamic_shapes={"images": {0: torch.export.Dim("batch")}}, opset_version=opset, dynamo=True,
                      verbose=False, external_data=False)
    _add_metadata(path, config)
    export_s = time.perf_counter() - t0

    rng = np.random.default_rng(seed)
    check = rng.integers(0, 256, (check_batch, 3, size, size), dtype=np.uint8)
    with torch.inference_mode():
        want = wrapper(torch.from_numpy(check)).numpy()
    got = OnnxScorer(path)(check)
    diff = float(np.abs(got - want).max())
    info = {"file": ONNX_FILE, "input": f"uint8 [batch, 3, {size}, {size}]", "output": "logit per image",
            "opset": opset, "preprocess": config["preprocess"], "temperature": config.get("temperature"),
            "logit_shift": config.get("logit_shift", 0.0), "threshold": config.get("threshold"), "check": {"images": check_batch, "max_abs_logit_diff": diff,
                                                            "tolerance": TOLERANCE},
            "torch": torch.__version__, "onnxruntime": _ort_version(), "export_s": round(export_s, 2)}
    if diff > TOLERANCE:
        path.unlink()
        raise ValueError(f"ONNX Runtime disagrees with PyTorch by {diff:.2e} (> {TOLERANCE:g}); export discarded")
    (out_dir / ONNX_INFO).write_text(json.dumps(info, indent=2))
    return info


def _add_metadata(path: Path, config: dict):
    """The .onnx file alone says how to feed it: preprocessing, calibration and operating point."""
    import onnx

    m = onnx.load(str(path))
    for key, value in {"synthcheck.preprocess": config["preprocess"], "synthcheck.temperature": config.get("temperature"),
                       "synthcheck.logit_shift": config.get("logit_shift", 0.0),
                       "synthcheck.threshold": config.get("threshold"), "synthcheck.arch": config["arch"]}.items():
        p = m.metadata_props.add()
        p.key, p.value = key, json.dumps(value)
    onnx.save(m, str(path))


def _ort_version() -> str:
    import onnxruntime

    return onnxruntime.__version__

"""What both front ends (the REST API and the web page) call: the server's settings (`ServeSettings`), the one
thread that runs the model with cross-request batching (`ModelWorker`), and `Service` (detect and explain,
async, never raising for bad images)."""

from __future__ import annotations

import asyncio
import io
import os
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from typing import Callable

import numpy as np

from ..inference.detector import Detector


@dataclass
class ServeSettings:
    """Every limit the server enforces; `from_env` reads SYNTHCHECK_* variables over the defaults."""

    model: str | None = None
    backend: str = "auto"               # per model: ONNX Runtime where measured faster on CPU, else PyTorch
    precision: str = "auto"             # bf16 where the CPU has native bf16, else fp32 (or "fp32" | "bf16")
    max_request_mb: float = 20.0
    max_pixels: int = 50_000_000
    max_files: int = 16
    timeout_s: float = 30.0
    api_key: str | None = None          # off when None; clients send it in the X-API-Key header
    cors_origins: list[str] = field(default_factory=list)
    batching: bool = True               # join concurrent requests on the model (measured in BENCHMARKS.md)
    max_batch: int = 256                # images per model call
    decode_workers: int = 0             # 0: one per core
    ui: bool = True                     # mount the Gradio page at /
    resave_check: bool = True           # the JPEG re-save trace for every upload (~2 ms per 512-px image)

    @classmethod
    def from_env(cls, **overrides) -> "ServeSettings":
        """Defaults, then SYNTHCHECK_* environment variables, then the non-None keyword overrides."""
        s = cls()
        env = os.environ
        conv = {"max_request_mb": float, "max_pixels": int, "max_files": int, "timeout_s": float,
                "max_batch": int, "decode_workers": int, "batching": _flag, "ui": _flag, "resave_check": _flag}
        for name, fn in conv.items():
            if f"SYNTHCHECK_{name.upper()}" in env:
                setattr(s, name, fn(env[f"SYNTHCHECK_{name.upper()}"]))
        if env.get("SYNTHCHECK_API_KEY"):
            s.api_key = env["SYNTHCHECK_API_KEY"]
        if env.get("SYNTHCHECK_CORS_ORIGINS"):
            s.cors_origins = [o.strip() for o in env["SYNTHCHECK_CORS_ORIGINS"].split(",") if o.strip()]
        for name in ("model", "backend", "precision"):
            if env.get(f"SYNTHCHECK_{name.upper()}"):
                setattr(s, name, env[f"SYNTHCHECK_{name.upper()}"])
        for k, v in overrides.items():
            if v is not None:
                setattr(s, k, v)
        return s

    def public(self) -> dict:
        d = asdict(self)
        d["api_key"] = self.api_key is not None  # never echo the key
        return d


def _flag(v: str) -> bool:
    return v.strip().lower() in ("1", "true", "yes", "on")


class ModelWorker:
    """The one thread that runs the model, with cross-request batching of scoring calls.

    Batching is opportunistic: while a batch runs, new requests queue; the next call takes all of
    them (up to `max_batch` images). An idle server adds no waiting to a lone request.
    """

    def __init__(self, detector: Detector, batching: bool = True, max_batch: int = 256):
        self.detector = detector
        self.batching = batching
        self.max_batch = max_batch
        self.executor = ThreadPoolExecutor(1, thread_name_prefix="synthcheck-model")
        self._queue: asyncio.Queue | None = None
        self._task: asyncio.Task | None = None
        self.calls = 0
        self.images = 0

    async def run(self, fn: Callable, *args):
        """Run any model work (e.g. an explanation) on the model thread."""
        return await asyncio.get_running_loop().run_in_executor(self.executor, fn, *args)

    async def score(self, decoded: list[dict]) -> np.ndarray:
        """Calibrated P(AI) for decoded images (`Detector.decode` results that hold pixels)."""
        if not self.batching:
            self.calls += 1
            self.images += len(decoded)
            return await self.run(self.detector.score_decoded, decoded)
        if self._task is None or self._task.done():
            self._queue = asyncio.Queue()
            self._task = asyncio.create_task(self._loop())
        fut = asyncio.get_running_loop().create_future()
        await self._queue.put((decoded, fut))
        return await fut

    async def _loop(self):
        queue = self._queue
        while True:
            items = [await queue.get()]
            n = len(items[0][0])
            while n < self.max_batch and not queue.empty():
                item = queue.get_nowait()
                items.append(item)
                n += len(item[0])
            live = [(p, f) for p, f in items if not f.done()]  # a timed-out request's future is cancelled
            if not live:
                continue
            try:
                probs = await self.run(self.detector.score_decoded, [d for batch, _ in live for d in batch])
            except Exception as e:  # fail these requests, keep serving
                for _, f in live:
                    if not f.done():
                        f.set_exception(e)
                continue
            self.calls += 1
            self.images += len(probs)
            at = 0
            for p, f in live:
                if not f.done():
                    f.set_result(probs[at:at + len(p)])
                at += len(p)

    def stop(self):
        if self._task is not None:
            self._task.cancel()
        self.executor.shutdown(wait=False, cancel_futures=True)


def _model_info(det: Detector) -> dict:
    c = det.config
    return {"id": det.model_id, "arch": c["arch"]["name"], "backend": det.backend, "precision": det.precision,
            "input_size": det.spec.image_size, "resize_policy": det.spec.label(), "threshold": det.threshold,
            "uncertain_band": det.uncertain_band, "uncertain_range": list(det.uncertain_range),
            "temperature": det.temperature,
            "test_metrics": {k: c.get("test_metrics", {}).get(k) for k in ("n", "accuracy", "roc_auc", "ece")}
            if c.get("test_metrics") else None,
            "trained_on_sizes": c.get("data", {}).get("image_sizes")}


class Service:
    """What both front ends (REST and the web page) call: detect and explain, async, never raising
    for bad images. Holds the loaded model, the decode pool and the model thread."""

    def __init__(self, detector: Detector, settings: ServeSettings):
        self.detector = detector
        self.settings = settings
        detector.max_pixels = settings.max_pixels
        detector.resave_check = settings.resave_check  # people check a few images at a time: the whole file history
        self.decoders = ThreadPoolExecutor(settings.decode_workers or os.cpu_count() or 1,
                                           thread_name_prefix="synthcheck-decode")
        self.worker = ModelWorker(detector, settings.batching, settings.max_batch)
        self.started = time.time()

    async def detect(self, files: list[tuple[str, bytes]]) -> list[dict]:
        """[(name, bytes)] -> one result dict per file, in order; failures carry "error"."""
        loop = asyncio.get_running_loop()
        t0 = time.perf_counter()
        decoded = await asyncio.gather(*(loop.run_in_executor(self.decoders, self._timed_decode, f) for f in files))
        good = [d for d in decoded if "pixels" in d]
        t_model = 0.0
        probs = np.zeros(0)
        if good:
            t1 = time.perf_counter()
            probs = await self.worker.score(good)
            t_model = time.perf_counter() - t1
        preds = self.detector.predictions([name for name, _ in files], decoded, probs)
        results = []
        for (name, data), d, pred in zip(files, decoded, preds):
            r: dict = {"file": name, "bytes": len(data)}
            if pred.ok:
                r.update(prob_ai=pred.prob_ai, verdict=pred.verdict, pixel_verdict=pred.pixel_verdict,
                         reason=pred.reason, evidence=pred.evidence, warnings=pred.warnings,
                         width=d["size"][1], height=d["size"][0], model=pred.model, route=pred.route,
                         threshold=pred.threshold, uncertain_band=pred.uncertain_band,
                         uncertain_range=list(pred.uncertain_range), generator=pred.generator,
                         reading=pred.reading)
            else:
                r["error"] = pred.error
            r["timing_ms"] = {"decode": round(d["decode_s"] * 1000, 2), "model": round(t_model * 1000, 2),
                              "total": round((time.perf_counter() - t0) * 1000, 2)}
            results.append(r)
        return results

    def _timed_decode(self, item: tuple[str, bytes]) -> dict:
        t0 = time.perf_counter()
        name, data = item
        d = self.detector.decode((data, name))
        d["decode_s"] = time.perf_counter() - t0
        return d

    async def explain(self, name: str, data: bytes, methods: list[str]) -> list[tuple]:
        """-> [(Explanation, PNG bytes)] per method, from one decode and one scoring of the image.
        Raises ImageError for an image that cannot be scored."""
        from ..inference.explain import render

        expls = await self.worker.run(self.detector.explain, data, methods, name)
        loop = asyncio.get_running_loop()
        out = []
        for expl in expls:
            reference = self.detector.reference_spectra() if expl.method == "spectrum" else None
            buf = io.BytesIO()
            await loop.run_in_executor(self.decoders, render, expl, buf, reference)
            out.append((expl, buf.getvalue()))
        return out

    def model_info(self) -> dict:
        members = getattr(self.detector, "members", None)
        if members:
            return {"id": self.detector.model_id, "routing": self.detector.describe(),
                    "members": {k: _model_info(m) for k, m in members.items()}}
        return _model_info(self.detector)

    def close(self):
        self.worker.stop()
        self.decoders.shutdown(wait=False, cancel_futures=True)

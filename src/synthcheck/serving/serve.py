"""REST API (FastAPI) and web page (Gradio, mounted at /) over one `Detector`.

Request path: bounded body read -> in-memory multipart parse -> decode on a thread pool
(`Detector.decode`) -> concurrent requests' pixels joined into one batch on the single model
thread (`ModelWorker`) -> `Detector.make_prediction`. The event loop never runs the model or a
decoder, and every model call (scoring and explanations, whose captum hooks must not see other
requests' forward passes) goes through that one thread.

Everything a client sends is treated as data: limits are checked before work, upload names are
only echoed back, uploads are parsed in memory (the multipart parser's spill files for parts over
1 MB are deleted before the response), and every failure is a JSON 4xx.
"""

from __future__ import annotations

import asyncio
import base64
import io
import logging
import os
import secrets
import time
from contextlib import asynccontextmanager
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from typing import Callable

import numpy as np
from fastapi import Depends, FastAPI, Query, Request
from fastapi.exceptions import RequestValidationError
from fastapi.middleware.cors import CORSMiddleware
from fastapi.responses import JSONResponse, Response
from fastapi.security import APIKeyHeader
from starlette.datastructures import UploadFile
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.formparsers import MultiPartException, MultiPartParser

from . import __version__
from .detector import Detector, bundled_models
from .preprocess import ImageError

log = logging.getLogger("synthcheck.serve")

API_KEY_HEADER = "X-API-Key"
MAX_NAME = 200  # characters of a client's file name echoed back


@dataclass
class ServeSettings:
    """Every limit the server enforces; `from_env` reads SYNTHCHECK_* variables over the defaults."""

    model: str | None = None
    backend: str = "torch"              # or "onnx" (ONNX Runtime)
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

    @classmethod
    def from_env(cls, **overrides) -> "ServeSettings":
        """Defaults, then SYNTHCHECK_* environment variables, then the non-None keyword overrides."""
        s = cls()
        env = os.environ
        conv = {"max_request_mb": float, "max_pixels": int, "max_files": int, "timeout_s": float,
                "max_batch": int, "decode_workers": int, "batching": _flag, "ui": _flag}
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


def app_from_env() -> FastAPI:
    """uvicorn factory (`synthcheck serve`, or `uvicorn synthcheck.serve:app_from_env --factory`)."""
    return create_app(ServeSettings.from_env())


class ApiError(Exception):
    """A client error with its HTTP status; rendered as {"error": {"code", "message"}}."""

    def __init__(self, status: int, code: str, message: str, extra: dict | None = None):
        super().__init__(message)
        self.status, self.code, self.message, self.extra = status, code, message, extra or {}


def error_body(code: str, message: str, **extra) -> dict:
    return {"error": {"code": code, "message": message}, **extra}


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
                         uncertain_range=list(pred.uncertain_range), generator=pred.generator)
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
        from .explain import render

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


# --- request parsing --------------------------------------------------------------------------

async def read_body(request: Request, limit: int) -> bytes:
    """The whole body, refusing (413) as soon as it passes `limit` bytes, whatever Content-Length says."""
    declared = request.headers.get("content-length")
    if declared is not None:
        if not declared.isdigit():
            raise ApiError(400, "bad_request", "invalid Content-Length header")
        if int(declared) > limit:
            raise ApiError(413, "request_too_large", f"request body is {int(declared):,} bytes, over the limit of {limit:,}")
    body = bytearray()
    async for chunk in request.stream():
        body += chunk
        if len(body) > limit:
            raise ApiError(413, "request_too_large", f"request body is over the limit of {limit:,} bytes")
    return bytes(body)


def _clean_name(name: str | None, i: int) -> str:
    """A client's file name, kept only as a label: control characters dropped, length capped."""
    if not name:
        return f"upload-{i}"
    name = "".join(ch for ch in name if ch.isprintable())
    return name[:MAX_NAME] or f"upload-{i}"


async def read_images(request: Request, settings: ServeSettings) -> list[tuple[str, bytes]]:
    """Multipart form (any field holding files) or a bare body (one image). Content decides the type later."""
    limit = int(settings.max_request_mb * 1024 * 1024)
    body = await read_body(request, limit)
    ctype = request.headers.get("content-type", "")
    if not ctype.startswith("multipart/form-data"):
        if not body:
            raise ApiError(400, "no_image", "empty request: send images as multipart form field 'files' "
                                            "(or one image as the raw body)")
        return [(_clean_name(request.headers.get("x-filename"), 0), body)]

    async def replay():
        yield body

    parser = MultiPartParser(request.headers, replay(), max_files=settings.max_files, max_fields=100)
    try:
        form = await parser.parse()
    except MultiPartException as e:
        status = 413 if "Too many files" in e.message else 400
        raise ApiError(status, "bad_multipart", f"cannot parse the multipart form: {e.message}") from None
    except Exception as e:  # malformed boundaries and the like, whatever the parser raises
        raise ApiError(400, "bad_multipart", f"cannot parse the multipart form ({type(e).__name__})") from None
    files = []
    try:
        for _, value in form.multi_items():
            if isinstance(value, UploadFile):
                files.append((_clean_name(value.filename, len(files)), await value.read()))
    finally:
        await form.close()  # parts over 1 MB were spooled to private temp files: removed here
    if not files:
        raise ApiError(400, "no_image", "no file in the form: send images in the multipart field 'files'")
    if len(files) > settings.max_files:
        raise ApiError(413, "too_many_files", f"{len(files)} files, over the limit of {settings.max_files} per request")
    return files


_MULTIPART_DOC = {
    "requestBody": {"required": True, "content": {
        "multipart/form-data": {"schema": {"type": "object", "required": ["files"], "properties": {
            "files": {"type": "array", "items": {"type": "string", "format": "binary"}}}}},
        "application/octet-stream": {"schema": {"type": "string", "format": "binary"}}}}}
_ONE_FILE_DOC = {
    "requestBody": {"required": True, "content": {
        "multipart/form-data": {"schema": {"type": "object", "required": ["file"], "properties": {
            "file": {"type": "string", "format": "binary"}}}},
        "application/octet-stream": {"schema": {"type": "string", "format": "binary"}}}}}


# --- the app ----------------------------------------------------------------------------------

def create_app(settings: ServeSettings | None = None, detector: Detector | None = None) -> FastAPI:
    """The FastAPI app with the model loaded (once per process) and, unless settings.ui is off, the page at /."""
    settings = settings or ServeSettings.from_env()
    detector = detector or Detector.load(settings.model, backend=settings.backend, precision=settings.precision)
    service = Service(detector, settings)

    @asynccontextmanager
    async def lifespan(app):
        yield
        service.close()

    app = FastAPI(title="SynthCheck", version=__version__, lifespan=lifespan,
                  description="Tells AI-generated images from real photographs, explains why, and says how sure it is.")
    app.state.service = service
    app.state.ready = True
    if settings.cors_origins:
        app.add_middleware(CORSMiddleware, allow_origins=settings.cors_origins, allow_methods=["GET", "POST"],
                           allow_headers=["*"])

    key_header = APIKeyHeader(name=API_KEY_HEADER, auto_error=False)

    def require_key(key: str | None = Depends(key_header)):
        if settings.api_key is not None and not (key and secrets.compare_digest(key, settings.api_key)):
            raise ApiError(401, "unauthorized", f"missing or wrong API key (send it in the {API_KEY_HEADER} header)")

    async def with_timeout(coro):
        try:
            return await asyncio.wait_for(coro, settings.timeout_s)
        except asyncio.TimeoutError:
            raise ApiError(503, "timeout", f"request took longer than {settings.timeout_s:g} s; try fewer or smaller "
                                           "images", {"retry_after": 5}) from None

    @app.exception_handler(ApiError)
    async def _api_error(request: Request, e: ApiError):
        headers = {"Retry-After": "5"} if e.status == 503 else None
        return JSONResponse(error_body(e.code, e.message, **e.extra), status_code=e.status, headers=headers)

    @app.exception_handler(RequestValidationError)
    async def _validation(request: Request, e: RequestValidationError):
        problems = "; ".join(f"{'.'.join(str(x) for x in err.get('loc', ()))}: {err.get('msg')}" for err in e.errors())
        return JSONResponse(error_body("invalid_parameter", problems), status_code=422)

    @app.exception_handler(StarletteHTTPException)
    async def _http(request: Request, e: StarletteHTTPException):
        return JSONResponse(error_body(f"http_{e.status_code}", str(e.detail)), status_code=e.status_code,
                            headers=getattr(e, "headers", None))

    @app.exception_handler(Exception)
    async def _unexpected(request: Request, e: Exception):  # a bug, not the client's fault: logged, still JSON
        log.exception("unexpected error on %s", request.url.path)
        return JSONResponse(error_body("internal", f"internal error ({type(e).__name__})"), status_code=500)

    @app.get("/healthz", tags=["ops"])
    async def healthz():
        """The process is up."""
        return {"status": "ok"}

    @app.get("/readyz", tags=["ops"])
    async def readyz():
        """The model is loaded and the model thread answers."""
        if not app.state.ready:
            return JSONResponse(error_body("not_ready", "model not loaded"), status_code=503)
        return {"status": "ready", "model": detector.model_id}

    @app.get("/v1/models", tags=["models"], dependencies=[Depends(require_key)])
    async def models():
        """The model this server runs, its operating point, and the bundled models it could run."""
        return {"loaded": service.model_info(), "bundled": sorted(bundled_models()),
                "limits": {k: v for k, v in settings.public().items() if k not in ("model", "ui")}}

    @app.post("/v1/detect", tags=["detect"], dependencies=[Depends(require_key)], openapi_extra=_MULTIPART_DOC)
    async def detect(request: Request):
        """Score one or more images: calibrated P(AI), verdict (ai | real | uncertain), metadata evidence, timing.

        422 when any image cannot be read; the body then still holds every file's result.
        """
        async def work():
            t0 = time.perf_counter()
            files = await read_images(request, settings)
            results = await service.detect(files)
            return results, (time.perf_counter() - t0) * 1000

        results, ms = await with_timeout(work())
        body = {"model": detector.model_id, "threshold": detector.threshold, "uncertain_band": detector.uncertain_band,
                "uncertain_range": list(detector.uncertain_range) if detector.uncertain_range else None,
                "results": results, "timing_ms": round(ms, 2)}
        bad = [r for r in results if "error" in r]
        if bad:
            msg = "; ".join(f"{r['file']}: {r['error']}" for r in bad)
            return JSONResponse({**error_body("bad_image", msg), **body}, status_code=422)
        return body

    @app.post("/v1/explain", tags=["explain"], dependencies=[Depends(require_key)], openapi_extra=_ONE_FILE_DOC)
    async def explain(request: Request,
                      method: str = Query("gradcam", pattern="^(gradcam|gradcampp|lime|shap|spectrum)$",
                                          description="gradcam, gradcampp, lime, shap or spectrum"),
                      format: str = Query("png", pattern="^(png|json)$",
                                          description="png: the figure; json: scores + base64 PNG")):
        """Why the model decided: a heatmap figure (input | heatmap | overlay) or the residual spectrum."""
        async def work():
            files = await read_images(request, settings)
            if len(files) != 1:
                raise ApiError(400, "one_image", f"explain takes one image, got {len(files)}")
            name, data = files[0]
            try:
                return (await service.explain(name, data, [method]))[0]
            except ImageError as e:
                raise ApiError(422, "bad_image", f"{name}: {e.problem}") from None

        expl, png = await with_timeout(work())
        headers = {"X-SynthCheck-Verdict": expl.verdict, "X-SynthCheck-Prob-AI": f"{expl.prob_ai:.6f}",
                   "X-SynthCheck-Model": detector.model_id}
        if format == "png":
            return Response(png, media_type="image/png", headers=headers)
        return {"file": expl.source, "method": method, "prob_ai": expl.prob_ai, "verdict": expl.verdict,
                "model": detector.model_id, "seconds": round(expl.seconds, 4),
                "details": {k: v for k, v in expl.details.items() if isinstance(v, (str, int, float, bool))},
                "png_base64": base64.b64encode(png).decode()}

    @app.api_route("/v1/{rest:path}", methods=["GET", "POST", "PUT", "DELETE", "PATCH"], include_in_schema=False)
    async def unknown(request: Request, rest: str):
        """JSON 404/405 for /v1 paths (otherwise the page mounted at / would answer them)."""
        path = f"/v1/{rest}"
        allowed = sorted(m for r in app.routes if getattr(r, "path", None) == path for m in getattr(r, "methods", ()))
        if allowed:
            return JSONResponse(error_body("method_not_allowed", f"{request.method} is not allowed on {path}; use "
                                           f"{', '.join(allowed)}"), status_code=405, headers={"Allow": ", ".join(allowed)})
        raise ApiError(404, "not_found", f"no endpoint {path}; see /docs")

    if settings.ui:
        from .webui import mount_ui

        app = mount_ui(app, service)
    return app

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
import logging
import secrets
import time
from contextlib import asynccontextmanager

from fastapi import Depends, FastAPI, Query, Request
from fastapi.exceptions import RequestValidationError
from fastapi.middleware.cors import CORSMiddleware
from fastapi.responses import JSONResponse, Response
from fastapi.security import APIKeyHeader
from starlette.datastructures import UploadFile
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.formparsers import MultiPartException, MultiPartParser

from .._version import __version__
from ..data.preprocess import ImageError
from ..inference.detector import Detector
from ..models.bundled import bundled_models
from .service import ServeSettings, Service

log = logging.getLogger("synthcheck.serve")

API_KEY_HEADER = "X-API-Key"
MAX_NAME = 200  # characters of a client's file name echoed back


def app_from_env() -> FastAPI:
    """uvicorn factory (`synthcheck serve`, or `uvicorn synthcheck.serving.serve:app_from_env --factory`)."""
    return create_app(ServeSettings.from_env())


class ApiError(Exception):
    """A client error with its HTTP status; rendered as {"error": {"code", "message"}}."""

    def __init__(self, status: int, code: str, message: str, extra: dict | None = None):
        super().__init__(message)
        self.status, self.code, self.message, self.extra = status, code, message, extra or {}


def error_body(code: str, message: str, **extra) -> dict:
    return {"error": {"code": code, "message": message}, **extra}


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

"""Commands that ship a model: `export` (ONNX) and `serve` (REST API and web page)."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from .common import BACKEND_HELP, PRECISION_HELP, _fail, _load_detector, _setup_logging, console

def export(
    model: str = typer.Argument(..., help="model directory or bundled name"),
    onnx: bool = typer.Option(True, "--onnx/--no-onnx", help="write model.onnx (the only format so far)"),
    out: Optional[Path] = typer.Option(None, "--out", "-o", help="output model directory [the model's own directory, "
                                                               "or runs/export/NAME for a bundled model]"),
    opset: int = typer.Option(18),
    cpu_backend: Optional[str] = typer.Option(None, "--cpu-backend", help="also record the model's fastest CPU "
                                              "path for --backend auto: onnx, or onnx-where-no-bf16 (measure it "
                                              "with benchmarks/photo_throughput.py or predict_throughput.py)"),
):
    """ONNX export (dynamic batch, uint8 input, preprocessing config alongside), checked against PyTorch to 1e-4."""
    from ..inference.export import export_onnx
    from ..models.bundled import bundled_models, resolve_model

    if not onnx:
        _fail("nothing to do: --onnx is the only export format")
    _setup_logging(False)
    try:
        src = resolve_model(model)
    except FileNotFoundError as e:
        _fail(str(e))
    if out is None:
        out = Path("runs/export") / model if model in bundled_models() else src
    if cpu_backend not in (None, "onnx", "onnx-where-no-bf16"):
        _fail(f"--cpu-backend {cpu_backend!r}: choose onnx or onnx-where-no-bf16")
    try:
        info = export_onnx(src, out, opset=opset)
    except (ValueError, ImportError) as e:
        _fail(str(e))
    if cpu_backend:
        from ..data.store import save_json
        from ..models.checkpoint import CONFIG, load_config

        cfg = load_config(out)
        cfg["cpu_backend"] = cpu_backend
        save_json(Path(out) / CONFIG, cfg)
    from rich.markup import escape

    console.print(f"wrote {out / 'model.onnx'} ({escape(info['input'])} -> logit; opset {opset}); ONNX Runtime vs PyTorch: "
                  f"max |logit diff| {info['check']['max_abs_logit_diff']:.1e} on {info['check']['images']} images",
                  soft_wrap=True)
    console.print(f"use it: synthcheck predict IMAGES --model {out} --backend onnx", soft_wrap=True)


def serve(
    host: str = typer.Option("127.0.0.1", help="address to bind (0.0.0.0 to serve the network)"),
    port: int = typer.Option(8000),
    model: Optional[str] = typer.Option(None, "--model", "-m", help="model directory or bundled name (default: bundled)"),
    backend: str = typer.Option("auto", help=BACKEND_HELP),
    precision: str = typer.Option("auto", help=PRECISION_HELP),
    max_request_mb: Optional[float] = typer.Option(None, help="request body limit [20]"),
    max_pixels: Optional[int] = typer.Option(None, help="decoded pixels per image [50,000,000]"),
    max_files: Optional[int] = typer.Option(None, help="images per request [16]"),
    timeout: Optional[float] = typer.Option(None, "--timeout", help="seconds per request [30]"),
    api_key_env: Optional[str] = typer.Option(None, help="require the API key held in this environment variable "
                                                          "(X-API-Key header); default: SYNTHCHECK_API_KEY if set"),
    cors: Optional[str] = typer.Option(None, help="comma-separated origins allowed by CORS"),
    batching: bool = typer.Option(True, help="join concurrent requests into one model batch"),
    ui: bool = typer.Option(True, help="serve the web page at /"),
    resave_check: bool = typer.Option(True, "--resave-check/--no-resave-check",
                                      help="look for an earlier JPEG save in every upload (~2 ms per 512-px image)"),
    workers: int = typer.Option(1, help="uvicorn worker processes (each loads the model once)"),
):
    """REST API (/v1/detect, /v1/explain, /docs) and the web page (/) on one port."""
    import os

    import uvicorn

    from ..serving.service import ServeSettings

    _setup_logging(False)
    if api_key_env is not None and not os.environ.get(api_key_env):
        _fail(f"--api-key-env {api_key_env}: that environment variable is empty or unset")
    settings = ServeSettings.from_env(model=model, backend=backend, precision=precision, max_request_mb=max_request_mb, max_pixels=max_pixels,
                                      max_files=max_files, timeout_s=timeout, batching=batching, ui=ui, resave_check=resave_check,
                                      api_key=os.environ.get(api_key_env) if api_key_env else None,
                                      cors_origins=[o.strip() for o in cors.split(",")] if cors else None)
    _load_detector(settings.model, backend=settings.backend, precision=settings.precision)  # fail here, clearly
    # settings travel to worker processes through the environment, where create_app reads them
    for k, v in settings.public().items():
        if k not in ("api_key", "cors_origins") and v is not None:
            os.environ[f"SYNTHCHECK_{k.upper()}"] = str(v)
    if settings.api_key:
        os.environ["SYNTHCHECK_API_KEY"] = settings.api_key
    if settings.cors_origins:
        os.environ["SYNTHCHECK_CORS_ORIGINS"] = ",".join(settings.cors_origins)
    console.print(f"SynthCheck on http://{host}:{port}/ (page), /docs (API); model {settings.model or 'default'}; "
                  f"API key {'required' if settings.api_key else 'off'}")
    uvicorn.run("synthcheck.serving.serve:app_from_env", factory=True, host=host, port=port, workers=workers,
                log_level="warning", timeout_graceful_shutdown=5)

"""What every command shares: the consoles, logging, failing in one line, the command line as typed, loading a
model, expanding paths and globs."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import List, Optional

import typer
from rich.console import Console

console = Console()
err = Console(stderr=True)


def _setup_logging(verbose: bool = False):
    from rich.logging import RichHandler

    logging.basicConfig(level=logging.INFO if verbose else logging.WARNING, format="%(message)s",
                        handlers=[RichHandler(console=err, show_path=False, show_time=False)])
    logging.getLogger("synthcheck").setLevel(logging.INFO)


def _fail(msg: str, code: int = 2):
    from rich.markup import escape

    err.print(f"[bold red]error:[/] {escape(msg)}", soft_wrap=True)  # file names may hold [brackets]
    raise typer.Exit(code)


def _command_line(ctx: typer.Context) -> str:
    """The command as a user would type it again (from parsed parameters, so it also works in-process)."""
    import shlex

    parts = ["synthcheck", ctx.info_name]
    for param in ctx.command.params:
        value = ctx.params.get(param.name)
        if param.param_type_name == "argument":
            parts += [str(v) for v in (value if isinstance(value, (list, tuple)) else [value])]
        elif value is None or value == param.default or value == [] or value == ():
            continue
        elif isinstance(value, bool):
            parts.append(param.opts[0] if value else (param.secondary_opts or [f"--no-{param.name}"])[0])
        else:
            for v in (value if isinstance(value, (list, tuple)) else [value]):
                parts += [param.opts[0], str(v)]
    return shlex.join(parts)


def _load_detector(model: Optional[str], device: str = "cpu", backend: str = "auto", precision: str = "auto"):
    from ..inference.detector import Detector

    try:
        return Detector.load(model, device=device, backend=backend, precision=precision)
    except (FileNotFoundError, ValueError, KeyError, ImportError) as e:
        _fail(str(e))


BACKEND_HELP = ("auto | torch | onnx | openvino. auto (default): ONNX Runtime fp32 on CPU for models whose config "
                "names it as their fastest CPU path and that ship model.onnx (the bundled photo model: PyTorch fp32's "
                "scores), OpenVINO for an explicit --precision bf16 on CPUs with native bf16, PyTorch otherwise. "
                "onnx/openvino need `synthcheck export MODEL --onnx` unless the model ships model.onnx")
PRECISION_HELP = ("auto | fp32 | bf16. auto (default) picks bf16 (autocast + channels-last) on GPUs and on CPUs with "
                  "native bf16 (AMX or AVX512-BF16, read from /proc/cpuinfo): ~2x faster, fp32's verdicts on 99.9% "
                  "of the CIFAKE test split; for the photo model there, OpenVINO bf16 with images near a verdict edge "
                  "scored again in fp32 (fp32's verdicts); fp32 elsewhere and on ONNX Runtime (each model card's "
                  "Precision section gives the figures)")


def _expand(paths: List[str]) -> tuple[list[str], list[str]]:
    """Files, folders (recursively) and globs -> file list; names that match nothing are returned as missing."""
    import glob

    from ..data.folders import IMAGE_EXTENSIONS

    files, missing = [], []
    for p in paths:
        path = Path(p)
        if path.is_dir():
            found = sorted(str(f) for f in path.rglob("*") if f.is_file() and not f.name.startswith("."))
            files.extend(found)
        elif path.exists():
            files.append(str(path))
        else:
            matches = sorted(glob.glob(p, recursive=True))
            if matches:
                files.extend(m for m in matches if Path(m).is_file())
            else:
                missing.append(p)
    return files, missing


def _display(source: str) -> str:
    """A path as short as it can be shown: relative to the working directory when it lies below it."""
    import os

    try:
        rel = os.path.relpath(source)
    except ValueError:
        return source
    return source if rel.startswith("..") else rel

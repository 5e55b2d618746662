"""Commands that show why: `explain` (heatmaps and spectrum per image) and `spectrum` (class spectra of a data set)."""

from __future__ import annotations

from pathlib import Path
from typing import List, Optional

import typer
from rich.table import Table

from .common import _display, _expand, _fail, _load_detector, _setup_logging, console, err

def explain(
    paths: List[str] = typer.Argument(..., help="image files, folders or globs"),
    method: List[str] = typer.Option(["gradcam"], "--method", help="gradcam | gradcampp | lime | shap | spectrum | all (repeatable)"),
    model: Optional[str] = typer.Option(None, "--model", "-m", help="model directory or bundled name"),
    out: Path = typer.Option(Path("runs/explain"), "--out", "-o", help="folder for the PNGs (and .npy)"),
    samples: Optional[int] = typer.Option(None, "--samples", help="perturbations for LIME/SHAP (default by size)"),
    segments: Optional[int] = typer.Option(None, "--segments", help="superpixels for LIME/SHAP (default by size)"),
    save_npy: bool = typer.Option(False, "--npy", help="also save each raw attribution as .npy"),
):
    """Why a verdict: Grad-CAM, LIME, SHAP heatmaps and the residual spectrum, one PNG per image and method."""
    import numpy as np
    from tqdm.auto import tqdm

    from ..data.preprocess import ImageError
    from ..inference.explain import METHODS, render

    _setup_logging(False)
    methods = list(METHODS) if "all" in method else method
    files, missing = _expand(paths)
    det = _load_detector(model)
    reference = det.reference_spectra() if "spectrum" in methods else None
    t = Table(title=f"explanations by {det.model_id}")
    for c in ("file", "P(AI)", "verdict", "method", "seconds", "PNG"):
        t.add_column(c, overflow="fold")
    failed = len(missing)
    for m in missing:
        err.print(f"[red]{m}: no such file or folder[/]", soft_wrap=True)
    for f in files:
        try:
            expls = det.explain(f, methods, n_samples=samples, n_segments=segments, progress=len(files) == 1)
        except (ImageError, ValueError) as e:
            err.print(f"[red]{e}[/]", soft_wrap=True)
            failed += 1
            continue
        for e in expls:
            stem = f"{Path(f).stem}.{e.method}"
            png = render(e, out / f"{stem}.png", reference)
            if save_npy:
                np.save(out / f"{stem}.npy", e.attribution)
            t.add_row(_display(f), f"{e.prob_ai:.4f}", e.verdict, e.method, f"{e.seconds:.2f}", _display(str(png)))
    console.print(t)
    raise typer.Exit(1 if failed else 0)


def spectrum(
    data: List[Path] = typer.Argument(..., help="labelled folders or archives"),
    out: Path = typer.Option(Path("runs/spectrum"), "--out", "-o"),
    size: int = typer.Option(32, help="square crop at native resolution (no resampling of the evidence)"),
    limit: Optional[int] = typer.Option(None, help="use at most this many images per class"),
):
    """Mean residual spectra of real and of AI images and their difference (spectra.safetensors + spectra.png).

    Copy spectra.safetensors into a model directory to show it beside every `explain --method spectrum`.
    """
    import numpy as np
    from safetensors.numpy import save_file

    from ..data.folders import load_imageset
    from ..data.preprocess import PreprocessSpec
    from ..inference.explain import class_spectra

    _setup_logging(False)
    spec = PreprocessSpec(size, "crop")
    try:
        sets = [load_imageset(d, spec) for d in data]
    except (ValueError, FileNotFoundError) as e:
        _fail(str(e))
    images = np.concatenate([s.images for s in sets])
    labels = np.concatenate([s.labels for s in sets])
    if limit:
        keep = np.concatenate([np.flatnonzero(labels == c)[:limit] for c in (0, 1)])
        images, labels = images[keep], labels[keep]
    try:
        ref = class_spectra(images, labels)
    except ValueError as e:
        _fail(str(e))
    out.mkdir(parents=True, exist_ok=True)
    save_file({k: np.ascontiguousarray(ref[k], dtype=np.float32) for k in ("real", "ai", "difference")},
              str(out / "spectra.safetensors"))
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 3, figsize=(10, 3.6))
    lim = float(np.abs(ref["difference"]).max()) or 1.0
    for ax, k, cmap in zip(axes, ("real", "ai", "difference"), ("magma", "magma", "coolwarm")):
        kw = dict(vmin=-lim, vmax=lim) if k == "difference" else {}
        im = ax.imshow(ref[k], cmap=cmap, extent=(-0.5, 0.5, -0.5, 0.5), interpolation="nearest", **kw)
        ax.set_title({"real": f"mean real (n={ref['n_real']})", "ai": f"mean AI (n={ref['n_ai']})",
                      "difference": "AI − real"}[k], fontsize=9)
        ax.set_xlabel("cycles/pixel")
        fig.colorbar(im, ax=ax, fraction=0.046)
    fig.suptitle(f"log-power spectra of the noise residual, {size}×{size} native crops", fontsize=10)
    fig.tight_layout()
    fig.savefig(out / "spectra.png", dpi=110)
    plt.close(fig)
    peak = np.unravel_index(np.abs(ref["difference"]).argmax(), ref["difference"].shape)
    console.print(f"wrote {out / 'spectra.safetensors'} and {out / 'spectra.png'}; largest AI−real difference "
                  f"{ref['difference'][peak]:+.3f} at frequency bin {tuple(int(i) - size // 2 for i in peak)}")

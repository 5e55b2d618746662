"""Command line: a thin layer over the library (Detector, train, evaluate); no logic of its own."""

from __future__ import annotations

import logging
import sys
from pathlib import Path
from typing import List, Optional

import typer
from rich.console import Console
from rich.table import Table

app = typer.Typer(add_completion=False, no_args_is_help=True, pretty_exceptions_enable=False,
                  help="SynthCheck: detect AI-generated images, explain the verdict, and say how sure it is.")
console = Console()
err = Console(stderr=True)


def _setup_logging(verbose: bool = False):
    from rich.logging import RichHandler

    logging.basicConfig(level=logging.INFO if verbose else logging.WARNING, format="%(message)s",
                        handlers=[RichHandler(console=err, show_path=False, show_time=False)])
    logging.getLogger("synthcheck").setLevel(logging.INFO)


def _fail(msg: str, code: int = 2):
    err.print(f"[bold red]error:[/] {msg}")
    raise typer.Exit(code)


@app.command()
def models():
    """List the model registry."""
    from .models import REGISTRY

    t = Table(title="SynthCheck model registry")
    t.add_column("name"); t.add_column("ImageNet weights"); t.add_column("description")
    for info in REGISTRY.values():
        t.add_row(info.name, "yes" if info.supports_imagenet else "-", info.summary)
    console.print(t)


@app.command()
def train(
    data: List[Path] = typer.Argument(..., help="training folders or .tar/.tar.gz archives"),
    out: Path = typer.Option(Path("runs/train"), "--out", "-o", help="run directory (model/, last/, history, curves)"),
    config: Optional[Path] = typer.Option(None, help="TOML file of training options (command-line flags win)"),
    test: List[Path] = typer.Option([], help="test set(s) scored with the best model at the end"),
    model: Optional[str] = typer.Option(None, help="registry name (see `synthcheck models`)"),
    weights: Optional[str] = typer.Option(None, help="'imagenet' for torchvision backbones"),
    input_size: Optional[int] = typer.Option(None, help="resize inside the model to this size"),
    image_size: Optional[int] = typer.Option(None, help="decode/store images at this size"),
    resize_policy: Optional[str] = typer.Option(None, help="resize | center_crop | crop"),
    epochs: Optional[int] = typer.Option(None),
    batch_size: Optional[int] = typer.Option(None),
    lr: Optional[float] = typer.Option(None),
    weight_decay: Optional[float] = typer.Option(None),
    optimizer: Optional[str] = typer.Option(None, help="adamw | sgd"),
    schedule: Optional[str] = typer.Option(None, help="onecycle | cosine | constant"),
    patience: Optional[int] = typer.Option(None, help="early-stopping patience (epochs)"),
    val_fraction: Optional[float] = typer.Option(None),
    seed: Optional[int] = typer.Option(None),
    flip: Optional[bool] = typer.Option(None, "--flip/--no-flip"),
    shift: Optional[int] = typer.Option(None, help="max random shift in pixels (0 = off)"),
    rotate: Optional[float] = typer.Option(None, help="max random rotation in degrees (0 = off)"),
    zoom: Optional[float] = typer.Option(None, help="max random zoom, e.g. 0.1 (0 = off)"),
    device: Optional[str] = typer.Option(None, help="auto | cpu | cuda"),
    compile: Optional[bool] = typer.Option(None, "--compile/--no-compile"),
    max_fpr: Optional[float] = typer.Option(None, help="choose the threshold for this false-positive rate"),
    limit_train: Optional[int] = typer.Option(None, help="train on a stratified subset of this size"),
    max_steps_per_epoch: Optional[int] = typer.Option(None),
    resume: bool = typer.Option(False, "--resume", help="continue from OUT/last"),
    quiet: bool = typer.Option(False, "--quiet", "-q"),
):
    """Train a detector; writes OUT/model (safetensors + config + model card), history.csv and curves.png."""
    import tomllib

    from .augment import AugmentConfig
    from .card import write_model_card
    from .train import TrainConfig, train as run_train

    _setup_logging(not quiet)
    opts: dict = {}
    if config:
        opts = tomllib.loads(config.read_text())
    flags = dict(model=model, weights=weights, input_size=input_size, image_size=image_size,
                 resize_policy=resize_policy, epochs=epochs, batch_size=batch_size, lr=lr, weight_decay=weight_decay,
                 optimizer=optimizer, schedule=schedule, patience=patience, val_fraction=val_fraction, seed=seed,
                 device=device, compile=compile, max_fpr=max_fpr, limit_train=limit_train,
                 max_steps_per_epoch=max_steps_per_epoch)
    opts.update({k: v for k, v in flags.items() if v is not None})
    aug = dict(opts.pop("augment", {}))
    aug.update({k: v for k, v in dict(flip=flip, shift=shift, rotate=rotate, zoom=zoom).items() if v is not None})
    try:
        cfg = TrainConfig.from_dict({**opts, "augment": AugmentConfig(**aug)})
        result = run_train(data, out, cfg, test=test or None, resume=resume, progress=not quiet)
    except (ValueError, KeyError, FileNotFoundError) as e:
        _fail(str(e))
    cmd = "synthcheck " + " ".join(sys.argv[1:])
    result["command"] = cmd
    from .checkpoint import save_model, load_model

    m, _ = load_model(out / "model")
    save_model(m, out / "model", result)
    write_model_card(out / "model", result, command=cmd)
    tm = result.get("test_metrics") or result.get("val_metrics")
    console.print(f"[green]saved[/] {out / 'model'} — "
                  f"{'test' if result.get('test_metrics') else 'val'} accuracy {tm['accuracy']:.4f}, AUROC {tm['roc_auc']:.4f}")


def main():
    app()


if __name__ == "__main__":
    main()

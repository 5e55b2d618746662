"""Command line: a thin layer over the library (Detector, train, evaluate); no logic of its own."""

from __future__ import annotations

import logging
import os
import sys
from pathlib import Path
from typing import List, Optional

import typer
from rich.console import Console
from rich.table import Table

from .attribution import generator_note

app = typer.Typer(add_completion=False, no_args_is_help=True, pretty_exceptions_enable=False,
                  help="SynthCheck: detect AI-generated images, explain the verdict, and say how sure it is.")
console = Console()
err = Console(stderr=True)


def _version(value: bool):
    if value:
        from . import __version__

        console.print(f"synthcheck {__version__}")
        raise typer.Exit()


@app.callback()
def _main(version: bool = typer.Option(False, "--version", callback=_version, is_eager=True,
                                       help="print the version and exit")):
    """SynthCheck: detect AI-generated images, explain the verdict, and say how sure it is."""


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
    ctx: typer.Context,
    data: List[Path] = typer.Argument(..., help="training folders or .tar/.tar.gz archives"),
    out: Path = typer.Option(Path("runs/train"), "--out", "-o", help="run directory (model/, last/, history, curves)"),
    config: Optional[Path] = typer.Option(None, help="TOML file of training options (command-line flags win)"),
    test: List[Path] = typer.Option([], help="test set(s) scored with the best model at the end"),
    model: Optional[str] = typer.Option(None, help="registry name (see `synthcheck models`)"),
    weights: Optional[str] = typer.Option(None, help="'imagenet' for torchvision backbones"),
    input_size: Optional[int] = typer.Option(None, help="resize inside the model to this size"),
    image_size: Optional[int] = typer.Option(None, help="decode/store images at this size"),
    resize_policy: Optional[str] = typer.Option(None, help="resize | center_crop | crop | tiles"),
    tiles: Optional[int] = typer.Option(None, help="with --resize-policy tiles: an N x N grid of native crops"),
    test_fraction: Optional[float] = typer.Option(None, help="hold out this seeded, stratified part as test data"),
    freeze_backbone: Optional[bool] = typer.Option(None, "--freeze-backbone/--no-freeze-backbone",
                                                   help="linear probe: train only the last layer"),
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
    aug_blur: Optional[float] = typer.Option(None, help="robust training: probability of a random Gaussian blur"),
    aug_jpeg: Optional[float] = typer.Option(None, help="robust training: probability of random JPEG re-encoding"),
    aug_rescale: Optional[float] = typer.Option(None, help="robust training: probability of a random down-up resize"),
    adv_eps: Optional[float] = typer.Option(None, help="PGD adversarial training radius in grey levels /255 (0 = off)"),
    adv_steps: Optional[int] = typer.Option(None, help="PGD steps per batch for adversarial training"),
    device: Optional[str] = typer.Option(None, help="auto | cpu | cuda"),
    compile: Optional[bool] = typer.Option(None, "--compile/--no-compile"),
    max_fpr: Optional[float] = typer.Option(None, help="choose the threshold for this false-positive rate"),
    uncertain_band: Optional[float] = typer.Option(None, help="half-width of the 'uncertain' band around the threshold"),
    limit_train: Optional[int] = typer.Option(None, help="train on a stratified subset of this size"),
    max_steps_per_epoch: Optional[int] = typer.Option(None),
    resume: bool = typer.Option(False, "--resume", help="continue from OUT/last"),
    notes: Optional[str] = typer.Option(None, help="free text for the model card's Notes section"),
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
                 device=device, compile=compile, max_fpr=max_fpr, uncertain_band=uncertain_band, limit_train=limit_train,
                 max_steps_per_epoch=max_steps_per_epoch, adv_eps=adv_eps, adv_steps=adv_steps, tiles=tiles,
                 test_fraction=test_fraction, freeze_backbone=freeze_backbone)
    opts.update({k: v for k, v in flags.items() if v is not None})
    aug = dict(opts.pop("augment", {}))
    aug.update({k: v for k, v in dict(flip=flip, shift=shift, rotate=rotate, zoom=zoom, blur=aug_blur, jpeg=aug_jpeg,
                                      rescale=aug_rescale).items() if v is not None})
    try:
        cfg = TrainConfig.from_dict({**opts, "augment": AugmentConfig(**aug)})
        if "image_size" not in opts:
            _say_recipe(data, cfg)
        result = run_train(data, out, cfg, test=test or None, resume=resume, progress=not quiet)
    except (ValueError, KeyError, FileNotFoundError) as e:
        _fail(str(e))
    if not result:  # a non-zero rank under torchrun: rank 0 writes the model and reports
        raise typer.Exit(0)
    cmd = _command_line(ctx)
    result["command"] = cmd
    if notes:
        result["notes"] = notes
    from .checkpoint import save_model, load_model

    m, _ = load_model(out / "model")
    save_model(m, out / "model", result)
    write_model_card(out / "model", result, command=cmd)
    tm = result.get("test_metrics") or result.get("val_metrics")
    console.print(f"[green]saved[/] {out / 'model'} — "
                  f"{'test' if result.get('test_metrics') else 'val'} accuracy {tm['accuracy']:.4f}, AUROC {tm['roc_auc']:.4f}")


def _say_recipe(data: List[Path], cfg) -> None:
    """One line before a long run: what the images become when the recipe's size was not chosen, and which
    recipe fits full-size photos (the default recipe is CIFAKE's: everything resized to 32 px)."""
    from .data import typical_short_side

    side = typical_short_side(data)
    line = f"recipe: images are resized to {cfg.image_size} px ({cfg.resize_policy})"
    if side is not None:
        line += f"; your images are about {side} px (median short side)"
    if side is not None and side >= 4 * cfg.image_size:
        line += ("; for full-size photos train on native pixels instead: --config configs/photo_native.toml "
                 "(or set --image-size/--resize-policy)")
    err.print(line, soft_wrap=True, markup=False)


def _load_detector(model: Optional[str], device: str = "cpu", backend: str = "torch", precision: str = "auto"):
    from .detector import Detector

    try:
        return Detector.load(model, device=device, backend=backend, precision=precision)
    except (FileNotFoundError, ValueError, KeyError, ImportError) as e:
        _fail(str(e))


BACKEND_HELP = "torch | onnx (ONNX Runtime, needs `synthcheck export MODEL --onnx` unless the model ships one)"
PRECISION_HELP = ("auto | fp32 | bf16. auto (default) picks bf16 (autocast + channels-last) on GPUs and on CPUs with "
                  "native bf16 (AMX or AVX512-BF16, read from /proc/cpuinfo): 2-3x faster, same verdicts; fp32 "
                  "elsewhere and with --backend onnx")


@app.command()
def evaluate(
    model: str = typer.Argument(..., help="model directory, run directory or bundled name ('auto', 'default', "
                                          "'photo', 'robust')"),
    data: List[Path] = typer.Argument(..., help="one or more labelled test sets (folders or tar archives)"),
    out: Path = typer.Option(Path("runs/evaluate"), "--out", "-o", help="folder for metrics JSON and PNG plots"),
    include_train_identical: bool = typer.Option(False, help="keep test files byte-identical to training files"),
    policy: Optional[str] = typer.Option(None, help="score with another input policy than the model's own: resize | "
                                                    "center_crop | crop | tiles:N (to compare policies)"),
    backend: str = typer.Option("torch", help=BACKEND_HELP),
    precision: str = typer.Option("auto", help=PRECISION_HELP),
    quiet: bool = typer.Option(False, "--quiet", "-q"),
):
    """Accuracy, precision, recall, F1, ROC-AUC, AP, ECE, confusion matrix and plots, per set and on average."""
    from .evaluate import evaluate_sets

    _setup_logging(not quiet)
    det = _load_detector(model, backend=backend, precision=precision)
    try:
        if policy:
            det.use_policy(policy)
        res = evaluate_sets(det, data, out, exclude_train=not include_train_identical, progress=not quiet)
    except (ValueError, FileNotFoundError) as e:
        _fail(str(e))
    t = Table(title=det.describe())
    for c in ("set", "n", "excluded", "accuracy", "precision", "recall", "F1", "ROC-AUC", "AP", "ECE", "coverage",
              "conf. acc."):
        t.add_column(c, justify="right" if c != "set" else "left")
    f = lambda v: "-" if v is None else f"{v:.4f}"
    for k, m in res["sets"].items():
        t.add_row(k, str(m["n"]), str(m["excluded_train_identical"]), f(m["accuracy"]), f(m["precision"]),
                  f(m["recall"]), f(m["f1"]), f(m["roc_auc"]), f(m["average_precision"]), f(m["ece"]),
                  f(m.get("coverage")), f(m.get("confident_accuracy")))
    if len(res["sets"]) > 1:
        mm = res["summary"]["mean"]
        t.add_row("mean", "", "", f(mm["accuracy"]), "", "", f(mm["f1"]), f(mm["roc_auc"]),
                  f(mm["average_precision"]), f(mm["ece"]), f(mm.get("coverage")), f(mm.get("confident_accuracy")))
    console.print(t)
    console.print("coverage: share of images outside the uncertain band around the threshold; conf. acc.: "
                  "accuracy on that confident part")
    for k, m in res["sets"].items():
        if m.get("routed"):
            console.print(f"{k}: scored by " + ", ".join(f"{name} {n}" for name, n in m["routed"].items() if n))
    for k, m in res["sets"].items():
        if m.get("by_generator"):  # a manifest or the file names say the generator/source: one row each
            g = Table(title=f"{k} — by source (generator or photo source, from the manifest or file names)")
            for c in ("source", "n", "AI", "accuracy", "ROC-AUC", "ROC-AUC vs all real"):
                g.add_column(c, justify="left" if c == "source" else "right")
            for name, v in m["by_generator"].items():
                g.add_row(name, str(v["n"]), str(v["n_ai"]), f(v["accuracy"]), f(v["roc_auc"]),
                          f(v.get("roc_auc_vs_all_real")))
            console.print(g)
        a = m.get("attribution")
        if a:  # the model's attribution head on the set's AI images whose generator the head's fit knows
            lofo = ((a.get("leave_one_family_out") or {}).get("figures") or {}).get(
                (a.get("leave_one_family_out") or {}).get("rule"), {})
            console.print(f"{k} — attribution: {a['n_known']} images of known families, top-1 {f(a['top1'])}, named "
                          f"correctly {f(a['named_correctly'])}; {a['n_unknown']} of unknown ones, answered 'unknown' "
                          f"{f(a['unknown_rejected'])}; leave-one-family-out (fit): unknown rejected "
                          f"{f(lofo.get('unknown_rejected'))} at known named {f(lofo.get('known_named'))}")
    for k, m in res["sets"].items():
        if not quiet:
            console.print(f"[bold]{k}[/]\n{m['classification_report']}")
    console.print(f"wrote {out / 'evaluation.json'} and plots under {out}/")


def _expand(paths: List[str]) -> tuple[list[str], list[str]]:
    """Files, folders (recursively) and globs -> file list; names that match nothing are returned as missing."""
    import glob

    from .data import IMAGE_EXTENSIONS

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


@app.command()
def predict(
    paths: Optional[List[str]] = typer.Argument(None, help="image files, folders or globs"),
    samples: bool = typer.Option(False, "--samples", help="also score the sample images shipped with the package"),
    model: Optional[str] = typer.Option(None, "--model", "-m", help="model directory or bundled name"),
    as_json: bool = typer.Option(False, "--json", help="print JSON lines"),
    as_csv: bool = typer.Option(False, "--csv", help="print CSV"),
    out: Optional[Path] = typer.Option(None, "--out", help="append each result to this file (.jsonl or .csv) as soon as known"),
    resume: bool = typer.Option(False, "--resume", help="skip files already in --out"),
    batch_size: int = typer.Option(256),
    device: str = typer.Option("cpu", help="cpu | cuda | auto"),
    backend: str = typer.Option("torch", help=BACKEND_HELP),
    precision: str = typer.Option("auto", help=PRECISION_HELP),
    workers: Optional[int] = typer.Option(None, help="decoding threads (default: one per core)"),
    metadata: bool = typer.Option(True, help="read C2PA/EXIF/XMP/PNG-text evidence (--no-metadata: pixels only, faster)"),
    manifest: Optional[Path] = typer.Option(None, help="also score the files listed here (.txt one per line, or "
                                                        ".csv/.parquet with a 'path' column)"),
    engine: str = typer.Option("local", help="local | ray (Ray Data actors; --out is then a folder of Parquet "
                                             "shards; needs the synthcheck[ray] extra)"),
    ray_workers: int = typer.Option(2, help="--engine ray: Detector actors"),
    ray_address: Optional[str] = typer.Option(None, help="--engine ray: cluster address (default: RAY_ADDRESS or a "
                                                         "local instance)"),
    shard_size: int = typer.Option(10_000, help="--engine ray: files per Parquet shard (the unit of --resume)"),
):
    """Score images: P(AI-generated), verdict and model; broken files are named, the rest still scored.

    Exit code 0 when every file was scored, 1 when any failed.
    """
    import csv
    import json

    _setup_logging(False)
    paths = list(paths or [])
    if samples:
        paths.append(str(Path(__file__).resolve().parent / "samples"))
    files, missing = _expand(paths)
    files = [f for f in files if not f.endswith(".md")] if samples else files
    if manifest is not None:
        from .ray_scoring import read_manifest

        try:
            files += read_manifest(manifest)
        except (OSError, ValueError) as e:
            _fail(f"--manifest {manifest}: {e}")
    if engine == "ray":
        _predict_ray(files, missing, out, model, ray_workers, batch_size, shard_size, backend, precision, device,
                     metadata, ray_address)
        return
    if engine != "local":
        _fail(f"--engine must be local or ray, not {engine!r}")
    done: set[str] = set()
    if resume and out and out.exists():
        if out.suffix == ".csv":
            with open(out, newline="") as fh:
                done = {r["source"] for r in csv.DictReader(fh)}
        else:
            for line in out.read_text().splitlines():
                try:
                    done.add(json.loads(line)["source"])
                except (ValueError, KeyError):
                    continue  # a line cut by an interruption: that file is scored again
        files = [f for f in files if f not in done]
    if not files and not missing:
        if done:
            console.print(f"nothing to do: all files already in {out}")
            raise typer.Exit(0)
        _fail("no input files")
    # Idle OpenMP threads sleep instead of spinning, leaving the cores to the decoding threads
    # (+20% end to end on 2 cores, BENCHMARKS.md); read when torch loads, so set before that.
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    det = _load_detector(model, device, backend, precision)
    det.metadata = metadata
    fields = ["source", "prob_ai", "verdict", "model", "error", "pixel_verdict", "reason", "evidence", "warnings",
              "generator"]
    sink = writer = None
    if out:
        out.parent.mkdir(parents=True, exist_ok=True)
        new = not out.exists() or out.stat().st_size == 0
        sink = open(out, "a", newline="")
        if out.suffix == ".csv":
            writer = csv.DictWriter(sink, fieldnames=fields)
            if new:
                writer.writeheader()
    rows, failed, counts = [], 0, {}
    stdout_csv = csv.DictWriter(sys.stdout, fieldnames=fields) if as_csv else None
    if stdout_csv:
        stdout_csv.writeheader()
    import itertools

    from tqdm.auto import tqdm

    from .detector import Prediction

    missing_preds = [Prediction(m, error="no such file or folder") for m in missing]
    show_bar = not (as_json or as_csv) and len(files) > batch_size
    stream = itertools.chain(missing_preds, det.predict_iter(files, batch_size=batch_size, workers=workers))
    try:
        for i, p in enumerate(tqdm(stream, total=len(files) + len(missing), disable=not show_bar, unit="img",
                                   desc="scoring", file=sys.stderr, mininterval=0.5)):
            d = p.to_dict()
            failed += not p.ok
            flat = {**{k: d.get(k) for k in fields}, "evidence": json.dumps(d["evidence"]),
                    "warnings": json.dumps(d["warnings"]), "generator": json.dumps(d["generator"]) if d["generator"] else ""} \
                if (writer or stdout_csv) else None
            if sink:
                if writer:
                    writer.writerow(flat)
                else:
                    sink.write(json.dumps(d) + "\n")
                if (i + 1) % batch_size == 0:  # at most one batch to redo after a crash (--resume)
                    sink.flush()
            if as_json:
                print(json.dumps(d), flush=True)
            elif stdout_csv:
                stdout_csv.writerow(flat)
            elif sink:  # results go to the file; the terminal gets a summary
                counts[p.verdict or "error"] = counts.get(p.verdict or "error", 0) + 1
            else:
                rows.append(p)
    finally:
        if sink:
            sink.close()
    if counts:
        console.print(f"{sum(counts.values())} results from {det.model_id} -> {out}: "
                      + ", ".join(f"{k} {v}" for k, v in sorted(counts.items())), soft_wrap=True)
    if rows:
        t = Table(title=det.describe())
        t.add_column("file", overflow="fold"); t.add_column("P(AI)", justify="right"); t.add_column("verdict"); t.add_column("notes")
        for p in rows[:1000]:
            if p.ok:
                colour = {"ai": "red", "real": "green"}.get(p.verdict, "yellow")
                notes = [f"{e['strength']} {e['indicates']} evidence: {e['note']} ({e['field']})" for e in p.evidence]
                notes += [f"[yellow]{w}[/]" for w in p.warnings]
                if p.generator:
                    notes.append(generator_note(p.generator))
                if p.verdict != p.pixel_verdict:
                    notes.insert(0, f"pixels alone: {p.pixel_verdict}")
                if p.route:
                    notes.insert(0, f"model {p.model}")
                t.add_row(_display(p.source), f"{p.prob_ai:.4f}", f"[{colour}]{p.verdict}[/]", "\n".join(notes))
            else:
                t.add_row(_display(p.source), "-", "[bold red]error[/]", p.error)
        console.print(t)
        if len(rows) > 1000:
            console.print(f"... {len(rows) - 1000} more rows (use --out or --json for all)")
    if failed:
        err.print(f"[yellow]{failed} of {len(files) + len(missing)} file(s) could not be scored[/]")
    raise typer.Exit(1 if failed else 0)


def _predict_ray(files, missing, out, model, workers, batch_size, shard_size, backend, precision, device, metadata,
                 address):
    try:
        import ray  # noqa: F401

        from .ray_scoring import predict_ray
    except ImportError:
        _fail("--engine ray needs Ray: pip install 'synthcheck[ray]'")
    if out is None:
        _fail("--engine ray writes Parquet shards: give --out FOLDER")
    if missing:
        err.print(f"[yellow]no such file or folder: {', '.join(missing)}[/]")
    if not files:
        _fail("no input files")
    _load_detector(model, device, backend, precision)  # fail fast and clearly, before starting Ray
    try:
        res = predict_ray(files, out, model=model, workers=workers, batch_size=batch_size, shard_size=shard_size,
                          backend=backend, precision=precision, device=device,
                          gpus_per_worker=1.0 if device.startswith("cuda") else 0.0, metadata=metadata, address=address)
    except ValueError as e:
        _fail(str(e))
    console.print(f"{res['files']} files in {res['shards']} shard(s) -> {out}/part-*.parquet: scored {res['scored_now']} "
                  f"now, {res['shards_skipped']} shard(s) already done", soft_wrap=True)


@app.command()
def inspect(paths: List[str] = typer.Argument(..., help="image files, folders or globs"),
            as_json: bool = typer.Option(False, "--json")):
    """Metadata and provenance evidence (C2PA, EXIF/XMP, generator text chunks), reported apart from pixels."""
    import json

    from .metadata import inspect as inspect_file

    files, missing = _expand(paths)
    for m in missing:
        err.print(f"[red]{m}: no such file or folder[/]")
    for f in files:
        try:
            ev = [e.to_dict() for e in inspect_file(f)]
        except OSError as e:
            err.print(f"[red]{f}: cannot read ({e})[/]")
            continue
        if as_json:
            print(json.dumps({"source": f, "evidence": ev}))
            continue
        t = Table(title=f, title_justify="left")
        for c in ("source", "field", "value", "indicates", "strength", "note"):
            t.add_column(c)
        for e in ev:
            t.add_row(e["source"], e["field"], e["value"], e["indicates"], e["strength"], e["note"])
        console.print(t if ev else f"{f}: no metadata evidence (absence is not evidence either way)")
    raise typer.Exit(1 if missing else 0)


@app.command()
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

    from .explain import METHODS, render
    from .preprocess import ImageError

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


@app.command()
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

    from .data import load_imageset
    from .explain import class_spectra
    from .preprocess import PreprocessSpec

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


@app.command()
def robustness(
    model: str = typer.Argument(..., help="model directory or bundled name ('default')"),
    data: Path = typer.Argument(..., help="a labelled test set (its test split if it has one)"),
    out: Path = typer.Option(Path("runs/robustness"), "--out", "-o", help="folder for robustness.json and PNGs"),
    limit: int = typer.Option(1000, help="images per class (0 = all)"),
    eps: List[int] = typer.Option([1, 2, 4, 8], "--eps", help="L-inf attack strengths in grey levels (/255)"),
    steps: int = typer.Option(10, help="PGD steps"),
    seed: int = typer.Option(0),
):
    """Accuracy and AUROC under FGSM/PGD attacks and everyday damage (JPEG, resize, blur, noise, crop)."""
    from .robustness import robustness_report

    _setup_logging(False)
    det = _load_detector(model)
    try:
        rep = robustness_report(det, data, out, limit=limit or None, eps=tuple(eps), steps=steps, seed=seed)
    except (ValueError, FileNotFoundError) as e:
        _fail(str(e))
    t = Table(title=f"{det.model_id} on {rep['n']} images of {data.name}")
    for c in ("condition", "level", "accuracy", "ROC-AUC", "AI recall", "real recall"):
        t.add_column(c, justify="left" if c in ("condition", "level") else "right")
    f = lambda v: "-" if v is None else f"{v:.4f}"
    row = lambda cond, level, m: t.add_row(cond, level, f(m["accuracy"]), f(m["roc_auc"]), f(m["ai_recall"]),
                                           f(m["real_recall"]))
    row("clean", "", rep["clean"])
    for group in ("damage", "attacks"):
        for name, levels in rep[group].items():
            for level, m in levels.items():
                row(name, f"{level}/255" if group == "attacks" else level, m)
    console.print(t)
    console.print(f"wrote {out / 'robustness.json'}, {out / 'robustness.png'} and {out / 'adversarial_examples.png'}")


@app.command()
def calibrate(
    model: str = typer.Argument(..., help="model directory or bundled name"),
    data: List[Path] = typer.Argument(..., help="labelled data from the new domain"),
    out: Path = typer.Option(..., "--out", "-o", help="where to write the recalibrated model directory"),
    max_fpr: Optional[float] = typer.Option(None, help="threshold for this false-positive rate instead of EER"),
    uncertain_band: Optional[float] = typer.Option(None, help="half-width of the 'uncertain' band around the threshold"),
):
    """Refit temperature and threshold on labelled data from a new domain; writes a new model directory."""
    from .calibration import calibrate_detector

    _setup_logging(False)
    det = _load_detector(model)
    try:
        cfg = calibrate_detector(det, data, out, max_fpr=max_fpr, uncertain_band=uncertain_band)
    except (ValueError, FileNotFoundError) as e:
        _fail(str(e))
    console.print(f"[green]wrote[/] {out}: temperature {cfg['temperature']:.4f}, threshold {cfg['threshold']:.4f} "
                  f"({cfg['threshold_rule']['rule']}), uncertain band ±{cfg['uncertain_band']:.3f}")


@app.command()
def audit(
    data: List[Path] = typer.Argument(..., help="labelled folders or archives (e.g. both CIFAKE archives)"),
    out: Path = typer.Option(Path("runs/audit"), "--out", "-o"),
    flag_at: float = typer.Option(0.75, help="flag a feature whose single-feature AUROC reaches this"),
):
    """Exact and near duplicates across splits, and shortcut features that alone separate the classes."""
    from .audit import audit as run_audit

    _setup_logging(False)
    try:
        rep = run_audit(data, out, flag_at=flag_at)
    except (ValueError, FileNotFoundError) as e:
        _fail(str(e))
    console.print(f"[bold]{rep['n_files']} files[/] — per split: {rep['per_split']}")
    if rep["unreadable"]:
        console.print(f"[red]unreadable files: {len(rep['unreadable'])}[/] e.g. {rep['unreadable'][:3]}")
    d = rep["exact_duplicates"]
    t = Table(title="Duplicates")
    t.add_column("kind"); t.add_column("where"); t.add_column("count", justify="right")
    t.add_row("exact (same bytes)", "groups in total", str(d["groups"]))
    for k, v in d["extra_copies_within_split"].items():
        t.add_row("exact", f"extra copies within {k}", str(v))
    for k, v in d["groups_across_splits"].items():
        t.add_row("exact", f"groups across {k}", str(v))
    t.add_row("exact", "groups with conflicting labels", str(d["groups_with_conflicting_labels"]))
    for k, v in rep["near_duplicates_across_splits"]["groups"].items():
        t.add_row("near (same pHash)", f"groups across {k}", str(v))
    console.print(t)
    t = Table(title="Shortcut features (could a detector cheat on one of these alone?)")
    for c in ("feature", "real", "ai", "single-feature AUROC", "flag"):
        t.add_column(c)
    for f, v in rep["shortcut_features"].items():
        auc = v["single_feature_auroc"]
        t.add_row(f, str(v["per_class"]["real"]), str(v["per_class"]["ai"]), "-" if auc is None else f"{auc:.3f}",
                  "[red]FLAG[/]" if v["flagged"] else "ok")
    console.print(t)
    console.print(f"wrote {out / 'audit.json'} and {out / 'audit_features.png'}")


@app.command()
def compare(
    config: Path = typer.Argument(..., help="TOML: data, test, [train] recipe, [[model]] entries (see configs/compare_cifake.toml)"),
    out: Path = typer.Option(Path("runs/compare"), "--out", "-o"),
    resume: bool = typer.Option(False, "--resume", help="keep the models OUT/compare.json already has; train the rest"),
    quiet: bool = typer.Option(False, "--quiet", "-q"),
):
    """Train several registry models under one protocol; one table (JSON, Markdown) and one plot."""
    from .compare import COLUMNS, table_row
    from .compare import compare as run_compare

    _setup_logging(not quiet)
    try:
        rows = run_compare(config, out, progress=not quiet, resume=resume)
    except (ValueError, KeyError, FileNotFoundError, OSError) as e:
        _fail(str(e))
    t = Table(title=f"{config} — one protocol, this machine")
    for c in COLUMNS:
        t.add_column(c, justify="left" if c == "model" else "right")
    for r in rows:
        t.add_row(*table_row(r))
    console.print(t)
    console.print(f"wrote {out / 'compare.json'}, {out / 'compare.md'} and {out / 'compare.png'}")


@app.command()
def export(
    model: str = typer.Argument(..., help="model directory or bundled name"),
    onnx: bool = typer.Option(True, "--onnx/--no-onnx", help="write model.onnx (the only format so far)"),
    out: Optional[Path] = typer.Option(None, "--out", "-o", help="output model directory [the model's own directory, "
                                                               "or runs/export/NAME for a bundled model]"),
    opset: int = typer.Option(18),
):
    """ONNX export (dynamic batch, uint8 input, preprocessing config alongside), checked against PyTorch to 1e-4."""
    from .detector import bundled_models, resolve_model
    from .export import export_onnx

    if not onnx:
        _fail("nothing to do: --onnx is the only export format")
    _setup_logging(False)
    try:
        src = resolve_model(model)
    except FileNotFoundError as e:
        _fail(str(e))
    if out is None:
        out = Path("runs/export") / model if model in bundled_models() else src
    try:
        info = export_onnx(src, out, opset=opset)
    except (ValueError, ImportError) as e:
        _fail(str(e))
    from rich.markup import escape

    console.print(f"wrote {out / 'model.onnx'} ({escape(info['input'])} -> logit; opset {opset}); ONNX Runtime vs PyTorch: "
                  f"max |logit diff| {info['check']['max_abs_logit_diff']:.1e} on {info['check']['images']} images",
                  soft_wrap=True)
    console.print(f"use it: synthcheck predict IMAGES --model {out} --backend onnx", soft_wrap=True)


@app.command()
def serve(
    host: str = typer.Option("127.0.0.1", help="address to bind (0.0.0.0 to serve the network)"),
    port: int = typer.Option(8000),
    model: Optional[str] = typer.Option(None, "--model", "-m", help="model directory or bundled name (default: bundled)"),
    backend: str = typer.Option("torch", help=BACKEND_HELP),
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
    workers: int = typer.Option(1, help="uvicorn worker processes (each loads the model once)"),
):
    """REST API (/v1/detect, /v1/explain, /docs) and the web page (/) on one port."""
    import os

    import uvicorn

    from .serve import ServeSettings

    _setup_logging(False)
    if api_key_env is not None and not os.environ.get(api_key_env):
        _fail(f"--api-key-env {api_key_env}: that environment variable is empty or unset")
    settings = ServeSettings.from_env(model=model, backend=backend, precision=precision, max_request_mb=max_request_mb, max_pixels=max_pixels,
                                      max_files=max_files, timeout_s=timeout, batching=batching, ui=ui,
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
    uvicorn.run("synthcheck.serve:app_from_env", factory=True, host=host, port=port, workers=workers,
                log_level="warning", timeout_graceful_shutdown=5)

@app.command()
def pairs(
    real: List[Path] = typer.Argument(..., help="real photos: files, folders (recursive) or .tar archives; a "
                                                "labelled layout (real/ and fake/ folders) gives its real images only"),
    out: Path = typer.Option(..., "--out", "-o", help="output folder: real/, fake/ and manifest.csv"),
    autoencoder: str = typer.Option("taef2", help="taesd | taef1 | taef2"),
    weights_dir: Optional[Path] = typer.Option(None, help="folder holding the autoencoder's encoder/decoder files "
                                                          "(default: $SYNTHCHECK_AUTOENCODERS, then $TORCH_HOME/hub/checkpoints)"),
    download: bool = typer.Option(False, "--download", help="fetch missing weights from the published repository"),
    workers: Optional[int] = typer.Option(None, help="processes (default: one per core)"),
    precision: str = typer.Option("bf16", help="bf16 (fast on CPUs with AMX/AVX512-BF16) | fp32"),
    copy_originals: bool = typer.Option(True, "--copy-originals/--no-originals",
                                        help="also place each original (hard link or copy) under real/"),
    limit: Optional[int] = typer.Option(None, help="stop after this many originals"),
    quiet: bool = typer.Option(False, "--quiet", "-q"),
):
    """Turn real photos into aligned training pairs: each photo beside its round trip through a latent-diffusion
    autoencoder (JPEG originals keep their quantisation tables). Resumes where it stopped; bad files are named and skipped."""
    from .autoencoders import FAMILIES, find_weights
    from .pairs import make_pairs

    _setup_logging(False)
    if autoencoder not in FAMILIES:
        _fail(f"--autoencoder {autoencoder!r}: choose one of {', '.join(FAMILIES)}")
    if precision not in ("bf16", "fp32"):
        _fail("--precision must be bf16 or fp32")
    try:
        find_weights(autoencoder, weights_dir, download)
        s = make_pairs(real, out, autoencoder, weights_dir, workers, precision == "bf16", copy_originals,
                       progress=not quiet, limit=limit)
    except (ValueError, FileNotFoundError, OSError) as e:
        _fail(str(e))
    console.print(f"{s['written']} pair(s) written to {out} with {autoencoder} in {s['seconds']} s"
                  + (f"; {s['skipped']} already there" if s["skipped"] else ""))
    for name, problem in s["failed"]:
        err.print(f"[yellow]skipped[/] {name}: {problem}", soft_wrap=True, markup=True, highlight=False)
    if s["failed"]:
        err.print(f"{len(s['failed'])} file(s) could not be used")
        raise typer.Exit(1)


@app.command()
def attribution(
    config: Path = typer.Argument(..., help="the crossval TOML: its pool, groups and \\[attribution] families"),
    model: Path = typer.Option(..., "--model", help="the photo model directory; the head is written beside its weights"),
    out: Path = typer.Option(Path("reports/attribution"), "--out", "-o"),
    quiet: bool = typer.Option(False, "--quiet", "-q"),
):
    """Which generator made it: fit the open-set attribution head on the photo model's own features (top-1 on a
    seeded held-out part, rejection rule and threshold from leave-one-family-out runs)."""
    from .attribution import run_attribution

    _setup_logging(not quiet)
    try:
        r = run_attribution(config, model, out, progress=not quiet)
    except (ValueError, KeyError, FileNotFoundError) as e:
        _fail(str(e))
    os_ = r["open_set"]["figures"][r["open_set"]["rule"]]
    t = Table(title=f"attribution over {', '.join(r['families'])} (n train {r['n_train']}, held-out {r['n_test']})")
    for c in ("figure", "value"):
        t.add_column(c)
    t.add_row("top-1 on held-out known images", f"{r['top1']:.3f}")
    t.add_row(f"open-set rule ({r['open_set']['rule']}): held-out known images named", f"{os_['known_named']:.3f}")
    t.add_row("left-out generator's images answered 'unknown'", f"{os_['unknown_rejected']:.3f}")
    if r.get("unknown_examples_rejected") is not None:
        t.add_row("thin / unstated generators answered 'unknown'", f"{r['unknown_examples_rejected']:.3f}")
    console.print(t)
    console.print(f"head saved in {model}; figures in {out / 'attribution.json'}, {out / 'attribution.png'}")


@app.command()
def crossval(
    ctx: typer.Context,
    config: Path = typer.Argument(..., help="TOML: \\[data] sources (the pool), pairs (training-only), folds, merge; "
                                            "\\[train] the recipe; \\[calibration] limits"),
    out: Path = typer.Option(Path("runs/crossval"), "--out", "-o"),
    fold: List[int] = typer.Option([], help="run only these folds (others later; the report needs all)"),
    no_ai: bool = typer.Option(False, "--no-train-ai", help="ablation: train without the pool's generated images"),
    no_pairs: bool = typer.Option(False, "--no-pairs", help="ablation: train without the aligned pairs"),
    no_social: bool = typer.Option(False, "--no-social-aug", help="ablation: no JPEG/downscale/blur augmentation"),
    epochs: Optional[int] = typer.Option(None, help="override the recipe's epochs"),
    max_steps_per_epoch: Optional[int] = typer.Option(None, help="for smoke tests"),
    final: bool = typer.Option(False, "--final", help="then train the model to ship on every group (OUT/final/model), "
                                                      "its temperature, threshold and band from the left-out scores"),
    final_epochs: Optional[int] = typer.Option(None, "--final-epochs", help="the shipped model trains this many epochs "
                                               "(the folds keep the recipe's); check with --fold K --epochs N in "
                                               "another --out that the proxy tracks it"),
    quiet: bool = typer.Option(False, "--quiet", "-q"),
):
    """Leave-sources-out evaluation: each source group left out once and scored by a model that never saw it;
    per-group and pooled figures at an operating point fitted on left-out scores. Resumes finished folds."""
    from .crossval import CrossvalConfig, run_crossval, train_final

    _setup_logging(not quiet)
    try:
        cfg = CrossvalConfig.load(config)
        if no_ai:
            cfg.train_ai = False
        if no_pairs:
            cfg.pairs = []
        if no_social:
            cfg.train.augment.jpeg = cfg.train.augment.downscale = cfg.train.augment.blur = 0.0
        if epochs:
            cfg.train.epochs = epochs
        if max_steps_per_epoch:
            cfg.train.max_steps_per_epoch = max_steps_per_epoch
        rep = run_crossval(cfg, out, progress=not quiet, only_folds=fold or None)
    except (ValueError, KeyError, FileNotFoundError, TypeError) as e:
        _fail(str(e))
    if not rep.get("groups"):
        console.print(f"folds done: {rep['folds_done']} of {cfg.folds}; run again for the rest")
        return
    t = Table(title=f"leave-sources-out ({cfg.folds} folds): every group scored by a model that never saw it")
    for c in ("group", "n", "ROC-AUC", "answered", "conf. wrong", "called AI"):
        t.add_column(c, justify="left" if c == "group" else "right")
    for g, r in sorted(rep["groups"].items(), key=lambda kv: (kv[1]["label"], kv[0])):
        t.add_row(g, str(r["n"]), "-" if r.get("roc_auc") is None else f"{r['roc_auc']:.3f}", f"{r['coverage']:.2f}",
                  f"{r['confidently_wrong']:.2f}", f"{r['called_ai']:.2f}")
    p = rep["pooled"]
    t.add_row("pooled", str(p["n"]), f"{p['roc_auc']:.3f}", f"{p['coverage']:.2f}", f"{p['confidently_wrong']:.2f}", "")
    console.print(t)
    console.print(f"mean ROC-AUC over AI groups {p['mean_ai_group_roc_auc']:.3f}; wrote {out / 'crossval.json'}, "
                  f"{out / 'crossval.md'}, {out / 'crossval.png'}")
    if final:
        try:
            if final_epochs:
                cfg.train.epochs = final_epochs
            c = train_final(cfg, out, rep, progress=not quiet, command=_command_line(ctx))
        except (ValueError, KeyError, FileNotFoundError) as e:
            _fail(str(e))
        tm = c.get("test_metrics")
        console.print(f"[green]saved[/] {out / 'final' / 'model'}"
                      + (f" — held-out part: ROC-AUC {tm['roc_auc']:.4f}, n {tm['n']}" if tm else ""))


def main():
    app()


if __name__ == "__main__":
    main()

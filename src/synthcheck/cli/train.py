"""Commands that train: `models` (the registry), `train`, `compare`, `crossval` and `attribution`."""

from __future__ import annotations

from pathlib import Path
from typing import List, Optional

import typer
from rich.table import Table

from .common import _command_line, _fail, _setup_logging, console, err

def models():
    """List the model registry."""
    from ..models.registry import REGISTRY

    t = Table(title="SynthCheck model registry")
    t.add_column("name"); t.add_column("ImageNet weights"); t.add_column("description")
    for info in REGISTRY.values():
        t.add_row(info.name, "yes" if info.supports_imagenet else "-", info.summary)
    console.print(t)


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
    from ..analysis.card import write_model_card
    from ..data.augment import AugmentConfig
    from ..training.config import TrainConfig, read_toml
    from ..training.train import train as run_train

    _setup_logging(not quiet)
    opts: dict = {}
    if config:
        opts = read_toml(config)
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
    from ..models.checkpoint import save_model, load_model

    m, _ = load_model(out / "model")
    save_model(m, out / "model", result)
    write_model_card(out / "model", result, command=cmd)
    tm = result.get("test_metrics") or result.get("val_metrics")
    console.print(f"[green]saved[/] {out / 'model'} — "
                  f"{'test' if result.get('test_metrics') else 'val'} accuracy {tm['accuracy']:.4f}, AUROC {tm['roc_auc']:.4f}")


def _say_recipe(data: List[Path], cfg) -> None:
    """One line before a long run: what the images become when the recipe's size was not chosen, and which
    recipe fits full-size photos (the default recipe is CIFAKE's: everything resized to 32 px)."""
    from ..data.folders import typical_short_side

    side = typical_short_side(data)
    line = f"recipe: images are resized to {cfg.image_size} px ({cfg.resize_policy})"
    if side is not None:
        line += f"; your images are about {side} px (median short side)"
    if side is not None and side >= 4 * cfg.image_size:
        line += ("; for full-size photos train on native pixels instead: --config configs/photo_native.toml "
                 "(or set --image-size/--resize-policy)")
    err.print(line, soft_wrap=True, markup=False)


def compare(
    config: Path = typer.Argument(..., help="TOML: data, test, [train] recipe, [[model]] entries (see configs/compare_cifake.toml)"),
    out: Path = typer.Option(Path("runs/compare"), "--out", "-o"),
    resume: bool = typer.Option(False, "--resume", help="keep the models OUT/compare.json already has; train the rest"),
    quiet: bool = typer.Option(False, "--quiet", "-q"),
):
    """Train several registry models under one protocol; one table (JSON, Markdown) and one plot."""
    from ..training.compare import COLUMNS, table_row
    from ..training.compare import compare as run_compare

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


def crossval(
    ctx: typer.Context,
    config: Path = typer.Argument(..., help="TOML: \\[data] sources (the pool), pairs (training-only), folds, merge; "
                                            "\\[train] the recipe; \\[calibration] limits"),
    out: Path = typer.Option(Path("runs/crossval"), "--out", "-o"),
    fold: List[int] = typer.Option([], help="run only these folds (others later; the report needs all)"),
    no_ai: bool = typer.Option(False, "--no-train-ai", help="ablation: train without the pool's generated images"),
    no_pairs: bool = typer.Option(False, "--no-pairs", help="ablation: train without the aligned pairs"),
    no_social: bool = typer.Option(False, "--no-social-aug", help="ablation: no JPEG/downscale/blur augmentation"),
    band_condition: List[str] = typer.Option([], "--band-condition", help="also fit the band on the left-out images "
                                             "re-scored so (e.g. 'half size (social)', 'all cut to 256 x 256'); "
                                             "adds to the config's band_conditions"),
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
    from ..training.crossval import CrossvalConfig, run_crossval, train_final

    _setup_logging(not quiet)
    try:
        cfg = CrossvalConfig.load(config)
        if no_ai:
            cfg.train_ai = False
        if no_pairs:
            cfg.pairs = []
        if no_social:
            cfg.train.augment.jpeg = cfg.train.augment.downscale = cfg.train.augment.blur = 0.0
        cfg.band_conditions = list(dict.fromkeys([*cfg.band_conditions, *band_condition]))
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
    _print_loso(rep, cfg.folds, out)
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


def _print_loso(rep: dict, folds: int, out: Path) -> None:
    """The crossval/stack report as a table: each group scored by a model that never saw it."""
    t = Table(title=f"leave-sources-out ({folds} folds): every group scored by a model that never saw it")
    for c in ("group", "n", "ROC-AUC", "answered", "conf. wrong", "called AI"):
        t.add_column(c, justify="left" if c == "group" else "right")
    for g, r in sorted(rep["groups"].items(), key=lambda kv: (kv[1]["label"], kv[0])):
        t.add_row(g, str(r["n"]), "-" if r.get("roc_auc") is None else f"{r['roc_auc']:.3f}", f"{r['coverage']:.2f}",
                  f"{r['confidently_wrong']:.2f}", f"{r['called_ai']:.2f}")
    p = rep["pooled"]
    t.add_row("pooled", str(p["n"]), f"{p['roc_auc']:.3f}", f"{p['coverage']:.2f}", f"{p['confidently_wrong']:.2f}", "")
    console.print(t)
    unit = "families" if rep.get("limit_groups") else "groups"
    console.print(f"mean ROC-AUC over AI {unit} {p['mean_ai_group_roc_auc']:.3f}; wrote {out / 'crossval.json'}, "
                  f"{out / 'crossval.md'}, {out / 'crossval.png'}")


def stack(
    runs: List[Path] = typer.Argument(..., help="crossval output folders over the same pool, families and folds"),
    out: Path = typer.Option(Path("runs/stack"), "--out", "-o"),
    quiet: bool = typer.Option(False, "--quiet", "-q"),
):
    """Stack several crossval runs' left-out scores (a logistic combiner cross-fitted by fold: no image's family is in
    the fit that scores it) and report the stack as crossval reports one run, band and copies included."""
    from ..training.stacking import run_stack

    _setup_logging(not quiet)
    try:
        rep = run_stack([str(r) for r in runs], out, progress=not quiet)
    except (ValueError, KeyError, FileNotFoundError) as e:
        _fail(str(e))
    _print_loso(rep, len(rep["folds"]), out)
    st = rep["stack"]
    console.print("signals alone, pooled ROC-AUC: " + ", ".join(f"{r} {v['roc_auc']:.3f}" for r, v in st["signals"].items())
                  + f"; rank correlation {st['rank_correlation'] if isinstance(st['rank_correlation'], list) else round(st['rank_correlation'], 3)}",
                  soft_wrap=True)


def attribution(
    ctx: typer.Context,
    config: Path = typer.Argument(..., help="the crossval TOML: its pool, groups and \\[attribution] families"),
    model: Path = typer.Option(..., "--model", help="the photo model directory; the head is written beside its weights"),
    out: Path = typer.Option(Path("reports/attribution"), "--out", "-o"),
    left_out: Path = typer.Option(None, "--left-out", help="a crossval run of the same pool: first evaluate names on "
                                  "collections and families its fold models never saw, and ship the naming rule fitted there"),
    quiet: bool = typer.Option(False, "--quiet", "-q"),
):
    """Which generator made it: fit the open-set attribution head on the photo model's own features (top-1 on a
    seeded held-out part, rejection rule and threshold from leave-one-family-out runs); with --left-out, the
    collection-out / family-out report and the rule that decides when a name may be given."""
    from ..training.attribution import run_attribution
    from ..training.attribution_out import run_left_out, save_left_out, shipped_rule

    _setup_logging(not quiet)
    try:
        naming = None
        if left_out is not None:  # first: names judged on what the fold models never saw; the rule ships in the head
            lo = run_left_out(config, left_out, progress=not quiet)
            naming = shipped_rule(lo, save_left_out(out, lo, _command_line(ctx)))
        r = run_attribution(config, model, out, progress=not quiet, naming=naming)
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
    rule = r.get("naming_rule")
    if rule is not None:
        n = rule["left_out"]["nested"]
        said = ", ".join(rule["families"]) or (
            "no family (nothing is named from pixels: " + ("none reached the rule's limits on left-out collections)"
                                                           if rule["left_out"]["candidates"] else
                                                           "no named family has two or more collections to be "
                                                           "validated on one it never saw)"))
        console.print(f"naming rule: {said}; nested on left-out collections and families: "
                      f"{n['right']} right of {n['named']} named, {n['real_named']} of {n['real_uncertain']} real "
                      f"photos reaching can't tell named ({out / 'left_out.md'})", soft_wrap=True)
    console.print(f"head saved in {model}; figures in {out / 'attribution.json'}, {out / 'attribution.png'}")

"""Commands about data: `pairs` (aligned training pairs from real photos) and `audit` (duplicates and shortcuts)."""

from __future__ import annotations

from pathlib import Path
from typing import List, Optional

import typer
from rich.table import Table

from .common import _fail, _setup_logging, console, err

def pairs(
    real: List[Path] = typer.Argument(..., help="real photos: files, folders (recursive) or .tar archives; a "
                                                "labelled layout (real/ and fake/ folders) gives its real images only"),
    out: Path = typer.Option(..., "--out", "-o", help="output folder: real/, fake/ and manifest.csv"),
    autoencoder: str = typer.Option("taef2", help="taesd | taef1 | taef2"),
    weights_dir: Optional[Path] = typer.Option(None, help="folder holding the autoencoder's encoder/decoder files "
                                                          "(default: $SYNTHCHECK_AUTOENCODERS, then $TORCH_HOME/hub/checkpoints)"),
    download: bool = typer.Option(False, "--download", help="fetch missing weights from the published repository"),
    workers: Optional[int] = typer.Option(None, help="processes (default: one per core)"),
    precision: str = typer.Option("auto", help="auto (bf16 where the CPU has AMX/AVX512-BF16, fp32 "
                                                   "elsewhere: emulated bf16 is slower) | bf16 | fp32"),
    copy_originals: bool = typer.Option(True, "--copy-originals/--no-originals",
                                        help="also place each original (hard link or copy) under real/"),
    limit: Optional[int] = typer.Option(None, help="stop after this many originals"),
    quiet: bool = typer.Option(False, "--quiet", "-q"),
):
    """Turn real photos into aligned training pairs: each photo beside its round trip through a latent-diffusion
    autoencoder (JPEG originals keep their quantisation tables). Resumes where it stopped; bad files are named and skipped."""
    from ..data.autoencoders import FAMILIES, find_weights
    from ..data.pairs import make_pairs

    _setup_logging(False)
    if autoencoder not in FAMILIES:
        _fail(f"--autoencoder {autoencoder!r}: choose one of {', '.join(FAMILIES)}")
    if precision not in ("auto", "bf16", "fp32"):
        _fail("--precision must be auto, bf16 or fp32")
    if precision == "auto":
        import torch

        from ..inference.scoring import resolve_precision

        precision = resolve_precision("auto", torch.device("cpu"))  # pairs are made on CPU workers
    try:
        find_weights(autoencoder, weights_dir, download)
        s = make_pairs(real, out, autoencoder, weights_dir, workers, precision == "bf16", copy_originals,
                       progress=not quiet, limit=limit)
    except (ValueError, FileNotFoundError, OSError) as e:
        _fail(str(e))
    console.print(f"{s['written']} pair(s) written to {out} with {autoencoder} in {s['seconds']} s"
                  + (f"; {s['skipped']} already there" if s["skipped"] else ""))
    if not (s["written"] or s["skipped"] or s["failed"]):
        why = "; ".join(f"{n} file(s) {reason}" for reason, n in s["ignored"].items()) or "the sources hold no files"
        err.print(f"[red]no real photos found in {', '.join(map(str, real))}[/]: {why}. Pairs are made from real "
                  "photos: image files, or the real/ (REAL, 0_real) folders of a labelled layout.", soft_wrap=True)
        raise typer.Exit(1)
    for name, problem in s["failed"]:
        err.print(f"[yellow]skipped[/] {name}: {problem}", soft_wrap=True, markup=True, highlight=False)
    if s["failed"]:
        err.print(f"{len(s['failed'])} file(s) could not be used")
        raise typer.Exit(1)


def audit(
    data: List[Path] = typer.Argument(..., help="labelled folders or archives (e.g. both CIFAKE archives)"),
    out: Path = typer.Option(Path("runs/audit"), "--out", "-o"),
    flag_at: float = typer.Option(0.75, help="flag a feature whose single-feature AUROC reaches this"),
):
    """Exact and near duplicates across splits, and shortcut features that alone separate the classes."""
    from ..analysis.audit import audit as run_audit

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


def build_data(
    recipes: List[Path] = typer.Argument(..., help="recipe files or folders of them (configs/data/)"),
    out: Path = typer.Option(..., "--out", "-o", help="output folder: train/ and lockbox/, each {ai,real}/ + "
                                                      "manifest.csv, and build_report.md/.json"),
    mirrors: Optional[Path] = typer.Option(None, help="folder of repository snapshots (<owner>+<name>/repo); only "
                                                      "the repositories the recipes name are read"),
    clone: bool = typer.Option(True, "--clone/--no-clone", help="clone a repository with no snapshot from GitHub "
                                                                "at the pinned commit"),
    git_base: str = typer.Option("https://github.com", help="where --clone clones from"),
    held_out: List[Path] = typer.Option([Path("../shared/data/held-out-repos.txt"), Path("configs/data/refused.txt")],
                                        help="lists of repositories a recipe may never name (held out for "
                                             "independent evaluation, known copies of them)"),
    against: List[Path] = typer.Option([], help="packs to drop duplicates against, compared at their own crop "
                                                "offsets (default: ../shared/data photo-train, photo-train-2, ood-dev)"),
    config: Optional[Path] = typer.Option(None, help="a crossval config whose [data.merge] the recipes' families "
                                                     "must agree with"),
    workers: Optional[int] = typer.Option(None, help="processes (default: one per core)"),
    quiet: bool = typer.Option(False, "--quiet", "-q"),
):
    """Build a training corpus and its lockbox from recipes: pinned files of public repositories, as their sources
    saved them (lossless crops only), duplicates dropped; resumes where it stopped; every skipped file is named."""
    from ..analysis.corpus import build_corpus
    from ..data.recipes import RecipeError

    _setup_logging(False)
    if not against:
        shared = Path("../shared/data")
        against = [p for p in (shared / "photo-train/photo-train.tar", shared / "photo-train-2/photo-train-2.tar",
                               shared / "ood-dev/diffusiondb-vs-coco-imagenet.tar",
                               shared / "ood-dev/cnndetection-gan-crops.tar") if p.is_file()]
    merge = None
    if config is not None:
        from ..training.config import read_toml

        merge = read_toml(config).get("data", {}).get("merge", {})
    try:
        rep = build_corpus(recipes, out, mirrors, tuple(held_out), against, clone, git_base, merge, workers,
                           progress=not quiet)
    except (RecipeError, FileNotFoundError, OSError) as e:
        _fail(str(e))
    t = Table(title=f"Corpus in {out}")
    for c in ("split", "collection", "label", "family", "kept", "photo", "dropped", "skipped"):
        t.add_column(c, justify="right" if c in ("kept", "photo", "dropped", "skipped") else "left")
    for c in rep["collections"]:
        drop = sum(v for k, v in c.items() if k.startswith("dropped"))
        t.add_row(c["split"], c["collection"], c["label"], c["family"], str(c.get("kept", 0)),
                  str(c.get("looks photo", 0)), str(drop), str(c.get("skipped", 0)))
    console.print(t)
    by_reason: dict = {}
    for s in rep["skipped"]:
        by_reason.setdefault((s["repository"], s["reason"]), []).append(s["path"])
    for (repo, reason), paths in by_reason.items():  # every file is named in the report; here one line per cause
        what = f"{repo}:{paths[0]}" if len(paths) == 1 else f"{len(paths)} files of {repo} (all named in the report)"
        err.print(f"[yellow]skipped[/] {what}: {reason}", soft_wrap=True, highlight=False)
    console.print(f"train {rep['totals'].get('train', {})}, lockbox {rep['totals'].get('lockbox', {})}; "
                  f"{len(rep['dropped'])} duplicate(s) dropped, {len(rep['skipped'])} file(s) skipped; "
                  f"report: {out / 'build_report.md'}")
    if not any(rep["totals"].get(sp) for sp in ("train", "lockbox")):
        _fail("nothing was built: every file was skipped (see above)", 1)

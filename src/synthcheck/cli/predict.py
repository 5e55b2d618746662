"""Commands that score images: `predict` (local or on Ray) and `inspect` (metadata evidence only)."""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import List, Optional

import typer
from rich.table import Table

from ..inference.attribution import NO_PIXEL_NAMES, generator_note
from ..inference.metadata import history_summary, is_file_history
from ..inference.prediction import times_in_ten
from .common import BACKEND_HELP, PRECISION_HELP, _display, _expand, _fail, _load_detector, _setup_logging, console, err

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
    backend: str = typer.Option("auto", help=BACKEND_HELP),
    precision: str = typer.Option("auto", help=PRECISION_HELP),
    workers: Optional[int] = typer.Option(None, help="decoding threads (default: one per core)"),
    metadata: bool = typer.Option(True, help="read C2PA/EXIF/XMP/PNG-text evidence, generator watermarks and the JPEG's "
                                             "history (--no-metadata: pixels only, faster)"),
    resave_check: bool = typer.Option(False, "--resave-check", help="also look for an earlier JPEG save in the pixels "
                                      "(~2 ms per 512-px image; `synthcheck inspect` and the server always do)"),
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
        paths.append(str(Path(__file__).resolve().parents[1] / "samples"))
    files, missing = _expand(paths)
    files = [f for f in files if not f.endswith(".md")] if samples else files
    if manifest is not None:
        from ..serving.ray_scoring import read_manifest

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
    det.metadata, det.resave_check = metadata, resave_check
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

    from ..inference.prediction import Prediction

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
        t, said_once = Table(title=det.describe()), set()
        t.add_column("file", overflow="fold"); t.add_column("P(AI)", justify="right"); t.add_column("verdict"); t.add_column("notes")
        for p in rows[:1000]:
            if p.ok:
                colour = {"ai": "red", "real": "green"}.get(p.verdict, "yellow")
                notes = [f"{e['strength']} {e['indicates']} evidence: {e['note']} ({e['field']})" for e in p.evidence
                         if not is_file_history(e)]
                if history_summary(p.evidence):
                    notes.append("file: " + history_summary(p.evidence))
                notes += [f"[yellow]{w}[/]" for w in p.warnings]
                if p.generator and p.generator.get("note") == NO_PIXEL_NAMES and not p.generator.get("metadata"):
                    said_once.add(NO_PIXEL_NAMES)  # the same for every image: said once under the table
                elif p.generator:
                    notes.append(generator_note(p.generator))
                if p.reading:
                    notes.append(f"on unseen sources, scores like this were AI {times_in_ten(p.reading['ai_share'])} "
                                 f"(half/half mix; n {p.reading['n']})")
                if p.verdict != p.pixel_verdict:
                    notes.insert(0, f"pixels alone: {p.pixel_verdict}")
                if p.route:
                    notes.insert(0, f"model {p.model}")
                t.add_row(_display(p.source), f"{p.prob_ai:.4f}", f"[{colour}]{p.verdict}[/]", "\n".join(notes))
            else:
                t.add_row(_display(p.source), "-", "[bold red]error[/]", p.error)
        console.print(t)
        for note in said_once:
            console.print(f"generator from pixels, for every photo above: unknown ({note}); a name from metadata "
                          "is shown on its row", soft_wrap=True)
        if len(rows) > 1000:
            console.print(f"... {len(rows) - 1000} more rows (use --out or --json for all)")
    if failed:
        err.print(f"[yellow]{failed} of {len(files) + len(missing)} file(s) could not be scored[/]")
    raise typer.Exit(1 if failed else 0)


def _predict_ray(files, missing, out, model, workers, batch_size, shard_size, backend, precision, device, metadata,
                 address):
    try:
        import ray  # noqa: F401

        from ..serving.ray_scoring import predict_ray
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


def inspect(paths: List[str] = typer.Argument(..., help="image files, folders or globs"),
            as_json: bool = typer.Option(False, "--json")):
    """Metadata and provenance evidence (C2PA, EXIF/XMP, generator text chunks, generator watermarks, JPEG history),
    reported apart from the pixel score."""
    import json

    from ..inference.metadata import inspect as inspect_file

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
        if history_summary(ev):
            console.print(f"file: {history_summary(ev)}", soft_wrap=True)
    raise typer.Exit(1 if missing else 0)

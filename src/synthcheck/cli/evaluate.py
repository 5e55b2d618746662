"""Commands that measure a model: `evaluate`, `robustness`, and `calibrate` (refit its confidence on new data)."""

from __future__ import annotations

from pathlib import Path
from typing import List, Optional

import typer
from rich.table import Table

from .common import BACKEND_HELP, PRECISION_HELP, _fail, _load_detector, _setup_logging, console

def evaluate(
    model: str = typer.Argument(..., help="model directory, run directory or bundled name ('auto', 'default', "
                                          "'photo', 'robust')"),
    data: List[Path] = typer.Argument(..., help="one or more labelled test sets (folders or tar archives)"),
    out: Path = typer.Option(Path("runs/evaluate"), "--out", "-o", help="folder for metrics JSON and PNG plots"),
    include_train_identical: bool = typer.Option(False, help="keep test files byte-identical to training files"),
    policy: Optional[str] = typer.Option(None, help="score with another input policy than the model's own: resize | "
                                                    "center_crop | crop | tiles:N (to compare policies)"),
    backend: str = typer.Option("auto", help=BACKEND_HELP),
    precision: str = typer.Option("auto", help=PRECISION_HELP),
    quiet: bool = typer.Option(False, "--quiet", "-q"),
):
    """Accuracy, precision, recall, F1, ROC-AUC, AP, ECE, confusion matrix and plots, per set and on average."""
    from ..analysis.evaluate import evaluate_sets

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
    from ..analysis.robustness import robustness_report

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
    for name, m in rep.get("copies", {}).items():
        if "skipped" in m:
            t.add_row(name, "copy", "-", "-", "-", "-")
        else:
            row(name, "copy", m)
    console.print(t)
    console.print(f"wrote {out / 'robustness.json'}, {out / 'robustness.png'} and {out / 'adversarial_examples.png'}")


def calibrate(
    model: str = typer.Argument(..., help="model directory or bundled name"),
    data: List[Path] = typer.Argument(..., help="labelled data from the new domain"),
    out: Path = typer.Option(..., "--out", "-o", help="where to write the recalibrated model directory"),
    max_fpr: Optional[float] = typer.Option(None, help="threshold for this false-positive rate instead of EER"),
    uncertain_band: Optional[float] = typer.Option(None, help="half-width of the 'uncertain' band around the threshold"),
):
    """Refit temperature and threshold on labelled data from a new domain; writes a new model directory."""
    from ..inference.calibration import calibrate_detector

    _setup_logging(False)
    det = _load_detector(model)
    try:
        cfg = calibrate_detector(det, data, out, max_fpr=max_fpr, uncertain_band=uncertain_band)
    except (ValueError, FileNotFoundError) as e:
        _fail(str(e))
    console.print(f"[green]wrote[/] {out}: temperature {cfg['temperature']:.4f}, threshold {cfg['threshold']:.4f} "
                  f"({cfg['threshold_rule']['rule']}), uncertain band ±{cfg['uncertain_band']:.3f}")

"""`synthcheck compare CONFIG`: several registry models trained and measured under one protocol.

The config names the data once, a shared training recipe (`[train]`, any `synthcheck train` option)
and the models (`[[model]]`: name, optional weights / input_size / label / per-model overrides). The
data are decoded once and every model trains on the same split; each is then measured the same
way: test accuracy and ROC-AUC (train-identical files excluded), parameters, training time, scoring
images/s (model only, decoded images, this machine) and accuracy after JPEG re-encoding at q75.
"""

from __future__ import annotations

import json
import time
import tomllib
from pathlib import Path

import numpy as np

from ..data.augment import AugmentConfig
from ..data.store import save_json
from .config import TrainConfig
from .train import load_splits, train

ROW_KEYS = ("label", "model", "weights", "parameters", "epochs", "train_time_s", "test_accuracy", "test_roc_auc",
            "score_img_s", "jpeg75_accuracy")


def read_config(path: Path) -> dict:
    cfg = tomllib.loads(Path(path).read_text())
    if not cfg.get("model"):
        raise ValueError(f"{path}: no [[model]] entries to compare")
    if not cfg.get("data"):
        raise ValueError(f"{path}: give data = [...] (training sources)")
    for m in cfg["model"]:
        if "name" not in m:
            raise ValueError(f"{path}: every [[model]] needs a name")
    return cfg


def _train_config(base: dict, entry: dict) -> TrainConfig:
    opts = {**base, **{k: v for k, v in entry.items() if k not in ("name", "label")}, "model": entry["name"]}
    aug = dict(opts.pop("augment", {}))
    return TrainConfig.from_dict({**opts, "augment": AugmentConfig(**aug)})


def score_speed(det, images: np.ndarray, repeats: int = 3) -> float:
    """Model-only scoring throughput of decoded uint8 images (median of `repeats`, after a warm-up)."""
    det.probabilities_from_arrays(images[:64])
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        det.probabilities_from_arrays(images)
        times.append(time.perf_counter() - t0)
    return len(images) / float(np.median(times))


def jpeg_accuracy(det, images: np.ndarray, labels: np.ndarray, quality: int = 75) -> float:
    from ..data.transforms import apply_damage

    damaged = apply_damage(images, "jpeg", quality, det.spec, np.random.default_rng(0))
    return float(((det.probabilities_from_arrays(damaged) >= det.threshold) == (labels == 1)).mean())


def compare(config_path: Path, out: Path, progress: bool = True, speed_images: int = 1024,
            jpeg_images: int = 2000, resume: bool = False) -> list[dict]:
    """Train and measure each [[model]] of the config; with `resume`, models already in OUT/compare.json are
    kept as measured and only the others are trained (same data, same splits: they are seeded)."""
    from ..analysis.evaluate import drop_train_identical
    from ..inference.detector import Detector

    cfg = read_config(config_path)
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    base = dict(cfg.get("train", {}))
    labels = [_label(e) for e in cfg["model"]]
    done = {r["label"]: r for r in rows_from(out)} if resume and (out / "compare.json").exists() else {}
    rows = [done[k] for k in labels if k in done]
    todo = [e for e in cfg["model"] if _label(e) not in done]
    splits = load_splits(cfg["data"], _train_config(base, cfg["model"][0]), cfg.get("test") or None, progress) if todo else None
    for entry in todo:
        label = _label(entry)
        tc = _train_config(base, entry)
        res = train(cfg["data"], out / label, tc, test=cfg.get("test"), progress=progress, splits=splits)
        det = Detector.load(out / label / "model")
        evalset = splits.test if splits.test is not None and len(splits.test) else splits.val
        evalset, _ = drop_train_identical(det, evalset)
        rng = np.random.default_rng(0)
        pick = np.sort(rng.permutation(len(evalset))[:jpeg_images])
        tm = res.get("test_metrics") or res["val_metrics"]
        rows.append({"label": label, "model": entry["name"], "weights": entry.get("weights"),
                     "parameters": res["parameters"], "epochs": tc.epochs, "train_time_s": res["train_time_s"],
                     "test_accuracy": tm["accuracy"], "test_roc_auc": tm["roc_auc"],
                     "score_img_s": round(score_speed(det, evalset.images[:speed_images]), 1),
                     "jpeg75_accuracy": jpeg_accuracy(det, evalset.images[pick], evalset.labels[pick]),
                     "hardware": res.get("hardware")})
        rows.sort(key=lambda r: labels.index(r["label"]))
        save_json(out / "compare.json", {"config": str(config_path), "rows": rows})  # after each model: nothing lost
    _write_table(rows, out / "compare.md")
    _plot(rows, out / "compare.png")
    return rows


def _label(entry: dict) -> str:
    return entry.get("label") or entry["name"] + (f"+{entry['weights']}" if entry.get("weights") else "")


COLUMNS = ("model", "params", "epochs", "train s", "test acc", "ROC-AUC", "score img/s", "acc @ JPEG 75")


def table_row(r: dict) -> list[str]:
    """One row's cells, in COLUMNS order (the Markdown file and the CLI table both print these)."""
    return [r["label"], f"{r['parameters'] / 1e6:.2f} M", str(r["epochs"]), f"{r['train_time_s']:.0f}",
            f"{r['test_accuracy']:.4f}", f"{r['test_roc_auc']:.4f}", f"{r['score_img_s']:,.0f}",
            f"{r['jpeg75_accuracy']:.4f}"]


def _write_table(rows: list[dict], path: Path) -> None:
    lines = ["| " + " | ".join(COLUMNS) + " |", "|---" * len(COLUMNS) + "|"]
    lines += ["| " + " | ".join(table_row(r)) + " |" for r in rows]
    path.write_text("\n".join(lines) + "\n")


def _plot(rows: list[dict], path: Path) -> None:
    from matplotlib.figure import Figure

    fig = Figure(figsize=(7, 4.5))
    ax = fig.subplots()
    for r in rows:
        ax.scatter(r["score_img_s"], r["test_accuracy"], s=30 + 200 * np.sqrt(r["parameters"] / 25e6))
        ax.annotate(r["label"], (r["score_img_s"], r["test_accuracy"]), fontsize=8, xytext=(4, 4),
                    textcoords="offset points")
    ax.set_xscale("log")
    ax.set_xlabel("scoring images/s (model only, this machine, log)")
    ax.set_ylabel("test accuracy")
    ax.set_title("accuracy vs speed (marker area ~ parameters)")
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def rows_from(out: Path) -> list[dict]:
    return json.loads((Path(out) / "compare.json").read_text())["rows"]

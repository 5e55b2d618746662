"""Leave-sources-out runs of one recipe trained on different data, side by side: what each part of the
training data buys on generators and cameras the model never saw (`scripts/ablation_table.py`, the photo
model's card)."""

from __future__ import annotations

import numpy as np

# AI groups reported one by one: the current photoreal generators users meet; the rest are summarised
NAMED = {"nano-banana": ("ai:nano-banana", "ai:nano-banana-pro"), "gpt-4o": ("ai:gpt-4o",),
         "game AI": ("ai:realorai",), "DiffusionDB": ("ai:diffusion",)}
GANS = ("biggan", "crn", "cyclegan", "deepfake", "gaugan", "imle", "san", "seeingdark", "stargan", "stylegan")


def row(label: str, report: dict) -> dict:
    g, p = report["groups"], report["pooled"]
    auc = {k: v["roc_auc"] for k, v in g.items() if v.get("roc_auc") is not None}
    named = {name: float(np.mean([auc[k] for k in keys if k in auc])) for name, keys in NAMED.items()}
    gan = [auc[f"ai:{k}"] for k in GANS if f"ai:{k}" in auc]
    old = [v for k, v in auc.items() if k.startswith("ai:") and k[3:] not in GANS
           and not any(k in keys for keys in NAMED.values())]
    cfg = report.get("config", {})
    aug = cfg.get("train", {}).get("augment", {})
    real_false = {k: v["called_ai_at_threshold"] for k, v in g.items() if v["label"] == "real"}
    return {
        "run": label,
        "generated images in training": bool(cfg.get("train_ai", True)),
        "aligned pairs in training": bool(cfg.get("pairs")),
        "social-media augmentation": bool(aug.get("jpeg", 0) or aug.get("downscale", 0)),
        "pooled_roc_auc": p["roc_auc"],
        "mean_ai_group_roc_auc": p["mean_ai_group_roc_auc"],
        **{f"roc_auc {k}": v for k, v in named.items()},
        "roc_auc GANs (mean of 10)": float(np.mean(gan)) if gan else None,
        "roc_auc 2022-era generators (mean)": float(np.mean(old)) if old else None,
        "answered": p["coverage"],
        "confidently_wrong": p["confidently_wrong"],
        "worst_group_confidently_wrong": p["max_group_confidently_wrong"],
        "real_sources_over_10pct_called_ai_at_threshold": sum(v > 0.10 for v in real_false.values()),
        "real_sources": len(real_false),
    }


def markdown(rows: list[dict]) -> str:
    cols = [("run", "training data"), ("social-media augmentation", "social aug."),
            ("pooled_roc_auc", "pooled ROC-AUC"), ("mean_ai_group_roc_auc", "mean AI-group ROC-AUC"),
            *[(f"roc_auc {k}", k) for k in NAMED], ("roc_auc GANs (mean of 10)", "GANs"),
            ("roc_auc 2022-era generators (mean)", "2022-era"), ("answered", "answered"),
            ("confidently_wrong", "confidently wrong"), ("worst_group_confidently_wrong", "worst group")]
    fmt = lambda v: "yes" if v is True else "no" if v is False else f"{v:.3f}" if isinstance(v, float) else str(v)
    lines = ["| " + " | ".join(h for _, h in cols) + " | real sources >10% called AI |",
             "|" + "---|" * (len(cols) + 1)]
    for r in rows:
        lines.append("| " + " | ".join(fmt(r[k]) for k, _ in cols)
                     + f" | {r['real_sources_over_10pct_called_ai_at_threshold']} of {r['real_sources']} |")
    return "\n".join(lines)

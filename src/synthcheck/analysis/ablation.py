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


# Photo model v3: rows by the families fixed in its issue (crossval `limit_by = "family"`), copies beside the files
V3_NAMED = ("sd1", "sdxl", "sd3", "flux", "nano-banana", "gpt-4o", "realorai", "pack-2022", "open-dit")
JPEG90, CROP256 = "all re-encoded JPEG 90", "all cut to 256 x 256"


def family_row(label: str, report: dict) -> dict:
    """One run by families: pooled and per-family ROC-AUC (GANs as their mean), the same on the JPEG 90 copies,
    coverage and errors at its cross-fitted band, and how many families and sources it answers at least 10% of."""
    fams, p, cond = report["limit_groups"], report["pooled"], report.get("conditions", {})
    auc = {k[3:]: v["roc_auc"] for k, v in fams.items() if k.startswith("ai:")}
    gan = [auc[k] for k in GANS if k in auc]
    real = [v for v in fams.values() if v["label"] == "real"]
    ai = [v for v in fams.values() if v["label"] == "ai"]
    return {
        "run": label,
        "pooled_roc_auc": p["roc_auc"], "mean_ai_family_roc_auc": p["mean_ai_group_roc_auc"],
        **{f"roc_auc {k}": auc.get(k) for k in V3_NAMED},
        "roc_auc GANs (mean of 10)": float(np.mean(gan)) if gan else None,
        "jpeg90_pooled_roc_auc": (cond.get(JPEG90) or {}).get("roc_auc"),
        "jpeg90_mean_ai_family_roc_auc": (cond.get(JPEG90) or {}).get("mean_ai_group_roc_auc"),
        "crop256_pooled_roc_auc": (cond.get(CROP256) or {}).get("roc_auc"),
        "answered": p["coverage"], "confidently_wrong": p["confidently_wrong"],
        "worst_family_confidently_wrong": p["max_group_confidently_wrong"],
        "ai_families_answered_10pct": sum(v["coverage"] >= 0.10 for v in ai), "ai_families": len(ai),
        "real_sources_answered_10pct": sum(v["coverage"] >= 0.10 for v in real), "real_sources": len(real),
    }


def family_markdown(rows: list[dict]) -> str:
    cols = [("run", "run"), ("pooled_roc_auc", "pooled ROC-AUC"), ("mean_ai_family_roc_auc", "mean over AI families"),
            *[(f"roc_auc {k}", k) for k in V3_NAMED], ("roc_auc GANs (mean of 10)", "GANs (10)"),
            ("jpeg90_pooled_roc_auc", "JPEG 90 pooled"), ("jpeg90_mean_ai_family_roc_auc", "JPEG 90 families"),
            ("crop256_pooled_roc_auc", "256 crops pooled"), ("answered", "answered"),
            ("confidently_wrong", "conf. wrong"), ("worst_family_confidently_wrong", "worst family")]
    fmt = lambda v: "-" if v is None else f"{v:.3f}" if isinstance(v, float) else str(v)
    lines = ["| " + " | ".join(h for _, h in cols) + " | AI families ≥10% answered | real sources ≥10% answered |",
             "|" + "---|" * (len(cols) + 2)]
    for r in rows:
        lines.append("| " + " | ".join(fmt(r[k]) for k, _ in cols)
                     + f" | {r['ai_families_answered_10pct']} of {r['ai_families']} | "
                     f"{r['real_sources_answered_10pct']} of {r['real_sources']} |")
    return "\n".join(lines)

"""Attacks and everyday damage, for measuring (and training for) robustness.

Attacks work in pixel space [0, 1], before the model's own normalisation (the
`InputAdapter` inside every registry model), so epsilon means what users think:
8/255 is eight grey levels. Short own implementations: torchattacks and ART
assume a multi-class softmax output, while these models have one logit.

The report damages the decoded uint8 images at the model's input size (the
native size for 32-px CIFAKE; for larger sets, after the model's own fitting)
with `data.transforms` (the same damage robust training applies) and passes the
result through `preprocess.load_image` again; attacked and damaged images are
scored by the same `Detector` path as clean ones. The copies users share (the
one registry, `transforms.CONDITIONS`) act on whole images, as crossval's do.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

from ..data.transforms import DAMAGE, apply_damage


def _loss_grad(model, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    x = x.detach().requires_grad_(True)
    with torch.enable_grad():
        loss = F.binary_cross_entropy_with_logits(model(x).float(), y.float(), reduction="sum")
        (g,) = torch.autograd.grad(loss, x)
    return g


def fgsm(model, x: torch.Tensor, y: torch.Tensor, eps: float) -> torch.Tensor:
    """Fast gradient sign method (Goodfellow et al., 2015): one step of size eps up the loss of the true label.

    Untargeted, so fakes are pushed towards "real" and reals towards "AI" at once.
    """
    return (x + eps * _loss_grad(model, x, y).sign()).clamp(0, 1).detach()


def pgd(model, x: torch.Tensor, y: torch.Tensor, eps: float, steps: int = 10, step_size: float | None = None,
        random_start: bool = True, generator: torch.Generator | None = None) -> torch.Tensor:
    """Projected gradient descent in the L-inf ball (Madry et al., 2018), pixels kept in [0, 1]."""
    step_size = step_size if step_size is not None else 2.5 * eps / max(steps, 1)
    adv = x.clone()
    if random_start and eps > 0:
        noise = torch.rand(x.shape, generator=generator, device="cpu").to(x.device)
        adv = (adv + (noise * 2 - 1) * eps).clamp(0, 1)
    for _ in range(steps):
        adv = adv + step_size * _loss_grad(model, adv, y).sign()
        adv = torch.min(torch.max(adv, x - eps), x + eps).clamp(0, 1).detach()
    return adv


# --- the report ------------------------------------------------------------------------------------

def _metrics(labels: np.ndarray, probs: np.ndarray, threshold: float) -> dict:
    from .metrics import compute_metrics

    m = compute_metrics(labels, probs, threshold)
    return {"accuracy": m["accuracy"], "roc_auc": m["roc_auc"], "ai_recall": m["per_class"]["ai"]["recall"],
            "real_recall": m["per_class"]["real"]["recall"]}


def robustness_report(detector, source, out_dir=None, limit: int | None = 1000, eps: tuple = (1, 2, 4, 8),
                      steps: int = 10, seed: int = 0, batch_size: int = 250, progress: bool = True) -> dict:
    """Accuracy and AUROC of a Detector under each damage level and each attack strength (eps in /255).

    `ai_recall` falling under attack means fakes were made to look real; `real_recall`
    falling means reals were made to look fake: both directions are reported.
    """
    from tqdm.auto import tqdm

    from ..data.folders import load_imageset
    from ..data.store import save_json
    from .evaluate import drop_train_identical, evaluation_part

    s, _ = drop_train_identical(detector, evaluation_part(load_imageset(source, detector.spec, progress=progress)))
    rng = np.random.default_rng(seed)
    if limit:
        keep = np.concatenate([rng.permutation(np.flatnonzero(s.labels == c))[:limit] for c in (0, 1)])
        s = s.subset(np.sort(keep))
    labels, thr = s.labels, detector.threshold
    report = {"model": detector.model_id, "source": str(source), "n": int(len(labels)), "threshold": thr,
              "clean": _metrics(labels, detector.probabilities_from_arrays(s.images), thr), "damage": {}, "attacks": {}}
    jobs = [(name, level) for name, (_, levels) in DAMAGE.items() for level in levels]
    for name, level in tqdm(jobs, desc="damage", disable=not progress):
        damaged = apply_damage(s.images, name, level, detector.spec, rng)
        report["damage"].setdefault(name, {})[str(level)] = _metrics(labels, detector.probabilities_from_arrays(damaged),
                                                                     thr)
    report["copies"] = copies_report(detector, source, s, progress)
    model, dev = detector.model, detector.device
    gen = torch.Generator().manual_seed(seed)
    for attack in ("fgsm", "pgd"):
        for e in tqdm(eps, desc=attack, disable=not progress):
            attacked = np.empty_like(s.images)
            t = s.images.shape[1] if s.images.ndim == 5 else 1  # tiled models: every tile is attacked
            for i in range(0, len(labels), max(1, batch_size // t)):
                chunk = s.images[i:i + max(1, batch_size // t)]
                x = torch.from_numpy(chunk.reshape(-1, *chunk.shape[-3:])).to(dev).float() / 255
                y = torch.from_numpy(labels[i:i + len(chunk)]).to(dev).float().repeat_interleave(t)
                adv = fgsm(model, x, y, e / 255) if attack == "fgsm" else pgd(model, x, y, e / 255, steps, generator=gen)
                attacked[i:i + len(chunk)] = (adv * 255).round().to(torch.uint8).cpu().numpy().reshape(chunk.shape)
            report["attacks"].setdefault(attack, {})[str(e)] = _metrics(
                labels, detector.probabilities_from_arrays(attacked), thr)
    report["attack_settings"] = {"norm": "Linf", "eps_over_255": list(eps), "pgd_steps": steps,
                                 "pgd_step_size": "2.5*eps/steps", "random_start": True, "space": "pixels [0,1]"}
    if out_dir is not None:
        from pathlib import Path

        out_dir = Path(out_dir)
        save_json(out_dir / "robustness.json", report)
        _plot_report(report, out_dir)
        pick = np.concatenate([np.flatnonzero(labels == c)[:2] for c in (1, 0)])  # two AI, two real
        shown = s.images[pick]
        if shown.ndim == 5:  # tiled models: show each image's first tile
            shown = shown[:, 0]
        x = torch.from_numpy(np.ascontiguousarray(shown)).to(dev).float() / 255
        adv = pgd(model, x, torch.from_numpy(labels[pick]).to(dev).float(), max(eps) / 255, steps, generator=gen)
        _plot_examples({"x": x.cpu(), "adv": ((adv * 255).round() / 255).cpu(), "labels": labels[pick]},
                       out_dir / "adversarial_examples.png", max(eps))
    return report


def copy_probabilities(detector, source, conditions: list[str], names: set | None = None, ctx=None,
                       progress: bool = True) -> dict:
    """Calibrated P(AI) of a labelled set's files under each of `data.transforms.CONDITIONS`: the whole decoded
    image transformed as a user's copy would be (with its label, for the swap), then the model's own
    preprocessing, as `synthcheck evaluate` scores files ("as is" reproduces it). Files byte-identical to the
    model's training data are left out, as evaluate leaves them out; `names` keeps only those files.
    -> {condition: (names, labels, probs)}; one image decoded at a time, so a large set costs no memory."""
    from tqdm.auto import tqdm

    from ..data.folders import iter_source
    from ..data.preprocess import decode_image, fit
    from ..data.store import digest
    from ..data.transforms import CONDITIONS

    unknown = [c for c in conditions if c not in CONDITIONS]
    if unknown:
        raise ValueError(f"{unknown[0]!r} is not in data.transforms.CONDITIONS")
    train = detector.train_digests() or set()
    kept, labels, probs = [], [], {c: [] for c in conditions}
    for i, item in enumerate(tqdm(list(iter_source(source)), desc="copies", disable=not progress, unit="img")):
        if (names is not None and item.name not in names) or digest(item.data)[:8] in train:
            continue
        rgb = decode_image(item.data, item.name)
        kept.append(item.name)
        labels.append(item.label)
        for c in conditions:
            x = fit(CONDITIONS[c](rgb, item.label, ctx, i), detector.spec)[None]
            probs[c].append(float(detector.probabilities_from_arrays(x)[0]))
    return {c: (kept, np.array(labels), np.array(p)) for c, p in probs.items()}


def copies_report(detector, source, s, progress: bool = True) -> dict:
    """Figures on the copies of `data.transforms.CONDITIONS` users share (the everyday panel; the processing swap
    where the model stores its training real photos' camera tables), whole images as crossval's yardstick."""
    from ..data.transforms import CONDITIONS, SaveContext

    tables = tuple((np.array(t["luma"]), None if t["chroma"] is None else np.array(t["chroma"]), t["subsampling"])
                   for t in detector.config.get("camera_tables", []))
    ctx = SaveContext(tables, 0) if tables else None
    wanted = [c for c, cond in CONDITIONS.items() if cond.panel or (cond.label_dependent and ctx is not None)]
    scores = copy_probabilities(detector, source, wanted, set(s.names), ctx, progress)
    out = {c: _metrics(scores[c][1], scores[c][2], detector.threshold) for c in wanted}
    for c, cond in CONDITIONS.items():
        if cond.label_dependent and ctx is None:
            out[c] = {"skipped": "the model stores no camera tables of its training real photos"}
    return out


def _plot_report(report: dict, out_dir) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = list(report["damage"]) + ["attacks"]
    fig, axes = plt.subplots(1, len(names), figsize=(3.2 * len(names), 3.2), sharey=True)
    clean = report["clean"]["accuracy"]
    for ax, name in zip(axes, names):
        series = report["attacks"] if name == "attacks" else {name: report["damage"][name]}
        for label, levels in series.items():
            xs = list(levels)
            ax.plot(range(len(xs)), [levels[k]["accuracy"] for k in xs], "o-", label=label)
            ax.set_xticks(range(len(xs)), xs)
        ax.axhline(clean, color="k", ls=":", lw=0.8, label="clean")
        ax.set_title(name if name != "attacks" else "attacks (eps/255)", fontsize=9)
        ax.set_ylim(0, 1.02)
        ax.legend(fontsize=7)
    axes[0].set_ylabel("accuracy")
    fig.suptitle(f"{report['model']} on {report['n']} images", fontsize=10)
    fig.tight_layout()
    fig.savefig(out_dir / "robustness.png", dpi=100)
    plt.close(fig)


def _plot_examples(ex: dict, path, eps: int) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    n = len(ex["labels"])
    fig, axes = plt.subplots(n, 3, figsize=(6, 2 * n))
    for row, x, adv, y in zip(np.atleast_2d(axes), ex["x"], ex["adv"], ex["labels"]):
        pert = ((adv - x) * 10 + 0.5).clamp(0, 1)
        for ax, im, title in zip(row, (x, pert, adv), (f"original ({'AI' if y else 'real'})", "perturbation x10",
                                                        f"PGD eps {eps}/255")):
            ax.imshow(im.permute(1, 2, 0).numpy(), interpolation="nearest")
            ax.set_title(title, fontsize=8)
            ax.axis("off")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)

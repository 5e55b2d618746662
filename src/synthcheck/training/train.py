"""Training: decoded uint8 data resident on the device, batched augmentation, one logit + BCEWithLogitsLoss.

Conventions follow torchvision's references/classification (seeded, AdamW/SGD,
one-cycle/cosine, checkpoint every epoch, resume) with airbench's habit of
keeping the whole dataset on the device and augmenting whole batches at once.
"""

from __future__ import annotations

import csv
import json
import logging
import math
import os
import random
import shutil
import subprocess
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from .._version import __version__
from ..analysis.metrics import compute_metrics
from ..analysis.robustness import pgd
from ..data.augment import augment, random_crops
from ..data.folders import load_imageset, size_stats
from ..data.preprocess import PreprocessSpec
from ..data.splits import Splits, make_splits
from ..inference.calibration import choose_threshold, fit_temperature, probabilities
from ..inference.scoring import autocast_for, cpu_threads, pick_device, score_logits, to_input
from ..models.checkpoint import load_state, save_model, save_state, save_train_digests
from ..models.registry import build_model, count_parameters, last_linear
from . import distributed
from .config import TrainConfig, as_tiles, model_spec

log = logging.getLogger("synthcheck")


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def git_commit() -> str | None:
    try:
        here = Path(__file__).resolve().parent
        out = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=here, capture_output=True, text=True, timeout=5)
        return out.stdout.strip() or None
    except Exception:
        return None


def hardware(device: torch.device) -> str:
    """What trained the model, for the model card (timings mean little without it)."""
    import platform

    if device.type == "cuda":
        return f"{torch.cuda.get_device_name(device)}, torch {torch.__version__}"
    return f"{platform.processor() or platform.machine()} CPU, {os.cpu_count()} cores, torch {torch.__version__}"


def freeze_all_but_head(model: torch.nn.Module) -> None:
    """Linear probe (as UnivFD): only the last Linear layer learns; the pretrained features stay fixed."""
    head = last_linear(model)
    for p in model.parameters():
        p.requires_grad_(False)
    for p in head.parameters():
        p.requires_grad_(True)


def _make_optimizer(model, cfg: TrainConfig):
    decay, no_decay = [], []
    for n, p in model.named_parameters():
        if not p.requires_grad:
            continue
        (no_decay if p.ndim <= 1 else decay).append(p)
    groups = [{"params": decay, "weight_decay": cfg.weight_decay}, {"params": no_decay, "weight_decay": 0.0}]
    if cfg.optimizer == "adamw":
        return torch.optim.AdamW(groups, lr=cfg.lr, betas=(0.9, 0.99))
    if cfg.optimizer == "sgd":
        return torch.optim.SGD(groups, lr=cfg.lr, momentum=0.9, nesterov=True)
    raise ValueError(f"unknown optimizer {cfg.optimizer!r}")


def _make_schedule(opt, cfg: TrainConfig, total_steps: int):
    if cfg.schedule == "onecycle":
        return torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=cfg.lr, total_steps=max(total_steps, 1),
                                                   pct_start=0.25, div_factor=10, final_div_factor=100)
    if cfg.schedule == "cosine":
        return torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=max(total_steps, 1))
    if cfg.schedule == "constant":
        return torch.optim.lr_scheduler.LambdaLR(opt, lambda _: 1.0)
    raise ValueError(f"unknown schedule {cfg.schedule!r}")


def load_splits(data: list[str | Path], cfg: TrainConfig, test: list[str | Path] | None = None,
                progress: bool = True) -> Splits:
    spec = PreprocessSpec(cfg.image_size, cfg.resize_policy, tiles=1 if cfg.crop else cfg.tiles)
    sets = [load_imageset(s, spec, workers=cfg.workers, progress=progress) for s in data]
    tests = [load_imageset(s, spec, workers=cfg.workers, progress=progress) for s in (test or [])]
    splits = make_splits(sets, cfg.val_fraction, cfg.seed, tests, cfg.exclude_duplicates, cfg.test_fraction)
    if cfg.limit_train and cfg.limit_train < len(splits.train):
        from ..data.splits import stratified_split
        _, keep = stratified_split(splits.train.labels, cfg.limit_train / len(splits.train), cfg.seed)
        splits.train = splits.train.subset(keep)
        splits.report["sizes"]["train"] = len(splits.train)
    skipped = sum(len(s.skipped) for s in sets + tests)
    splits.report["skipped_files"] = skipped
    splits.report["skipped_examples"] = [f"{n}: {p}" for s in sets + tests for n, p in s.skipped][:20]
    return splits


def _write_history(out: Path, history: list[dict]) -> None:
    if not history:
        return
    with open(out / "history.csv", "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=list(history[0]))
        w.writeheader()
        w.writerows(history)
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    ep = [h["epoch"] for h in history]
    fig, axes = plt.subplots(1, 2, figsize=(9, 3.5))
    axes[0].plot(ep, [h["train_loss"] for h in history], "o-", label="train")
    axes[0].plot(ep, [h["val_loss"] for h in history], "o-", label="val")
    axes[0].set_title("loss (BCE)"); axes[0].set_xlabel("epoch"); axes[0].legend()
    axes[1].plot(ep, [h["train_acc"] for h in history], "o-", label="train")
    axes[1].plot(ep, [h["val_acc"] for h in history], "o-", label="val")
    axes[1].set_title("accuracy"); axes[1].set_xlabel("epoch"); axes[1].legend()
    fig.tight_layout()
    fig.savefig(out / "curves.png", dpi=110)
    plt.close(fig)


def _replace_dir(tmp: Path, final: Path) -> None:
    """Swap a fully written directory into place; the old one survives until the new one is complete."""
    old = final.with_name(final.name + ".old")
    if old.exists():
        shutil.rmtree(old)
    if final.exists():
        final.rename(old)
    tmp.rename(final)
    if old.exists():
        shutil.rmtree(old)


def train(data: list[str | Path], out: str | Path, cfg: TrainConfig, test: list[str | Path] | None = None,
          resume: bool = False, progress: bool = True, splits: Splits | None = None) -> dict:
    """Train a registry model; writes `out/model/` (best weights), `out/last/` (resume state), history and curves.

    Under torchrun each process trains on a disjoint shard of every epoch with gradients all-reduced
    (DistributedDataParallel); only rank 0 writes anything, and only rank 0 returns the model config.
    """
    if cfg.augment.pack_save_real and not cfg.crop:
        raise ValueError("augment.pack_save_real saves a real photo's stored image before a random crop: it needs "
                         "`crop` (a native store), which this recipe does not use")
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    seed_everything(cfg.seed)
    device = pick_device(cfg.device)
    if device.type == "cpu":
        torch.set_num_threads(cpu_threads())
    ddp, device = distributed.init(device)  # no-op unless launched by torchrun
    try:
        return _train(data, out, cfg, test, resume, progress and ddp.main, splits, ddp, device)
    finally:
        distributed.close(ddp)


def _train(data, out: Path, cfg: TrainConfig, test, resume: bool, progress: bool, splits: Splits | None,
           ddp: distributed.Context, device: torch.device) -> dict:
    from tqdm.auto import tqdm

    cuda = device.type == "cuda"
    if splits is None:
        if not ddp.main:  # rank 0 decodes into the shared cache first; the others then read it
            distributed.barrier(ddp)
        splits = load_splits(data, cfg, test, progress)
        if ddp.main:
            distributed.barrier(ddp)
    if ddp.main:
        log.info("data: %s", json.dumps(splits.report))
    if cfg.crop:  # validation and test are scored as the model will be: a tile grid of each image
        splits = Splits(splits.train, as_tiles(splits.val, model_spec(cfg)),
                        as_tiles(splits.test, model_spec(cfg)) if splits.test is not None else None, splits.report)
    train_x = torch.from_numpy(splits.train.images).to(device)
    train_hw = torch.from_numpy(splits.train.sizes)
    train_y = torch.from_numpy(splits.train.labels).float().to(device)
    val_x, val_y = splits.val.images, splits.val.labels

    model, arch = build_model(cfg.model, cfg.weights, cfg.input_size, cfg.tile_rule)
    if cfg.freeze_backbone:
        freeze_all_but_head(model)
    model.to(device)
    side = cfg.crop or cfg.input_size or cfg.image_size
    use_cl = cfg.channels_last and (cuda or side >= 96)
    if use_cl:
        model.to(memory_format=torch.channels_last)
    step_model = model
    if ddp.enabled:
        from torch.nn.parallel import DistributedDataParallel

        step_model = DistributedDataParallel(model, device_ids=[device.index] if cuda else None)
    step_model = torch.compile(step_model) if cfg.compile else step_model

    n = len(train_x)
    # the global batch stays cfg.batch_size whatever the number of processes: same recipe, same schedule
    bs = max(1, min(cfg.batch_size, n) // ddp.world)
    per_rank = n // ddp.world
    steps_per_epoch = per_rank // bs if per_rank >= bs else 1
    if cfg.max_steps_per_epoch:
        steps_per_epoch = min(steps_per_epoch, cfg.max_steps_per_epoch)
    opt = _make_optimizer(model, cfg)
    sched = _make_schedule(opt, cfg, steps_per_epoch * cfg.epochs)

    history: list[dict] = []
    start_epoch, best_val, bad_epochs, train_time = 0, math.inf, 0, 0.0
    last_dir = out / "last"
    if resume:
        state = load_state(last_dir) or load_state(out / "last.old")
        if state is None:
            log.warning("--resume: no saved state in %s, starting fresh", last_dir)
        else:
            if state.get("total_steps", steps_per_epoch * cfg.epochs) != steps_per_epoch * cfg.epochs:
                raise ValueError(f"--resume must use the interrupted run's epochs/batch size "
                                 f"(its schedule has {state.get('total_steps')} steps); start a new --out to change them")
            model.load_state_dict(state["model"])
            opt.load_state_dict(state["optimizer"])
            sched.load_state_dict(state["scheduler"])
            start_epoch, best_val, bad_epochs = state["epoch"], state["best_val"], state["bad_epochs"]
            history, train_time = state["history"], state["train_time"]
            torch.set_rng_state(state["rng"])
            log.info("resumed from epoch %d", start_epoch)

    base_config = {
        "arch": arch,
        "preprocess": model_spec(cfg).to_dict(),
        "train": cfg.to_dict(),
        "data": {"sources": [str(d) for d in data], "test_sources": [str(t) for t in (test or [])],
                 "fingerprint": splits.train.fingerprint(), "counts": splits.train.counts(),
                 "image_sizes": size_stats(splits.train.sizes), **splits.report},
        "parameters": count_parameters(model),
        "git_commit": git_commit(),
        "synthcheck_version": __version__,
        "hardware": hardware(device) + (f" x {ddp.world} processes (DDP)" if ddp.enabled else ""),
    }
    gen = torch.Generator().manual_seed(cfg.seed)
    stopped_early = False
    for epoch in range(start_epoch, cfg.epochs):
        if bad_epochs >= cfg.patience:
            stopped_early = True
            break
        gen.manual_seed(cfg.seed * 1000 + epoch)  # per-epoch stream: resume replays the same order
        perm = torch.randperm(n, generator=gen)  # the same on every rank
        if ddp.enabled:
            perm = distributed.shard(perm, ddp, steps_per_epoch * bs)
            gen.manual_seed(cfg.seed * 1000 + epoch + 1_000_003 * ddp.rank)  # own augmentation stream per rank
            if epoch == start_epoch:
                _write_shard(out, ddp, epoch, perm)
        perm = perm.to(device)
        model.train()
        if cfg.freeze_backbone:  # frozen features: BatchNorm statistics and dropout stay as pretrained
            model.backbone.eval()
        t0 = time.perf_counter()
        loss_sum = torch.zeros((), device=device)
        correct = torch.zeros((), device=device)
        seen = 0
        bar = tqdm(range(steps_per_epoch), desc=f"epoch {epoch + 1}/{cfg.epochs}", unit="step", disable=not progress,
                   mininterval=1.0, leave=False)
        for step in bar:
            idx = perm[step * bs:(step + 1) * bs]
            xb = train_x[idx]
            if cfg.crop:  # a random native crop of each stored image
                x = augment(random_crops(xb, train_hw[idx.cpu()], cfg.crop, cfg.augment.downscale, gen, train_y[idx],
                                         cfg.augment.pack_save_real), cfg.augment, gen)
            else:
                if xb.ndim == 5:  # tiles: one random native crop of each image per step
                    pick = torch.randint(xb.shape[1], (len(idx),), generator=gen).to(device)
                    xb = xb[torch.arange(len(idx), device=device), pick]
                x = augment(to_input(xb), cfg.augment, gen)
            y = train_y[idx]
            if cfg.adv_eps > 0:  # Madry et al. (2018): train on PGD examples made against the current weights
                model.eval()
                x = pgd(model, x, y, cfg.adv_eps / 255, cfg.adv_steps, generator=gen)
                model.train()
            if use_cl:
                x = x.contiguous(memory_format=torch.channels_last)
            with autocast_for(device, cfg.amp, cpu=cfg.cpu_amp):
                logits = step_model(x).float()
            loss = F.binary_cross_entropy_with_logits(logits, y)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
            loss_sum += loss.detach() * len(idx)
            correct += ((logits.detach() > 0) == (y > 0.5)).sum()
            seen += len(idx)
            if progress and (step % 20 == 0 or step == steps_per_epoch - 1):
                el = time.perf_counter() - t0
                bar.set_postfix(loss=f"{loss_sum.item() / seen:.4f}", acc=f"{correct.item() / seen:.4f}",
                                img_s=f"{seen / max(el, 1e-9):.0f}")
        bar.close()
        if cuda:
            torch.cuda.synchronize()
        epoch_time = time.perf_counter() - t0
        train_time += epoch_time
        totals = distributed.all_sum(torch.stack([loss_sum.double(), correct.double(),
                                                  torch.tensor(float(seen), dtype=torch.float64, device=device)]), ddp)
        loss_sum, correct, seen = totals[0], totals[1], int(totals[2].item())
        val_loss = val_acc = 0.0
        if ddp.main:
            val_logits = score_logits(model, val_x, batch_size=1024, device=device, amp=cfg.amp)
            val_probs = probabilities(val_logits)
            val_loss = float(F.binary_cross_entropy_with_logits(torch.as_tensor(val_logits).double(),
                                                                torch.as_tensor(val_y).double()))
            val_acc = float(((val_probs >= 0.5) == val_y).mean())
        val_loss, val_acc = distributed.from_main([val_loss, val_acc], ddp, device)
        row = {"epoch": epoch + 1, "train_loss": round(loss_sum.item() / seen, 6), "train_acc": round(correct.item() / seen, 6),
               "val_loss": round(val_loss, 6), "val_acc": round(val_acc, 6), "lr": opt.param_groups[0]["lr"],
               "epoch_time_s": round(epoch_time, 2), "train_img_s": round(seen / epoch_time, 1)}
        history.append(row)
        improved = val_loss < best_val  # the same on every rank: val_loss is rank 0's
        if improved:
            best_val, bad_epochs = val_loss, 0
        else:
            bad_epochs += 1
        if not ddp.main:  # rank 0 alone writes checkpoints, history and progress
            continue
        msg = (f"epoch {epoch + 1}: train loss {row['train_loss']:.4f} acc {row['train_acc']:.4f} | "
               f"val loss {val_loss:.4f} acc {val_acc:.4f} | {epoch_time:.1f}s, {row['train_img_s']:.0f} img/s")
        (tqdm.write if progress else log.info)(msg)
        if improved:
            tmp = out / "model.tmp"
            if tmp.exists():
                shutil.rmtree(tmp)
            save_model(model, tmp, {**base_config, "epoch": epoch + 1, "val_loss": val_loss, "val_acc": val_acc,
                                    "threshold": 0.5, "temperature": 1.0})
            _replace_dir(tmp, out / "model")
        tmp = out / "last.tmp"
        if tmp.exists():
            shutil.rmtree(tmp)
        save_state(tmp, {"model": model.state_dict(), "optimizer": opt.state_dict(), "scheduler": sched.state_dict(),
                         "epoch": epoch + 1, "best_val": best_val, "bad_epochs": bad_epochs, "history": history,
                         "train_time": train_time, "rng": torch.get_rng_state(),
                         "total_steps": steps_per_epoch * cfg.epochs})
        _replace_dir(tmp, last_dir)
        # history.csv after the resume state: the file never lists an epoch that --resume would train again
        _write_history(out, history)
    else:
        stopped_early = bad_epochs >= cfg.patience and len(history) < cfg.epochs

    distributed.barrier(ddp)
    if not ddp.main:
        return {}
    return finalize(out, splits, cfg, train_time, stopped_early, device)


def _write_shard(out: Path, ddp: distributed.Context, epoch: int, indices: torch.Tensor) -> None:
    """Which training images this rank took in its first epoch: lets anyone check the shards are disjoint."""
    d = out / "ddp"
    d.mkdir(exist_ok=True)
    np.save(d / f"rank{ddp.rank}_epoch{epoch + 1}.npy", indices.cpu().numpy().astype(np.int64))


def finalize(out: Path, splits: Splits, cfg: TrainConfig, train_time: float, stopped_early: bool,
             device: torch.device) -> dict:
    """Reload the best weights, calibrate on validation, score the test split, write config and model card."""
    from ..analysis.card import write_model_card
    from ..models.checkpoint import load_model

    model_dir = out / "model"
    model, config = load_model(model_dir, map_location=str(device))
    val_logits = score_logits(model, splits.val.images, batch_size=1024, device=device, amp=cfg.amp)
    temperature = fit_temperature(val_logits, splits.val.labels)
    val_probs = probabilities(val_logits, temperature)
    thr = choose_threshold(val_probs, splits.val.labels, cfg.max_fpr)
    config.update({"temperature": temperature, "threshold": thr["threshold"], "threshold_rule": thr,
                   "uncertain_band": cfg.uncertain_band, "train_time_s": round(train_time, 1), "stopped_early": stopped_early,
                   "val_metrics": _short(compute_metrics(splits.val.labels, val_probs, thr["threshold"], cfg.uncertain_band))})
    if splits.test is not None and len(splits.test):
        test_probs = probabilities(score_logits(model, splits.test.images, 1024, device, cfg.amp), temperature)
        m = compute_metrics(splits.test.labels, test_probs, thr["threshold"], cfg.uncertain_band)
        m05 = compute_metrics(splits.test.labels, test_probs, 0.5)
        config["test_metrics"] = {**_short(m), "accuracy_at_0.5": m05["accuracy"]}
    save_model(model, model_dir, config)
    save_train_digests(model_dir, np.concatenate([splits.train.digests, splits.val.digests]))
    write_model_card(model_dir, config)
    return config


def _short(m: dict) -> dict:
    keep = ("n", "n_real", "n_ai", "threshold", "accuracy", "precision", "recall", "f1", "macro_f1", "roc_auc",
            "average_precision", "log_loss", "ece", "confusion_matrix", "uncertain_band", "uncertain_range", "coverage",
            "confident_accuracy", "confidently_wrong")
    return {k: m[k] for k in keep if k in m}

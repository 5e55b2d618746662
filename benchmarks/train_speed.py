"""Training speed on CIFAKE: SynthCheck's fast path vs a plain PyTorch pipeline, same network, same run.

  fast   `synthcheck.training.train.train`: decoded uint8 data resident on the device (decoded once, cached),
         batched augmentation on the device, channels-last + bf16 autocast on CUDA (bf16 on CPU per
         config), optional torch.compile.
  plain  the textbook pipeline: torchvision ImageFolder over the extracted JPEGs + DataLoader
         (num_workers = cores, pin_memory on CUDA) + RandomHorizontalFlip/RandomCrop(pad 2) + the
         same network, fp32, no cache, same optimizer and schedule.

Both are scored on the CIFAKE test split with training-identical files excluded (n = 19,622), by the
same uint8 scoring path. Training time excludes evaluation and, for the fast path, decoding (which
is reported on its own row: first decode of the archive, then the cached load).

One command for the GPU goal (>= 98.0% in <= 10 s on one H100, median of 3 seeds):
    python benchmarks/train_speed.py --config configs/speedrun.toml --seeds 0,1,2
CPU epoch time of the default model, fast vs plain (one epoch each, full train split):
    python benchmarks/train_speed.py --config configs/default.toml --epochs 1 --seeds 0
Smoke test anywhere:
    python benchmarks/train_speed.py --config configs/default.toml --epochs 1 --limit-train 2000 --seeds 0

Prints a table last; writes JSON to benchmarks/results/train_speed_<device>.json.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tarfile
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))
from report import RESULTS, finish  # noqa: E402
SHARED = ROOT.parent / "shared" / "data" / "cifake"
LOCAL = ROOT / "data"  # where a GPU machine gets the archives (git-ignored, sent with `carry`)


def archive(name: str) -> Path:
    for d in (SHARED, LOCAL):
        if (d / name).exists():
            return d / name
    sys.exit(f"{name} not found in {SHARED} or {LOCAL}")


def extracted(arch: Path, dest: Path) -> Path:
    if not any(dest.rglob("*.jpg")):
        dest.mkdir(parents=True, exist_ok=True)
        with tarfile.open(arch) as t:
            t.extractall(dest, filter="data")
    return next(p.parent.parent for p in dest.rglob("*.jpg"))  # .../train with REAL/FAKE below


def accuracy(model, test, device) -> float:
    from synthcheck.inference.scoring import score_logits

    logits = score_logits(model, test.images, 1024, device)
    return float(((logits > 0) == (test.labels > 0.5)).mean())


def run_fast(cfg, splits, seed: int, out: Path) -> dict:
    from synthcheck.models.checkpoint import load_model
    from synthcheck.training.train import train

    cfg.seed = seed
    res = train([], out, cfg, splits=splits, progress=False)
    model, _ = load_model(out / "model", map_location=cfg.device)
    return {"train_s": res["train_time_s"], "model": model}


def run_plain(cfg, folder: Path, seed: int, device: torch.device, limit: int | None) -> tuple[torch.nn.Module, float]:
    from torchvision import datasets, transforms

    from synthcheck.data.folders import LABEL_DIRS
    from synthcheck.models.registry import build_model
    from synthcheck.training.train import _make_optimizer, _make_schedule, seed_everything

    seed_everything(seed)
    tf = transforms.Compose([transforms.RandomHorizontalFlip(), transforms.RandomCrop(32, padding=2,
                                                                                      padding_mode="reflect"),
                             transforms.ToTensor()])
    ds = datasets.ImageFolder(str(folder), transform=tf)
    ds.target_transform = lambda t: float(LABEL_DIRS[ds.classes[t].lower()])  # the project's label layouts
    if limit:
        rng = np.random.default_rng(seed)
        ds.samples = [ds.samples[i] for i in rng.permutation(len(ds.samples))[:limit]]
    dl = torch.utils.data.DataLoader(ds, batch_size=cfg.batch_size, shuffle=True, drop_last=True,
                                     num_workers=os.cpu_count() or 1, pin_memory=device.type == "cuda",
                                     persistent_workers=True)
    model, _ = build_model(cfg.model)
    model.to(device)
    opt = _make_optimizer(model, cfg)
    sched = _make_schedule(opt, cfg, len(dl) * cfg.epochs)
    model.train()
    t0 = time.perf_counter()
    for _ in range(cfg.epochs):
        for x, y in dl:
            x, y = x.to(device, non_blocking=True), y.float().to(device, non_blocking=True)
            loss = torch.nn.functional.binary_cross_entropy_with_logits(model(x), y)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
    if device.type == "cuda":
        torch.cuda.synchronize()
    return model.eval(), time.perf_counter() - t0


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--config", type=Path, default=ROOT / "configs" / "speedrun.toml")
    ap.add_argument("--seeds", default="0,1,2")
    ap.add_argument("--epochs", type=int, default=None)
    ap.add_argument("--limit-train", type=int, default=None)
    ap.add_argument("--device", default="auto")
    ap.add_argument("--skip-plain", action="store_true")
    ap.add_argument("--out", type=Path, default=None)
    args = ap.parse_args()

    import tomllib

    from synthcheck.data.folders import load_imageset
    from synthcheck.data.preprocess import PreprocessSpec
    from synthcheck.inference.scoring import pick_device
    from synthcheck.training.config import TrainConfig
    from synthcheck.training.train import load_splits

    cfg = TrainConfig.from_dict(tomllib.loads(args.config.read_text()))
    if args.epochs:
        cfg.epochs = args.epochs
    cfg.limit_train = args.limit_train
    device = pick_device(args.device)
    cfg.device = str(device)
    if device.type == "cpu":
        torch.set_num_threads(os.cpu_count() or 1)
    train_arch, test_arch = archive("cifake_train_jpg.tar.gz"), archive("cifake_test_jpg.tar.gz")

    rows = []
    # decoding, reported apart: a cold decode into a private cache, then the cached load used below
    spec = PreprocessSpec(cfg.image_size, cfg.resize_policy)
    with tempfile.TemporaryDirectory() as cold:
        os.environ["SYNTHCHECK_CACHE"] = cold
        t0 = time.perf_counter()
        load_imageset(train_arch, spec, progress=False)
        rows.append({"mode": "decode (cold, train archive)", "seed": "-", "seconds": round(time.perf_counter() - t0, 2)})
    os.environ.pop("SYNTHCHECK_CACHE")
    t0 = time.perf_counter()
    splits = load_splits([train_arch], cfg, [test_arch], progress=False)
    rows.append({"mode": "load cached tensors (train+val+test)", "seed": "-", "seconds": round(time.perf_counter() - t0, 2)})
    test = splits.test

    seeds = [int(s) for s in args.seeds.split(",")]
    with tempfile.TemporaryDirectory() as tmp:
        for seed in seeds:
            res = run_fast(cfg, splits, seed, Path(tmp) / f"fast{seed}")
            acc = accuracy(res["model"], test, device)
            rows.append({"mode": "fast", "seed": seed, "seconds": res["train_s"], "test_acc": round(acc, 4),
                         "img_s": round(len(splits.train) * cfg.epochs / res["train_s"], 1)})
            print(rows[-1], file=sys.stderr)
        if not args.skip_plain:
            folder = extracted(train_arch, ROOT / "benchmarks" / ".data" / "cifake_train")
            for seed in seeds:
                model, secs = run_plain(cfg, folder, seed, device, args.limit_train)
                acc = accuracy(model, test, device)
                n = args.limit_train or len(splits.train) + len(splits.val)
                rows.append({"mode": "plain", "seed": seed, "seconds": round(secs, 2), "test_acc": round(acc, 4),
                             "img_s": round(n * cfg.epochs / secs, 1)})
                print(rows[-1], file=sys.stderr)

    gpu = torch.cuda.get_device_name(device) if device.type == "cuda" else None
    out = args.out or RESULTS / f"train_speed_{device.type}.json"
    finish(out, rows, [("mode", "mode", 40), ("seed", "seed", 4), ("seconds", "train s", 9), ("img_s", "img/s", 9),
                       ("test_acc", "test acc", 9)], gpu=gpu, torch=torch.__version__,
           config=os.path.relpath(args.config.resolve(), ROOT), epochs=cfg.epochs, train_images=len(splits.train),
           test_images=len(test), note="plain trains on the whole extracted train folder (train+val, duplicates "
                                       "included); fast on the de-duplicated train split")
    for mode in ("fast", "plain"):
        rs = [r for r in rows if r["mode"] == mode]
        if rs:
            print(f"{mode} median: {statistics.median(r['seconds'] for r in rs):.2f} s, "
                  f"test acc {statistics.median(r['test_acc'] for r in rs):.4f}")


if __name__ == "__main__":
    main()

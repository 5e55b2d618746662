"""End-to-end `synthcheck predict` throughput on full-size photos (512 px and 1024 px JPEGs), against the
decode-only floor and a plain PyTorch eager fp32 pipeline of the same model, all in one run; where the time
goes, stage by stage; and whether the fast path keeps the fp32 verdicts.

    python benchmarks/photo_throughput.py                  # 800 x 512 px + the same 800 at 1024 px
    python benchmarks/photo_throughput.py --limit 200 --repeats 1   # quick look

Files: the DiffusionDB vs COCO/ImageNet set (400 AI + 400 real, 512 x 512 JPEGs) from ../shared/data/ood-dev,
extracted once; the 1024 px set is the same images upscaled 2x (Lanczos) and re-encoded at JPEG q90, a
stand-in for large photos (no native 1024 px set exists here), so its accuracy column says nothing about
accuracy on real large photos, only whether the fast path agrees with fp32.

Rows per size:
  floor            read + decode + tiles on the same thread pool as predict (no model, no metadata, no output)
  plain            the usual script: PIL decode + the same 4x4 tiles + DataLoader(num_workers=cores) + the
                   same model (batch norm not folded) in eager fp32, writing JSON lines
  predict ...      the real command, `synthcheck predict DIR --out results.jsonl [flags]`, launch to exit
Accuracy from each run's own output: ROC-AUC on all files (labels from the ai/real folders; the photo model
trained on part of this set, so this is not a held-out figure, only a like-for-like comparison between rows)
and the share of files whose verdict matches the fp32 run. Stages: in-process, one thread pool, seconds per
image for read, decode, metadata, tiles, model (fp32 and the default precision), attribution and verdicts.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tarfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from report import cpu_name

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
ARCHIVE = ROOT.parent / "shared" / "data" / "ood-dev" / "diffusiondb-vs-coco-imagenet.tar"
DATA = ROOT / "benchmarks" / ".data"
SYNTHCHECK = [sys.executable, "-m", "synthcheck.cli"]


def folder_512() -> Path:
    dest = DATA / "photo_512"
    if not any(dest.rglob("*.jpg")):
        dest.mkdir(parents=True, exist_ok=True)
        with tarfile.open(ARCHIVE) as t:
            t.extractall(dest, filter="data")
    return dest


def folder_1024(src: Path) -> Path:
    from PIL import Image

    dest = DATA / "photo_1024"
    if not any(dest.rglob("*.jpg")):
        for p in sorted(src.rglob("*.jpg")):
            q = dest / p.relative_to(src)
            q.parent.mkdir(parents=True, exist_ok=True)
            im = Image.open(p).convert("RGB")
            im.resize((im.width * 2, im.height * 2), Image.LANCZOS).save(q, quality=90)
    return dest


def list_files(folder: Path, limit: int | None) -> list[Path]:
    files = sorted(p for p in folder.rglob("*.jpg"))
    if limit:  # both classes
        ai = [p for p in files if p.parent.name == "ai"][: limit // 2]
        real = [p for p in files if p.parent.name == "real"][: limit - len(ai)]
        files = ai + real
    return files


def floor(files: list[Path], workers: int) -> float:
    """Seconds to read, decode and tile every file on `workers` threads, nothing else (predict_throughput's)."""
    from predict_throughput import floor as decode_floor  # benchmarks/ is on sys.path when this script runs

    return decode_floor(files, workers, model="photo", chunk=16)


class TileSet:
    """PIL decode + the photo model's 4x4 native tiles (the shared `tile_grid`), for a plain DataLoader loop."""

    def __init__(self, files, size, n):
        self.files, self.size, self.n = files, size, n

    def __len__(self):
        return len(self.files)

    def __getitem__(self, i):
        import torch
        from PIL import Image

        from synthcheck.data.preprocess import tile_grid

        a = np.asarray(Image.open(self.files[i]).convert("RGB"))
        return torch.from_numpy(tile_grid(a, self.size, self.n)).permute(0, 3, 1, 2)


def plain_pipeline(files: list[str], out: Path):
    import torch

    from synthcheck.models.bundled import resolve_model
    from synthcheck.models.checkpoint import load_model

    model, config = load_model(resolve_model("photo"), map_location="cpu")
    model.eval()
    spec = config["preprocess"]
    dl = torch.utils.data.DataLoader(TileSet(files, spec["image_size"], spec["tiles"]), batch_size=8,
                                     num_workers=os.cpu_count() or 1)
    i = 0
    with open(out, "w") as fh, torch.inference_mode():
        for x in dl:
            n, t = x.shape[:2]
            logits = model(x.flatten(0, 1).float() / 255.0).view(n, t).mean(1)
            z = (logits - config.get("logit_shift", 0.0)) / config.get("temperature", 1.0)
            for p in torch.sigmoid(z).tolist():
                fh.write(json.dumps({"source": files[i], "prob_ai": p}) + "\n")
                i += 1


def stages(files: list[Path]) -> dict:
    """Milliseconds per image in each stage, in-process, single-threaded decode, batched model calls."""
    import torch

    from synthcheck.data.preprocess import decode_image, fit
    from synthcheck.inference.detector import Detector
    from synthcheck.inference.metadata import inspect

    out = {}
    det = Detector.load("photo")
    fp32 = Detector.load("photo", backend="torch", precision="fp32")
    t = time.perf_counter()
    blobs = [p.read_bytes() for p in files]
    out["read"] = time.perf_counter() - t
    t = time.perf_counter()
    arrs = [decode_image(b, p.name) for b, p in zip(blobs, files)]
    out["decode"] = time.perf_counter() - t
    t = time.perf_counter()
    for b in blobs:
        inspect(b)
    out["metadata"] = time.perf_counter() - t
    t = time.perf_counter()
    x = np.stack([fit(a, det.spec) for a in arrs])
    out["tiles"] = time.perf_counter() - t
    fp32.logits(x[:4])
    t = time.perf_counter()
    fp32.logits(x)
    out["model PyTorch fp32"] = time.perf_counter() - t
    det.logits(x[:4])
    t = time.perf_counter()
    det.logits(x)
    out[f"model {det.backend} {det.precision} (default)"] = time.perf_counter() - t
    decoded = [{"pixels": xi, "size": a.shape[:2], "evidence": [], "data": b} for xi, a, b in zip(x, arrs, blobs)]
    t = time.perf_counter()
    probs = det.score_decoded(decoded)
    out["model + attribution features (default)"] = time.perf_counter() - t
    t = time.perf_counter()
    list(det.predictions([p.name for p in files], decoded, probs))
    out["verdicts + attribution head"] = time.perf_counter() - t
    return {k: round(v / len(files) * 1000, 2) for k, v in out.items()} | {"threads": torch.get_num_threads()}


def roc_auc_and_verdicts(results: Path) -> tuple[float, dict]:
    from sklearn.metrics import roc_auc_score

    y, p, verdicts = [], [], {}
    for line in results.read_text().splitlines():
        r = json.loads(line)
        if r.get("prob_ai") is None:
            continue
        y.append(Path(r["source"]).parent.name == "ai")
        p.append(r["prob_ai"])
        verdicts[r["source"]] = r.get("verdict")
    return float(roc_auc_score(y, p)), verdicts


def timed_run(cmd: list[str]) -> float:
    t0 = time.perf_counter()
    subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    return time.perf_counter() - t0


def bench_size(label: str, files: list[Path], repeats: int, configs: list[str], work: Path) -> list[dict]:
    n = len(files)
    for p in files:  # warm the page cache: every row reads from memory, as a repeated job would
        p.read_bytes()
    rows, cores = [], os.cpu_count() or 1
    ref_verdicts: dict | None = None

    def add(name, seconds, results=None, note=""):
        nonlocal ref_verdicts
        auc, same = None, None
        if results is not None:
            auc, verdicts = roc_auc_and_verdicts(results)
            if "fp32" in name and "plain" not in name:
                ref_verdicts = verdicts
            if ref_verdicts and any(v is not None for v in verdicts.values()):
                same = sum(verdicts.get(k) == v for k, v in ref_verdicts.items()) / len(ref_verdicts)
        rows.append({"size": label, "row": name, "images": n, "seconds": round(seconds, 3),
                     "img_s": round(n / seconds, 2), "roc_auc": None if auc is None else round(auc, 4),
                     "same_verdict_as_fp32": None if same is None else round(same, 4), "note": note})
        print(f"  {label} {name}: {seconds:.2f} s, {n / seconds:.1f} img/s"
              + (f", ROC-AUC {auc:.4f}" if auc is not None else "")
              + (f", same verdict as fp32 {same:.4f}" if same is not None else ""), file=sys.stderr)

    add("floor (read + decode + tiles)", statistics.median(floor(files, cores) for _ in range(repeats)),
        note=f"{cores} threads, in-process")
    listing = work / f"files_{label}.txt"
    listing.write_text("\n".join(map(str, files)))
    plain_out = work / f"plain_{label}.jsonl"
    add("plain PyTorch (DataLoader + eager fp32)",
        statistics.median(timed_run([sys.executable, __file__, "--plain-only", str(listing), str(plain_out)])
                          for _ in range(repeats)), plain_out, note="process launch to exit")
    for cfg in configs:  # fp32 first: the reference verdicts
        flags = [] if cfg == "default" else cfg.split()
        out = work / f"predict_{label}_{cfg.replace(' ', '_')}.jsonl"
        cmd = SYNTHCHECK + ["predict", *map(str, files), "--out", str(out), "--model", "auto", *flags]

        def once():
            out.unlink(missing_ok=True)
            return timed_run(cmd)

        add("synthcheck predict " + (cfg if cfg != "default" else "(default flags)"),
            statistics.median(once() for _ in range(repeats)), out, note="process launch to exit")
    return rows


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--limit", type=int, default=None, help="files per size (both classes)")
    ap.add_argument("--repeats", type=int, default=2, help="runs per row; the median is reported")
    ap.add_argument("--sizes", default="512,1024")
    ap.add_argument("--configs", default="--precision fp32,default",
                    help="comma-separated predict flag sets; 'default' = no flags; the fp32 one comes first")
    ap.add_argument("--plain-only", nargs=2, help=argparse.SUPPRESS)
    ap.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "photo_throughput.json")
    args = ap.parse_args()
    if args.plain_only:
        plain_pipeline(Path(args.plain_only[0]).read_text().splitlines(), Path(args.plain_only[1]))
        return
    work = Path(os.environ.get("TMPDIR", "/tmp")) / "synthcheck-photo-bench"
    work.mkdir(exist_ok=True)
    base = folder_512()
    folders = {"512": base, "1024": folder_1024(base)}
    rows, breakdown = [], {}
    for size in args.sizes.split(","):
        files = list_files(folders[size], args.limit)
        breakdown[size] = stages(files[:64])
        print(f"  {size} px stages (ms/image): {breakdown[size]}", file=sys.stderr)
        rows += bench_size(size, files, args.repeats, args.configs.split(","), work)

    import torch

    meta = {"command": "python " + " ".join([os.path.relpath(__file__, ROOT)] + sys.argv[1:]),
            "machine": f"{cpu_name()}, {os.cpu_count()} cores, "
                       f"Python {platform.python_version()}, torch {torch.__version__}",
            "date": time.strftime("%Y-%m-%d"), "repeats": args.repeats}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps({"meta": meta, "stages_ms_per_image": breakdown, "rows": rows}, indent=2))
    print(json.dumps(meta))
    for size, st in breakdown.items():
        print(f"{size} px, ms per image: " + ", ".join(f"{k} {v}" for k, v in st.items()))
    print(f"{'size':>5} {'row':<48} {'s':>7} {'img/s':>7} {'x plain':>8} {'ROC-AUC':>8} {'=fp32':>7}")
    for size in args.sizes.split(","):
        rs = [r for r in rows if r["size"] == size]
        plain = next(r for r in rs if r["row"].startswith("plain"))
        for r in rs:
            print(f"{size:>5} {r['row']:<48} {r['seconds']:>7} {r['img_s']:>7} {plain['seconds'] / r['seconds']:>8.2f} "
                  f"{r['roc_auc'] if r['roc_auc'] is not None else '-':>8} "
                  f"{r['same_verdict_as_fp32'] if r['same_verdict_as_fp32'] is not None else '-':>7}")


if __name__ == "__main__":
    main()

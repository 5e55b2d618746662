"""End-to-end `synthcheck predict` throughput on the CIFAKE test folder (20,000 JPEGs), against the
decode-only floor and a plain PyTorch pipeline, all in one run.

    python benchmarks/predict_throughput.py                  # extracts the test archive once, then measures
    python benchmarks/predict_throughput.py --limit 2000 --repeats 1   # quick look

Rows:
  floor            read + decode + fit to 32x32 on the same thread pool as predict (no model, no output)
  plain            torchvision ImageFolder + DataLoader(num_workers=cores) + the same model in fp32, writing JSON lines
  predict ...      the real command, `synthcheck predict DIR --out results.jsonl [...]`, timed from launch to exit
Every command row includes interpreter start-up and imports (measured alone in the `startup` row).
Accuracy is computed from each run's own output (labels from the REAL/FAKE folders, files identical
to training files excluded, as everywhere in this project). Prints a table last; writes JSON.
"""

from __future__ import annotations

import argparse
import hashlib
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

ROOT = Path(__file__).resolve().parents[1]
ARCHIVE = ROOT.parent / "shared" / "data" / "cifake" / "cifake_test_jpg.tar.gz"
DATA = ROOT / "benchmarks" / ".data" / "cifake_test"
SYNTHCHECK = [sys.executable, "-m", "synthcheck.cli"]


def ensure_folder(archive: Path, dest: Path) -> Path:
    if not any(dest.rglob("*.jpg")):
        dest.mkdir(parents=True, exist_ok=True)
        with tarfile.open(archive) as t:
            t.extractall(dest, filter="data")
    return dest


def list_files(folder: Path, limit: int | None) -> list[Path]:
    files = sorted(p for p in folder.rglob("*") if p.suffix.lower() in (".jpg", ".jpeg", ".png"))
    if limit:  # stratified: both classes
        real = [p for p in files if p.parent.name.upper() == "REAL"][: limit // 2]
        fake = [p for p in files if p.parent.name.upper() == "FAKE"][: limit - len(real)]
        files = real + fake
    return files


def floor(files: list[Path], workers: int, model: str = "default", chunk: int = 64) -> float:
    """Seconds to read and decode every file to `model`'s input, on `workers` threads, nothing else."""
    from synthcheck.data.preprocess import load_image
    from synthcheck.inference.detector import Detector

    spec = Detector.load(model).spec

    def work(part):
        return [load_image(p.read_bytes(), spec, name=p.name) for p in part]

    chunks = [files[i:i + chunk] for i in range(0, len(files), chunk)]
    t0 = time.perf_counter()
    with ThreadPoolExecutor(workers) as pool:
        for _ in pool.map(work, chunks):
            pass
    return time.perf_counter() - t0


def plain_pipeline(folder: Path, out: Path, limit: int | None):
    """The usual PyTorch inference script: ImageFolder + DataLoader + model in fp32, JSON lines out."""
    import torch
    from torchvision import datasets, transforms

    from synthcheck.inference.detector import Detector

    det = Detector.load("default")
    tf = transforms.Compose([transforms.Resize((32, 32)), transforms.PILToTensor()])
    ds = datasets.ImageFolder(str(folder / "test"), transform=tf)
    if limit:
        keep = set(map(str, list_files(folder, limit)))
        ds.samples = [s for s in ds.samples if s[0] in keep]
    dl = torch.utils.data.DataLoader(ds, batch_size=256, num_workers=os.cpu_count() or 1)
    i = 0
    with open(out, "w") as fh, torch.inference_mode():
        for x, _ in dl:
            logits = det.model(x.float() / 255.0)
            probs = torch.sigmoid(logits / det.temperature).tolist()
            for p in probs:
                fh.write(json.dumps({"source": ds.samples[i][0], "prob_ai": p}) + "\n")
                i += 1


def train_identical(model_dir: Path) -> set[bytes]:
    from synthcheck.models.checkpoint import load_train_digests

    return load_train_digests(model_dir)


def accuracy(results: Path, threshold: float, exclude: set[bytes]) -> tuple[float, int]:
    right = n = 0
    for line in results.read_text().splitlines():
        r = json.loads(line)
        if r.get("prob_ai") is None:
            continue
        path = Path(r["source"])
        if hashlib.blake2b(path.read_bytes(), digest_size=16).digest()[:8] in exclude:
            continue
        truth = path.parent.name.upper() == "FAKE"
        right += (r["prob_ai"] >= threshold) == truth
        n += 1
    return right / max(n, 1), n


def timed_run(cmd: list[str]) -> float:
    t0 = time.perf_counter()
    subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    return time.perf_counter() - t0


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--folder", type=Path, default=DATA)
    ap.add_argument("--limit", type=int, default=None)
    ap.add_argument("--repeats", type=int, default=3, help="runs per row; the median is reported")
    ap.add_argument("--configs", default="torch-fp32,onnx-fp32,torch-bf16,default",
                    help="backend-precision[-nometa] rows, or 'default' (no flags)")
    ap.add_argument("--skip-plain", action="store_true")
    ap.add_argument("--plain-only", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "predict_throughput.json")
    args = ap.parse_args()
    work = Path(os.environ.get("TMPDIR", "/tmp")) / "synthcheck-bench"
    work.mkdir(exist_ok=True)
    if args.plain_only:
        plain_pipeline(args.folder, work / "plain.jsonl", args.limit)
        return

    folder = ensure_folder(ARCHIVE, args.folder)
    files = list_files(folder, args.limit)
    n = len(files)
    for p in files:  # warm the page cache: every row reads from memory, as a repeated job would
        p.read_bytes()
    from synthcheck.inference.detector import Detector
    from synthcheck.models.bundled import BUNDLED_DIR

    det = Detector.load("default")
    exclude = train_identical(BUNDLED_DIR / "default")
    rows = []

    def add(name, seconds, results=None, note=""):
        acc, scored = accuracy(results, det.threshold, exclude) if results else (None, None)
        rows.append({"row": name, "images": n, "seconds": round(seconds, 3), "img_s": round(n / seconds, 1),
                     "accuracy": None if acc is None else round(acc, 4), "scored_for_accuracy": scored, "note": note})
        print(f"  {name}: {seconds:.2f} s, {n / seconds:.0f} img/s" + (f", accuracy {acc:.4f}" if acc else ""),
              file=sys.stderr)

    cores = os.cpu_count() or 1
    add("floor (read + decode)", statistics.median(floor(files, cores) for _ in range(args.repeats)),
        note=f"{cores} threads, in-process")
    startup = statistics.median(timed_run(SYNTHCHECK + ["predict", str(files[0]), "--json"]) for _ in range(args.repeats))
    rows.append({"row": "startup (predict on 1 file)", "images": 1, "seconds": round(startup, 3), "img_s": None,
                 "accuracy": None, "scored_for_accuracy": None, "note": "interpreter + imports + model load"})
    # the whole folder, as a user would; for a subset, the files themselves
    target = list(map(str, files)) if args.limit else [str(folder)]
    if not args.skip_plain:
        cmd = [sys.executable, __file__, "--plain-only", "--folder", str(folder)] + (
            ["--limit", str(args.limit)] if args.limit else [])
        add("plain PyTorch (ImageFolder + DataLoader, fp32)",
            statistics.median(timed_run(cmd) for _ in range(args.repeats)), work / "plain.jsonl")
    for cfg in args.configs.split(","):
        out = work / f"{cfg}.jsonl"
        if cfg == "default":  # what a user gets without flags (backend and precision "auto")
            cmd, label = SYNTHCHECK + ["predict", *target, "--out", str(out)], "synthcheck predict (default flags)"
        else:
            backend, precision, *rest = cfg.split("-")
            cmd = SYNTHCHECK + ["predict", *target, "--out", str(out), "--backend", backend, "--precision", precision]
            if "nometa" in rest:
                cmd.append("--no-metadata")
            label = f"synthcheck predict --backend {backend} --precision {precision}" + (" --no-metadata" if rest else "")

        def once():
            out.unlink(missing_ok=True)
            return timed_run(cmd)

        add(label, statistics.median(once() for _ in range(args.repeats)), out)

    meta = {"command": "python " + " ".join([os.path.relpath(__file__, ROOT)] + sys.argv[1:]),
            "machine": f"{cpu_name()}, {cores} cores, {platform.python_version()}",
            "date": time.strftime("%Y-%m-%d"), "images": n, "repeats": args.repeats}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps({"meta": meta, "rows": rows}, indent=2))
    print(json.dumps(meta))
    print(f"{'row':<62} {'s':>7} {'img/s':>8} {'x floor':>8} {'accuracy':>9}")
    fl = rows[0]["seconds"]
    for r in rows:
        ratio = f"{fl / r['seconds']:.2f}" if r["img_s"] else "-"
        print(f"{r['row']:<62} {r['seconds']:>7} {r['img_s'] or '-':>8} {ratio:>8} "
              f"{r['accuracy'] if r['accuracy'] is not None else '-':>9}")


if __name__ == "__main__":
    main()

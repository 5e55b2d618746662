"""Aligned training pairs: every real photo beside its own round trip through a latent-diffusion autoencoder.

The two images of a pair share content, framing and (for JPEG originals, saved with the original's
quantisation tables and chroma subsampling) compression history; what differs is the decoder's pixel
traces, which most current generators leave. So a newsroom can make training data for the photo
detector from its own archive of real photos, with no generated image to collect (Rajan et al., ICLR 2025).

Output layout (what `synthcheck train` reads): `OUT/real/<name>` (a hard link or copy of the original),
`OUT/fake/<name>` (the reconstruction), and `OUT/manifest.csv` naming for each file its group, its twin's
content digest, the autoencoder and the original.
"""

from __future__ import annotations

import csv
import io
import logging
import os
import re
import tarfile
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

import numpy as np

log = logging.getLogger("synthcheck")

MANIFEST = "manifest.csv"
FIELDS = ["path", "label", "group", "twin", "autoencoder", "original", "width", "height", "format", "psnr_db"]


@dataclass
class Original:
    name: str      # where it came from (path, or archive:member), for messages and the manifest
    data: bytes
    short: str = ""  # the source's own name + the path inside it, for output file names


def _is_image_name(name: str) -> bool:
    from .folders import IMAGE_EXTENSIONS

    return Path(name).suffix.lower() in IMAGE_EXTENSIONS


def iter_originals(sources: list[str | Path], ignored: dict | None = None) -> Iterator[Original]:
    """Real photos from files, folders (recursive) and tar archives, streamed one at a time.

    A folder or archive laid out for training (real/fake label folders) gives its real images only; a folder
    that is itself a label folder (`my_photos/real`) counts as one. `ignored` (if given) counts what was left
    out and why, so that a run that finds nothing can say so.
    """
    from .folders import LABEL_DIRS, _parse_path

    def skip(labelled: bool, parsed, name: str) -> bool:
        reason = ("not in a real-photo folder of a labelled layout" if labelled and (parsed is None or parsed[0] != 0)
                  else "not an image file name" if not labelled and not _is_image_name(name) else None)
        if reason and ignored is not None:
            ignored[reason] = ignored.get(reason, 0) + 1
        return reason is not None

    for src in sources:
        src = Path(src)
        if src.is_file() and not tarfile.is_tarfile(src):
            yield Original(str(src), src.read_bytes(), f"{src.parent.name or 'photos'}/{src.name}")
            continue
        if src.is_dir():
            # paths from the folder's own name on, so that the folder itself may be the label folder
            entries = [(f"{src.resolve().name}/{p.relative_to(src).as_posix()}", p)
                       for p in sorted(src.rglob("*")) if p.is_file()]
            labelled = any(p.parent.name.lower() in LABEL_DIRS for _, p in entries)
            for rel, p in entries:
                if skip(labelled, _parse_path(rel), rel):
                    continue
                try:
                    data = p.read_bytes()
                except OSError:
                    data = b""
                yield Original(str(p), data, rel)
            continue
        if not src.exists():
            raise FileNotFoundError(f"{src}: no such file or folder")
        with tarfile.open(src, "r:*") as tar:
            members = [m for m in tar if m.isfile()]
            labelled = any(Path(m.name).parent.name.lower() in LABEL_DIRS for m in members)
            for m in members:
                if skip(labelled, _parse_path(m.name), m.name):
                    continue
                f = tar.extractfile(m)
                yield Original(f"{src}:{m.name}", f.read() if f else b"", f"{Path(src.name).stem}/{m.name}")


def output_name(original: str) -> str:
    """A flat, safe, unique-enough file stem for an original ('photos/2024/a b.jpg' -> 'photos_2024_a_b')."""
    stem = re.sub(r"\.[A-Za-z0-9]{2,5}$", "", original.replace(":", "/"))
    stem = re.sub(r"[^A-Za-z0-9._-]+", "_", stem).strip("._")
    return stem[-150:] or "image"


# --- the worker: one process per core, one thread each (two 1-thread processes beat one 2-thread one here) ---

_MODEL = None


def _init_worker(family: str, weights_dir: str | None, bf16: bool, threads: int) -> None:
    import torch

    from .autoencoders import load_autoencoder

    global _MODEL
    torch.set_num_threads(threads)
    model = load_autoencoder(family, weights_dir).to(memory_format=torch.channels_last)
    _MODEL = (model.bfloat16() if bf16 else model, bf16)


def reconstruct(model, rgb: np.ndarray, bf16: bool = False, tile: int = 1024, margin: int = 64) -> np.ndarray:
    """HxWx3 uint8 -> its round trip, same size. Sides are reflect-padded to multiples of 8; images larger
    than `tile` go through in overlapping tiles (each keeps only its centre) so memory stays bounded."""
    import torch
    import torch.nn.functional as F

    h, w = rgb.shape[:2]
    x = torch.from_numpy(np.array(rgb)).permute(2, 0, 1)[None].float() / 255  # np.array: a writable copy
    dtype = torch.bfloat16 if bf16 else torch.float32

    def run(part: torch.Tensor) -> torch.Tensor:
        ph, pw = part.shape[-2:]
        pad_h, pad_w = (-ph) % 8, (-pw) % 8
        if pad_h or pad_w:
            part = F.pad(part, (0, pad_w, 0, pad_h), mode="reflect" if min(ph, pw) > 8 else "replicate")
        with torch.no_grad():
            y = model(part.to(dtype).contiguous(memory_format=torch.channels_last)).float().clamp(0, 1)
        return y[..., :ph, :pw]

    if max(h, w) <= tile:
        y = run(x)
    else:
        y = torch.empty_like(x)
        step = tile - 2 * margin
        for top in range(0, h, step):
            for left in range(0, w, step):
                t0, l0 = max(0, top - margin), max(0, left - margin)
                t1, l1 = min(h, top + step + margin), min(w, left + step + margin)
                out = run(x[..., t0:t1, l0:l1])
                bh, bw = min(step, h - top), min(step, w - left)
                y[..., top:top + bh, left:left + bw] = out[..., top - t0:top - t0 + bh, left - l0:left - l0 + bw]
    return (y[0].permute(1, 2, 0).numpy() * 255).round().clip(0, 255).astype(np.uint8)


def encode_like(original: bytes, rgb: np.ndarray) -> tuple[bytes, str]:
    """Save a reconstruction the way its original was saved: a JPEG with the original's quantisation tables
    and chroma subsampling (and grey if it was grey), anything else as lossless PNG. -> (bytes, extension)."""
    from PIL import Image, JpegImagePlugin

    src = Image.open(io.BytesIO(original))
    img = Image.fromarray(rgb)
    buf = io.BytesIO()
    if src.format in ("JPEG", "MPO"):
        tables = src.quantization
        if src.mode == "L":
            img = img.convert("L")
        kw = {"qtables": [tables[k] for k in sorted(tables)]}
        sampling = JpegImagePlugin.get_sampling(src)
        if sampling != -1 and img.mode != "L":
            kw["subsampling"] = sampling
        img.save(buf, "JPEG", **kw)
        return buf.getvalue(), ".jpg"
    img.save(buf, "PNG")
    return buf.getvalue(), ".png"


def _work(item: tuple[str, bytes]) -> dict:
    from .preprocess import ImageError, decode_image

    name, data = item
    try:
        rgb = decode_image(data, name)
        model, bf16 = _MODEL
        rec = reconstruct(model, rgb, bf16)
        out, ext = encode_like(data, rec)
        mse = float(np.mean((rgb.astype(np.float64) - rec) ** 2))
        return {"name": name, "data": out, "ext": ext, "height": rgb.shape[0], "width": rgb.shape[1],
                "psnr_db": round(10 * np.log10(255 ** 2 / max(mse, 1e-10)), 2)}
    except ImageError as e:
        return {"name": name, "error": e.problem}
    except Exception as e:  # one bad file never stops the run
        return {"name": name, "error": f"{type(e).__name__}: {e}"}


def _done(out: Path) -> set[str]:
    path = out / MANIFEST
    if not path.exists():
        return set()
    with open(path, newline="") as f:
        return {r["original"] for r in csv.DictReader(f) if r["label"] == "ai"}


def _atomic_write(path: Path, data: bytes) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_bytes(data)
    os.replace(tmp, path)


def _place_original(data: bytes, src_name: str, dest: Path) -> None:
    src = Path(src_name)
    if src.is_file():
        try:
            if dest.exists():
                dest.unlink()
            os.link(src, dest)
            return
        except OSError:
            pass
    _atomic_write(dest, data)


def make_pairs(sources: list[str | Path], out: str | Path, family: str = "taef2", weights_dir: str | Path | None = None,
               workers: int | None = None, bf16: bool = True, copy_originals: bool = True, progress: bool = True,
               limit: int | None = None) -> dict:
    """Write aligned pairs for every real image in `sources`; resumable (originals already in the manifest
    are skipped), flat memory (a bounded number of images in flight), one process per core.

    Returns a summary: written, skipped (already done), failed [(name, problem)], ignored {why: files}, seconds.
    """
    import time

    from tqdm.auto import tqdm

    from .autoencoders import find_weights
    from .store import digest

    find_weights(family, weights_dir)  # fail now, in one line, if the weights are missing
    for src in sources:
        if not Path(src).exists():
            raise FileNotFoundError(f"{src}: no such file or folder")
    out = Path(out)
    (out / "fake").mkdir(parents=True, exist_ok=True)
    if copy_originals:
        (out / "real").mkdir(parents=True, exist_ok=True)
    done = _done(out)
    workers = workers or os.cpu_count() or 1
    new_manifest = not (out / MANIFEST).exists()
    manifest = open(out / MANIFEST, "a", newline="")
    writer = csv.DictWriter(manifest, fieldnames=FIELDS)
    if new_manifest:
        writer.writeheader()
    summary = {"written": 0, "skipped": 0, "failed": [], "ignored": {}, "autoencoder": family, "out": str(out)}
    used: set[str] = set()
    t0 = time.perf_counter()
    bar = tqdm(desc=f"pairs ({family})", unit="img", disable=not progress, mininterval=0.5)

    def todo() -> Iterator[Original]:
        n = 0
        for orig in iter_originals(sources, summary["ignored"]):
            if limit is not None and n >= limit:
                return
            n += 1
            if orig.name in done:
                summary["skipped"] += 1
                bar.update()
                continue
            if not orig.data:
                summary["failed"].append((orig.name, "empty or unreadable file"))
                bar.update()
                continue
            yield orig

    originals: dict[str, Original] = {}

    def feed() -> Iterator[tuple[str, bytes]]:
        for orig in todo():
            originals[orig.name] = orig
            yield orig.name, orig.data

    try:
        with ProcessPoolExecutor(workers, initializer=_init_worker,
                                 initargs=(family, str(weights_dir) if weights_dir else None, bf16, 1)) as pool:
            for res in _bounded_map(pool, _work, feed(), 2 * workers):
                orig = originals.pop(res["name"])
                data = orig.data
                bar.update()
                if "error" in res:
                    summary["failed"].append((res["name"], res["error"]))
                    continue
                stem = output_name(orig.short or orig.name)
                while stem in used:
                    stem += "_"
                used.add(stem)
                fake = out / "fake" / f"{stem}{res['ext']}"
                _atomic_write(fake, res["data"])
                orig_fmt = Path(res["name"]).suffix.lower() or ".img"
                row = {"autoencoder": family, "original": res["name"], "width": res["width"], "height": res["height"],
                       "format": "jpeg" if res["ext"] == ".jpg" else "png", "psnr_db": res["psnr_db"]}
                if copy_originals:
                    real = out / "real" / f"{stem}{orig_fmt}"
                    _place_original(data, res["name"], real)
                    source = (orig.short or orig.name).split("/")[0].lower()
                    writer.writerow({**row, "path": f"real/{real.name}", "label": "real", "group": f"real:{source}",
                                     "twin": digest(res["data"]).hex()})
                writer.writerow({**row, "path": f"fake/{fake.name}", "label": "ai", "group": f"aligned:{family}",
                                 "twin": digest(data).hex()})
                manifest.flush()
                summary["written"] += 1
    finally:
        manifest.close()
        bar.close()
    summary["seconds"] = round(time.perf_counter() - t0, 1)
    return summary


def _bounded_map(pool, fn, items, in_flight: int):
    """pool.map in input order with at most `in_flight` items submitted: memory stays flat on any input size."""
    from collections import deque

    pending: deque = deque()
    for item in items:
        pending.append(pool.submit(fn, item))
        if len(pending) >= in_flight:
            yield pending.popleft().result()
    while pending:
        yield pending.popleft().result()

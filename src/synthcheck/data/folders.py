"""Labelled image sets: folders or tar archives -> decoded, cached uint8 tensors with labels and splits.

Layouts: `<root>/<split>/<label>/*` and `<root>/<label>/*` (any depth above them),
labels REAL|FAKE, real|fake, ai|real, 0_real|1_fake (case-insensitive), read from
a folder or straight from a `.tar`/`.tar.gz`. Each file is decoded once: the
store is keyed by file content (BLAKE2b digest) and preprocessing spec, so a
changed file is re-decoded and an unchanged one never is.
"""

from __future__ import annotations

import hashlib
import logging
import os
import tarfile
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable, Iterator

import numpy as np

from .groups import group_of, lookup, manifest_path, read_manifest
from .preprocess import ImageError, PreprocessSpec, image_info, load_image
from .store import _cache_path, _check_memory, _read_cache, _write_cache, default_cache_dir, digest

log = logging.getLogger("synthcheck")

IMAGE_EXTENSIONS = {".jpg", ".jpeg", ".png", ".webp", ".bmp", ".gif", ".tif", ".tiff"}
# label directory name (lower case) -> 0 real, 1 AI-generated
LABEL_DIRS = {"real": 0, "0_real": 0, "fake": 1, "ai": 1, "1_fake": 1}
SPLIT_DIRS = {"train": "train", "training": "train", "val": "val", "valid": "val", "validation": "val",
              "test": "test", "testing": "test"}
CLASS_NAMES = ("real", "ai")


@dataclass
class RawItem:
    name: str          # path inside the source (for messages and reports)
    label: int
    split: str | None  # train / val / test, or None when the layout has no split level
    data: bytes
    group: str = ""    # "<label>:<generator or photo source>" (see groups.py)
    twin: str = ""     # aligned pseudo-fakes: content digest (hex) of the real photo they were made from


def _parse_path(rel: str) -> tuple[int, str | None] | None:
    """Find (label, split) from a relative path, or None if it is not a labelled image."""
    parts = rel.replace("\\", "/").split("/")
    if len(parts) < 2 or Path(parts[-1]).suffix.lower() not in IMAGE_EXTENSIONS and not _maybe_image(parts[-1]):
        return None
    label_dir = parts[-2].lower()
    if label_dir not in LABEL_DIRS:
        return None
    split = None
    for p in reversed(parts[:-2]):
        if p.lower() in SPLIT_DIRS:
            split = SPLIT_DIRS[p.lower()]
            break
    return LABEL_DIRS[label_dir], split


def _maybe_image(filename: str) -> bool:
    # files with no or odd extensions inside label folders are still tried, so broken ones get reported
    return not filename.startswith(".")


def iter_source(source: str | Path) -> Iterator[RawItem]:
    """Yield every labelled file of a folder or tar archive with its bytes (one sequential pass)."""
    source = Path(source)
    if not source.exists():
        raise FileNotFoundError(f"{source}: no such file or folder")
    manifest = read_manifest(manifest_path(source))

    def item(rel: str, label: int, split: str | None, data: bytes) -> RawItem:
        row = lookup(manifest, rel)
        return RawItem(rel, label, split, data, group_of(rel, label, row, source), (row or {}).get("twin") or "")

    if source.is_dir():
        for path in sorted(source.rglob("*")):
            if not path.is_file():
                continue
            rel = path.relative_to(source).as_posix()
            parsed = _parse_path(rel)
            if parsed is None:
                continue
            try:
                data = path.read_bytes()
            except OSError as e:
                log.warning("%s: cannot read (%s), skipped", path, e)
                data = b""
            yield item(rel, parsed[0], parsed[1], data)
    elif tarfile.is_tarfile(source):
        with tarfile.open(source, "r:*") as tar:
            for member in tar:
                if not member.isfile():
                    continue
                parsed = _parse_path(member.name)
                if parsed is None:
                    continue
                f = tar.extractfile(member)
                yield item(member.name, parsed[0], parsed[1], f.read() if f else b"")
    else:
        raise ValueError(f"{source}: not a folder or a tar archive")


def typical_short_side(sources: Iterable[str | Path], per_source: int = 24) -> int | None:
    """Median short side of the first few images of each source, from their headers only (no decoding):
    enough to tell 32-px thumbnails from full-size photos before a recipe resizes them."""
    sides = []
    for source in sources:
        try:
            for i, item in enumerate(iter_source(source)):
                if i >= per_source:
                    break
                try:
                    info = image_info(item.data, item.name)
                    sides.append(min(info["width"], info["height"]))
                except Exception:  # unreadable files are reported by the real pass
                    continue
        except (OSError, ValueError):
            continue
    return int(np.median(sides)) if sides else None


@dataclass
class ImageSet:
    """Decoded images of one source: uint8 [N,3,S,S] ([N,T,3,S,S] when the spec tiles) plus labels, splits, names and content digests."""

    images: np.ndarray
    labels: np.ndarray
    splits: np.ndarray     # str array: train/val/test/"" (no split level)
    names: list[str]
    digests: np.ndarray    # [N,16] uint8
    sizes: np.ndarray      # [N,2] int32: decoded (height, width) before fitting
    source: str
    spec: PreprocessSpec
    skipped: list[tuple[str, str]] = field(default_factory=list)  # (name, problem)
    groups: np.ndarray | None = None  # str per image: "<label>:<generator or photo source>" (groups.py)
    twins: np.ndarray | None = None   # str per image: an aligned pseudo-fake's original (digest hex), else ""

    def __post_init__(self):
        if self.groups is None:
            self.groups = np.array([f"{CLASS_NAMES[y]}:unknown" for y in self.labels], dtype=object)
        if self.twins is None:
            self.twins = np.array([""] * len(self.labels), dtype=object)

    def __len__(self):
        return len(self.labels)

    def subset(self, idx: np.ndarray) -> "ImageSet":
        idx = np.asarray(idx)
        return ImageSet(self.images[idx], self.labels[idx], self.splits[idx], [self.names[i] for i in idx],
                        self.digests[idx], self.sizes[idx], self.source, self.spec, [], self.groups[idx], self.twins[idx])

    def split(self, name: str) -> "ImageSet":
        return self.subset(np.flatnonzero(self.splits == name))

    def has_split(self, name: str) -> bool:
        return bool((self.splits == name).any())

    def fingerprint(self) -> str:
        """Order-independent digest of the content and labels: identifies the data a model saw."""
        h = hashlib.blake2b(digest_size=12)
        order = np.lexsort(self.digests.T[::-1])
        h.update(self.digests[order].tobytes())
        h.update(self.labels[order].astype(np.int8).tobytes())
        return h.hexdigest()

    def counts(self) -> dict:
        return {CLASS_NAMES[c]: int((self.labels == c).sum()) for c in (0, 1)}


def _decode_one(args):
    data, name, spec = args
    try:
        return load_image(data, spec, name=name, return_size=True), None
    except ImageError as e:
        return None, e.problem


def _decode_many(items: list[tuple[bytes, str]], spec: PreprocessSpec, workers: int, progress: bool):
    from tqdm.auto import tqdm

    jobs = [(d, n, spec) for d, n in items]
    bar = tqdm(total=len(jobs), desc="decoding", unit="img", disable=not progress or not jobs, mininterval=0.5)
    results = []
    if workers > 1 and len(jobs) > 2000:
        chunk = max(64, len(jobs) // (workers * 16))
        with ProcessPoolExecutor(workers) as pool:
            for r in pool.map(_decode_one, jobs, chunksize=chunk):
                results.append(r)
                bar.update()
    else:
        for j in jobs:
            results.append(_decode_one(j))
            bar.update()
    bar.close()
    return results


def load_imageset(source: str | Path, spec: PreprocessSpec, cache_dir: Path | None = None, workers: int | None = None,
                  progress: bool = True, use_cache: bool = True, only: set[str] | None = None) -> ImageSet:
    """Read, decode (in parallel, cached by content) and return every labelled image of a source
    (with `only`, just the files of those names).

    Corrupt, truncated, empty and non-image files are skipped with a warning naming
    them; the count is kept in `ImageSet.skipped`.
    """
    source = Path(source)
    cache_dir = Path(cache_dir) if cache_dir else default_cache_dir()
    workers = workers or os.cpu_count() or 1
    raw = [r for r in iter_source(source) if only is None or r.name in only]
    if only is not None and not raw:
        return empty_imageset(source, spec)
    if not raw:
        raise ValueError(f"{source}: no labelled images found (expected folders named real/fake, ai/real, "
                         f"REAL/FAKE or 0_real/1_fake, optionally under train/val/test)")
    _check_memory(source, len(raw), spec)
    digests = [digest(r.data) for r in raw]
    cpath = _cache_path(cache_dir, source, spec)
    cached = _read_cache(cpath) if use_cache else {}
    todo = [i for i, d in enumerate(digests) if d not in cached]
    decoded = _decode_many([(raw[i].data, raw[i].name) for i in todo], spec, workers, progress)
    failed: dict[bytes, str] = {}
    for i, (res, problem) in zip(todo, decoded):
        if res is None:
            failed[digests[i]] = problem
        else:
            cached[digests[i]] = res
    keep, skipped = [], []
    for i, r in enumerate(raw):
        if digests[i] in cached:
            keep.append(i)
        else:
            problem = failed.get(digests[i], "could not be decoded")
            skipped.append((r.name, problem))
            log.warning("skipped %s: %s", r.name, problem)
    if not keep:
        raise ValueError(f"{source}: none of the {len(raw)} files could be decoded")
    s = spec.image_size
    per_image = (spec.n_tiles, 3, s, s) if spec.tiles > 1 else (3, s, s)
    images = np.empty((len(keep), *per_image), dtype=np.uint8)
    sizes = np.empty((len(keep), 2), dtype=np.int32)
    for j, i in enumerate(keep):
        images[j], sizes[j] = cached[digests[i]]
    dig = np.frombuffer(b"".join(digests[i] for i in keep), dtype=np.uint8).reshape(-1, 16)
    if use_cache and todo:
        uniq = {d.tobytes(): k for k, d in enumerate(dig)}
        order = np.array(list(uniq.values()))
        _write_cache(cpath, images[order], dig[order], sizes[order])
    return ImageSet(
        images=images,
        labels=np.array([raw[i].label for i in keep], dtype=np.int64),
        splits=np.array([raw[i].split or "" for i in keep]),
        names=[raw[i].name for i in keep],
        digests=dig,
        sizes=sizes,
        source=str(source),
        spec=spec,
        skipped=skipped,
        groups=np.array([raw[i].group for i in keep], dtype=object),
        twins=np.array([raw[i].twin for i in keep], dtype=object),
    )


def empty_imageset(source, spec: PreprocessSpec) -> ImageSet:
    s = spec.image_size
    shape = (0, spec.n_tiles, 3, s, s) if spec.tiles > 1 else (0, 3, s, s)
    return ImageSet(np.zeros(shape, np.uint8), np.zeros(0, np.int64), np.array([], dtype=str), [],
                    np.zeros((0, 16), np.uint8), np.zeros((0, 2), np.int32), str(source), spec, [])


def size_stats(sizes: np.ndarray) -> dict:
    """Range of training image sizes (1st-99th percentile) for the out-of-domain check."""
    short, long_ = sizes.min(1), sizes.max(1)
    aspect = long_ / np.maximum(short, 1)
    return {"short_side_p01": int(np.percentile(short, 1)), "long_side_p99": int(np.percentile(long_, 99)),
            "aspect_p99": round(float(np.percentile(aspect, 99)), 3), "median_hw": np.median(sizes, 0).astype(int).tolist()}



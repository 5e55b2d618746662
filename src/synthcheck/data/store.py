"""On disk: content digests, the decoded-image cache (keyed by file content and preprocessing spec), the
memory check before decoding a set, and atomic JSON writes."""

from __future__ import annotations

import hashlib
import json
import logging
import os
import tempfile
from pathlib import Path

import numpy as np

from .preprocess import PreprocessSpec

log = logging.getLogger("synthcheck")


def default_cache_dir() -> Path:
    return Path(os.environ.get("SYNTHCHECK_CACHE", Path.home() / ".cache" / "synthcheck"))


def digest(data: bytes) -> bytes:
    return hashlib.blake2b(data, digest_size=16).digest()


def _check_memory(source: Path, n: int, spec: PreprocessSpec) -> None:
    """Refuse, with the numbers, a set whose decoded tensors would not fit in memory (e.g. 20,000 CIFAKE images
    under a 224 px 3x3-tile model: 27 GB) instead of letting the machine swap or the process be killed."""
    need = n * spec.n_tiles * 3 * spec.image_size ** 2
    avail = _available_memory()
    if avail is None:
        return
    if need > 0.7 * avail:
        raise ValueError(f"{source}: {n:,} images at {spec.label()} {spec.image_size} px would take "
                         f"{need / 2**30:.1f} GiB decoded, more than this machine has free ({avail / 2**30:.1f} GiB); "
                         "score it in parts, or with a model made for its image size")


def _available_memory() -> int | None:
    """Bytes the kernel could give us now: MemAvailable (page cache counts as free), else free pages."""
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    try:
        return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (ValueError, OSError, AttributeError):
        return None


def _cache_path(cache_dir: Path, source: Path, spec: PreprocessSpec) -> Path:
    key = hashlib.blake2b(str(source.resolve()).encode(), digest_size=8).hexdigest()
    return cache_dir / f"{source.name}.{key}.{spec.cache_tag()}.npz"


def _read_cache(path: Path) -> dict[bytes, tuple[np.ndarray, tuple[int, int]]]:
    if not path.exists():
        return {}
    try:
        with np.load(path, allow_pickle=False) as z:
            images, digests, sizes = z["images"], z["digests"], z["sizes"]
        return {digests[i].tobytes(): (images[i], tuple(sizes[i])) for i in range(len(digests))}
    except Exception as e:  # a damaged cache is only a lost speed-up
        log.warning("ignoring unreadable cache %s (%s)", path, e)
        return {}


def _write_cache(path: Path, images: np.ndarray, digests: np.ndarray, sizes: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, suffix=".tmp.npz")
    os.close(fd)
    try:
        np.savez(tmp, images=images, digests=digests, sizes=sizes)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def save_json(path: Path, obj) -> None:
    """Atomic JSON write (temp file + rename): a kill mid-write never leaves a broken file."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=path.name, suffix=".tmp")
    with os.fdopen(fd, "w") as f:
        json.dump(obj, f, indent=2, default=_json_default)
        f.write("\n")
    os.replace(tmp, path)


def _json_default(o):
    if isinstance(o, (np.integer,)):
        return int(o)
    if isinstance(o, (np.floating,)):
        return float(o)
    if isinstance(o, np.ndarray):
        return o.tolist()
    if isinstance(o, Path):
        return str(o)
    raise TypeError(f"not JSON serialisable: {type(o)}")

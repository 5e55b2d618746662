"""Source groups: which generator made an AI image, or which camera/photo collection a real one came from.

A detector judged on images from its own training sources says little about a generator or camera it has
never seen, so every image carries a group (`"ai:gpt-4o"`, `"real:coco"`, `"aligned:taef2"`), splits are
stratified by it, and `crossval` leaves whole groups out. Groups come, in order, from a manifest CSV (a
`group` column, else a specific `generator`), from file names (`<source>__<generator>__...` as in
photo-train, `372_stylegan_fake.png` / `coco_0012.jpg` as in ood-dev), else from the data source's name.
"""

from __future__ import annotations

import csv
import re
from pathlib import Path

CLASS_NAMES = ("real", "ai")
PATH_COLUMNS = ("path", "path_in_tar", "file", "filename", "name")
# generator values that name no generator
GENERIC = {"", "unknown", "real", "real-photo", "photo", "none", "n/a", "na", "-"}
# a training-only group: aligned pseudo-fakes (`synthcheck pairs`), never a left-out test group
ALIGNED_PREFIX = "aligned:"

_LABEL_WORDS = {"real", "fake", "ai", "img", "image", "jpg", "jpeg", "png", "webp", "synthetic", "generated"}


def generator_of(name: str) -> str | None:
    """The generator or source a file name carries ('372_stylegan_fake.png' -> 'stylegan',
    'diffusion_000225.jpg' -> 'diffusion', 'coco_0012.jpg' -> 'coco'); None when it carries none."""
    base = Path(name).name
    if "__" in base:  # <source>__<generator-or-category>__<original name>
        return base.split("__")[0].lower() or None
    stem = Path(name).stem.lower()
    words = [w for w in re.split(r"[^a-z0-9]+", stem) if w.isalpha() and w not in _LABEL_WORDS and len(w) > 1]
    return "_".join(words) or None


def manifest_path(source: str | Path) -> Path | None:
    """The manifest of a data source: `manifest.csv` inside a folder, or beside an archive
    (`<archive stem>.manifest.csv` first, then `manifest.csv`)."""
    source = Path(source)
    if source.is_dir():
        cands = [source / "manifest.csv"]
    else:
        stem = source.name.split(".")[0]
        cands = [source.with_name(f"{stem}.manifest.csv"), source.with_name("manifest.csv")]
    return next((c for c in cands if c.is_file()), None)


def read_manifest(path: str | Path | None) -> dict[str, dict]:
    """Rows of a manifest CSV keyed by their path column (as the file appears inside the source)."""
    if path is None:
        return {}
    with open(path, newline="", encoding="utf-8") as f:
        reader = csv.DictReader(f)
        col = next((c for c in PATH_COLUMNS if c in (reader.fieldnames or [])), None)
        if col is None:
            raise ValueError(f"{path}: a manifest needs a path column (one of {', '.join(PATH_COLUMNS)})")
        return {_norm(r[col]): r for r in reader}


def _norm(p: str) -> str:
    return p.replace("\\", "/").lstrip("./")


def lookup(manifest: dict[str, dict], name: str) -> dict | None:
    """A file's manifest row: by its path in the source, else by its path below the source's top folder."""
    if not manifest:
        return None
    name = _norm(name)
    row = manifest.get(name)
    if row is None and "/" in name:
        row = manifest.get(name.split("/", 1)[1])
    return row


def group_of(name: str, label: int, row: dict | None = None, source: str | Path | None = None) -> str:
    """'<label>:<generator or photo source>' for one file."""
    lab = CLASS_NAMES[label]
    if row:
        g = (row.get("group") or "").strip()
        if g:
            return g if ":" in g else f"{lab}:{g}"
        gen = (row.get("generator") or "").strip().lower()
        if gen not in GENERIC:
            return f"{lab}:{gen}"
    g = generator_of(name)
    if g is None and source is not None:
        g = Path(source).name.split(".")[0].lower()
    return f"{lab}:{g or 'unknown'}"


def family_of(group: str) -> str:
    """The unit a fold leaves out: a group without its label, so a GAN's fakes and its real counterparts,
    or a photo game's AI and real images, leave together ('ai:stylegan', 'real:stylegan' -> 'stylegan')."""
    return group.split(":", 1)[1] if ":" in group else group


def is_aligned(group: str) -> bool:
    return group.startswith(ALIGNED_PREFIX)

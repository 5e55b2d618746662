"""Data recipes: which files of which public repository, at which commit, make up a training or lockbox collection.

A recipe pins every file (path and sha256 at a commit), so the corpus it builds (`analysis.corpus`) is the same on
every machine, and nothing but the recipe is committed: images stay in git-ignored folders. The schema is fixed
(issue "Training data from many public collections"), so other tools can read `configs/data/*.toml` too.
Repositories kept for independent evaluation (and known copies of them) are refused before anything is read.
"""

from __future__ import annotations

import re
import tomllib
from dataclasses import dataclass, field
from pathlib import Path

LABELS = ("ai", "real")
SPLITS = ("train", "lockbox")
LOOKS = ("photo", "illustration")
SOURCE_KEYS = ("repository", "commit", "label", "generator", "family", "collection", "split", "looks", "licence",
               "note")
_COLLECTION = re.compile(r"^[a-z0-9][a-z0-9-]*$")
_REPO = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*/[A-Za-z0-9_.-]+$")
_HEX40 = re.compile(r"^[0-9a-f]{40}$")
_HEX64 = re.compile(r"^[0-9a-f]{64}$")


@dataclass(frozen=True)
class RecipeFile:
    path: str
    sha256: str
    looks: str
    crop: tuple[int, int, int, int] | None = None  # left, top, width, height: a lossless cut from a sheet


@dataclass
class Source:
    """One collection: a repository at a commit, one label, one generator (or "real-photo"), its files."""

    repository: str
    commit: str
    label: str
    generator: str
    family: str
    collection: str
    split: str
    looks: str
    licence: str
    note: str
    files: list[RecipeFile] = field(default_factory=list)
    recipe: str = ""  # the TOML file it came from, for messages


class RecipeError(ValueError):
    """A recipe that cannot be built as written; the message names the file and the problem."""


def read_list(path: str | Path | None) -> set[str]:
    """owner/name lines of a list file (held-out repositories, known copies), lower-cased; '#' starts a comment."""
    if path is None or not Path(path).is_file():
        return set()
    out = set()
    for line in Path(path).read_text(encoding="utf-8").splitlines():
        line = line.split("#", 1)[0].strip()
        if line:
            out.add(line.lower())
    return out


def recipe_paths(paths: list[str | Path]) -> list[Path]:
    """Recipe files from files and folders (a folder gives its *.toml, sorted)."""
    out: list[Path] = []
    for p in map(Path, paths):
        if p.is_dir():
            out.extend(sorted(p.glob("*.toml")))
        elif p.is_file():
            out.append(p)
        else:
            raise RecipeError(f"{p}: no such recipe file or folder")
    if not out:
        raise RecipeError(f"no recipe (*.toml) in {', '.join(map(str, paths))}")
    return out


def _str(tab: dict, key: str, where: str) -> str:
    v = tab.get(key)
    if not isinstance(v, str) or (not v.strip() and key not in ("note",)):
        raise RecipeError(f"{where}: `{key}` must be a non-empty string")
    return v.strip()


def _source(tab: dict, where: str) -> Source:
    missing = [k for k in SOURCE_KEYS if k not in tab]
    if missing:
        raise RecipeError(f"{where}: missing key(s) {', '.join(missing)} (a [[source]] has {', '.join(SOURCE_KEYS)})")
    extra = sorted(set(tab) - set(SOURCE_KEYS) - {"files"})
    if extra:
        raise RecipeError(f"{where}: unknown key(s) {', '.join(extra)}")
    s = Source(**{k: _str(tab, k, where) for k in SOURCE_KEYS}, recipe=where.split(" ")[0])
    s.commit = s.commit.lower()
    checks = [(_REPO.match(s.repository), f"repository {s.repository!r} is not owner/name"),
              (_HEX40.match(s.commit), f"commit {s.commit!r} is not a 40-hex commit id"),
              (s.label in LABELS, f"label must be one of {LABELS}, not {s.label!r}"),
              (s.split in SPLITS, f"split must be one of {SPLITS}, not {s.split!r}"),
              (s.looks in LOOKS, f"looks must be one of {LOOKS}, not {s.looks!r}"),
              (_COLLECTION.match(s.collection), f"collection {s.collection!r}: use [a-z0-9-] only"),
              (s.label == "ai" or s.generator == "real-photo", "a real source's generator is \"real-photo\"")]
    for ok, msg in checks:
        if not ok:
            raise RecipeError(f"{where}: {msg}")
    files = tab.get("files") or []
    if not isinstance(files, list) or not files:
        raise RecipeError(f"{where}: no [[source.files]]: a recipe pins every file it uses")
    seen = set()
    for i, f in enumerate(files):
        fw = f"{where} file {i + 1}"
        if not isinstance(f, dict) or "path" not in f or "sha256" not in f:
            raise RecipeError(f"{fw}: each [[source.files]] needs `path` and `sha256`")
        bad = sorted(set(f) - {"path", "sha256", "looks", "crop"})
        if bad:
            raise RecipeError(f"{fw}: unknown key(s) {', '.join(bad)}")
        sha = str(f["sha256"]).lower()
        if not _HEX64.match(sha):
            raise RecipeError(f"{fw} ({f['path']}): sha256 must be 64 hex digits")
        looks = f.get("looks", s.looks)
        if looks not in LOOKS:
            raise RecipeError(f"{fw} ({f['path']}): looks must be one of {LOOKS}")
        crop = f.get("crop")
        if crop is not None:
            if not (isinstance(crop, list) and len(crop) == 4 and all(isinstance(c, int) for c in crop)
                    and crop[0] >= 0 and crop[1] >= 0 and crop[2] > 0 and crop[3] > 0):
                raise RecipeError(f"{fw} ({f['path']}): crop must be [left, top, width, height], whole pixels")
            crop = tuple(crop)
        key = (f["path"], crop)
        if key in seen:
            raise RecipeError(f"{fw}: {f['path']} is listed twice" + (f" with crop {list(crop)}" if crop else ""))
        seen.add(key)
        s.files.append(RecipeFile(str(f["path"]), sha, looks, crop))
    return s


def load_recipes(paths: list[str | Path], refused: set[str] = frozenset(), merge: dict | None = None) -> list[Source]:
    """Every [[source]] of the recipe files, checked: schema, one repository per collection, none refused.

    `refused`: lower-cased owner/name of repositories that must never be read (held out, or known copies).
    `merge`: a crossval config's generator -> family map; each AI source's family must agree with it."""
    sources: list[Source] = []
    for path in recipe_paths(paths):
        try:
            raw = tomllib.loads(path.read_text(encoding="utf-8"))
        except (tomllib.TOMLDecodeError, UnicodeDecodeError) as e:
            raise RecipeError(f"{path}: not valid TOML ({e})") from None
        tabs = raw.get("source")
        if not isinstance(tabs, list) or not tabs:
            raise RecipeError(f"{path}: no [[source]] table")
        for i, tab in enumerate(tabs):
            sources.append(_source(tab, f"{path} [[source]] {i + 1}"))
    for s in sources:
        if s.repository.lower() in refused:
            raise RecipeError(f"{s.recipe}: {s.repository} is kept for independent evaluation (or is a known copy "
                              "of such a repository): refused, nothing was read")
    owner: dict[str, Source] = {}
    for s in sources:
        o = owner.setdefault(s.collection, s)
        if (o.repository.lower(), o.label) != (s.repository.lower(), s.label):
            raise RecipeError(f"collection {s.collection!r} is used by {o.repository} ({o.recipe}) and "
                              f"{s.repository} ({s.recipe}): one collection, one repository and label")
    if merge:
        for s in sources:
            if s.label == "ai" and merge.get(s.generator, s.generator) != s.family:
                raise RecipeError(f"{s.recipe}: generator {s.generator!r} has family {s.family!r} here but "
                                  f"{merge.get(s.generator, s.generator)!r} in the crossval config's [data.merge]")
    return sources

"""Build a training corpus and its lockbox from recipes (`data.recipes`): files pinned in public repositories,
read from local snapshots (or cloned at the pinned commit), written as their sources saved them.

Nothing is re-encoded: a file is copied byte for byte, or, when a recipe cuts a frame out of a sheet, cropped
losslessly (PNG to PNG; JPEG with `jpegtran` at MCU-aligned offsets); anything else is skipped with the reason.
Processing never depends on the label, so the corpus carries each source's own compression history rather than
one the builder gave it. Duplicates within the corpus and against the shared packs (compared at the packs' own
crop offsets, `analysis.copies`) are dropped and reported. The lockbox is built beside the training split, never
inside it; a picture in both stays in the lockbox and leaves the training split.
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
import os
import re
import shutil
import subprocess
import tempfile
from collections import Counter, defaultdict
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

from PIL import Image

from ..data.recipes import Source, load_recipes, read_list
from ..data.store import save_json
from ..inference.jpeg_history import ijg_quality, parse_header
from .copies import Fingerprint, copies_in_packs, near_pairs, pack_crops

PACK_COLUMNS = ["path_in_tar", "label", "source_repo", "commit", "original_path", "generator", "category",
                "orig_width", "orig_height", "orig_format", "processing", "looks"]
COLUMNS = PACK_COLUMNS + ["collection", "family", "split", "sha256", "source_sha256", "crop", "exif_make",
                          "exif_model", "jpeg_quality", "jpeg_ijg_exact", "subsampling"]
MISSING_BLOB = "missing from the snapshot (snapshots drop files of 4 MiB and more)"
CLONE_TIMEOUT = 900  # seconds for one clone or fetch
_NO_PROMPT = {**os.environ, "GIT_TERMINAL_PROMPT": "0"}  # a missing repository must fail, not ask for a login
_EXT = {"JPEG": ".jpg", "PNG": ".png", "WEBP": ".webp", "GIF": ".gif", "TIFF": ".tif", "BMP": ".bmp",
        "MPO": ".jpg", "AVIF": ".avif"}


class GitRepo:
    """One repository at one commit: a bare snapshot under MIRRORS, else a clone (`git_base`/owner/name)."""

    def __init__(self, repository: str, mirrors: Path | None, cache: Path, clone: bool, git_base: str):
        self.repository, self.proc, self.cloned = repository, None, False
        owner_name = repository.replace("/", "+")
        cands = [mirrors / owner_name / "repo", mirrors / owner_name] if mirrors else []
        self.git_dir = next((c for c in cands if (c / "objects").is_dir()), None)
        self.problem = ""
        if self.git_dir is None and clone:
            self.git_dir, self.cloned = cache / owner_name, True
            if not (self.git_dir / "objects").is_dir():
                url = f"{git_base.rstrip('/')}/{repository}"
                try:
                    r = subprocess.run(["git", "clone", "--quiet", "--bare", "--filter=blob:none", url, str(self.git_dir)],
                                       capture_output=True, text=True, env=_NO_PROMPT, timeout=CLONE_TIMEOUT)
                except subprocess.TimeoutExpired:
                    r = subprocess.CompletedProcess([], 1, "", f"no answer in {CLONE_TIMEOUT} s")
                if r.returncode:
                    shutil.rmtree(self.git_dir, ignore_errors=True)
                    self.git_dir, self.problem = None, f"cannot clone {url}: {r.stderr.strip()[-200:]}"
        elif self.git_dir is None:
            where = f"under {mirrors} (expected {owner_name}/repo)" if mirrors else "(no --mirrors given)"
            self.problem = f"no snapshot of {repository} {where} and cloning is off"

    def _git(self, *args: str) -> subprocess.CompletedProcess:
        return subprocess.run(["git", "--git-dir", str(self.git_dir), *args], capture_output=True)

    def has_commit(self, commit: str) -> bool:
        if self._git("cat-file", "-e", f"{commit}^{{commit}}").returncode == 0:
            return True
        if self.cloned:  # a clone of the default branch may lack the pinned commit
            try:
                subprocess.run(["git", "--git-dir", str(self.git_dir), "fetch", "--quiet", "origin", commit],
                               capture_output=True, env=_NO_PROMPT, timeout=CLONE_TIMEOUT)
            except subprocess.TimeoutExpired:
                return False
        return self._git("cat-file", "-e", f"{commit}^{{commit}}").returncode == 0

    def blob(self, commit: str, path: str) -> bytes | None:
        """The file at commit:path, or None when the snapshot lacks it (one `cat-file --batch` for all reads)."""
        if self.proc is None:
            self.proc = subprocess.Popen(["git", "--git-dir", str(self.git_dir), "cat-file", "--batch"],
                                         stdin=subprocess.PIPE, stdout=subprocess.PIPE)
        self.proc.stdin.write(f"{commit}:{path}\n".encode())
        self.proc.stdin.flush()
        header = self.proc.stdout.readline().decode().split()
        if len(header) != 3:  # "<name> missing" (or git gone): nothing follows
            return None
        data = self.proc.stdout.read(int(header[2]))
        self.proc.stdout.read(1)  # the newline after the object
        return data if header[1] == "blob" else None  # a tree or tag was read whole, so the stream stays in step

    def close(self) -> None:
        if self.proc is not None:
            self.proc.stdin.close()
            try:  # pool workers forked after it hold a copy of its stdin, so EOF may never reach it
                self.proc.wait(timeout=2)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
            self.proc = None


def out_name(source: Source, path: str, crop, fmt: str) -> str:
    """<collection>__<generator>__<path, flattened> like the packs' names: ASCII, at most 120 characters."""
    stem = Path(path).with_suffix("").as_posix().replace("/", "-")
    safe = re.sub(r"[^A-Za-z0-9._-]+", "_", stem).strip("_.-") or "file"
    if safe != stem or crop:
        safe += "_" + hashlib.sha1(f"{path}|{crop}".encode()).hexdigest()[:8]
    prefix = f"{source.collection}__{source.generator}__"
    ext = _EXT.get(fmt, ".img")
    room = 120 - len(prefix) - len(ext)
    if len(safe) > room:
        safe = safe[:room - 9] + "_" + hashlib.sha1(path.encode()).hexdigest()[:8]
    return prefix + safe + ext


def crop_losslessly(data: bytes, fmt: str, box) -> tuple[bytes, str]:
    """(bytes of the cut, how it was cut); ValueError when it cannot be cut without re-encoding."""
    x, y, w, h = box
    img = Image.open(io.BytesIO(data))
    if x + w > img.width or y + h > img.height:
        raise ValueError(f"crop {list(box)} goes past the image ({img.width}x{img.height})")
    if fmt == "PNG":
        buf = io.BytesIO()
        img.crop((x, y, x + w, y + h)).save(buf, format="PNG", optimize=False)
        return buf.getvalue(), f"PNG lossless crop {w}x{h}+{x}+{y} (pixels copied, PNG written by Pillow)"
    if fmt in ("JPEG", "MPO"):
        head = parse_header(data)
        comps = head.components if head else []
        mcu_w = 8 * max((c[1] for c in comps), default=1)
        mcu_h = 8 * max((c[2] for c in comps), default=1)
        if x % mcu_w or y % mcu_h:
            raise ValueError(f"JPEG crop offsets {x},{y} are not multiples of its {mcu_w}x{mcu_h} MCU: not lossless")
        if shutil.which("jpegtran") is None:
            raise ValueError("jpegtran not found (Debian: libjpeg-turbo-progs): a JPEG crop needs it")
        r = subprocess.run(["jpegtran", "-copy", "all", "-crop", f"{w}x{h}+{x}+{y}"], input=data, capture_output=True)
        if r.returncode or not r.stdout:
            raise ValueError(f"jpegtran failed: {r.stderr.decode(errors='replace').strip()[:200]}")
        return r.stdout, f"jpegtran lossless crop {w}x{h}+{x}+{y} (-copy all)"
    raise ValueError(f"a {fmt} file cannot be cropped losslessly here (PNG and JPEG only)")


def file_facts(data: bytes, crops, against: bool) -> dict:
    """Format, size, EXIF make/model, JPEG quality and subsampling, the fingerprint, and pack copies (a worker)."""
    img = Image.open(io.BytesIO(data))
    img.load()
    exif = img.getexif()
    facts = {"format": img.format, "width": img.width, "height": img.height,
             "exif_make": str(exif.get(0x010F) or "").strip("\x00 "), "exif_model": str(exif.get(0x0110) or "").strip("\x00 "),
             "jpeg_quality": "", "jpeg_ijg_exact": "", "subsampling": ""}
    head = parse_header(data)
    if head is not None and head.table(0) is not None:
        q, exact = ijg_quality(head.table(0), head.table(1))
        facts.update(jpeg_quality=q, jpeg_ijg_exact=exact, subsampling=head.subsampling)
    from .copies import fingerprint

    fp = fingerprint(img)
    facts["phash"], facts["thumb"] = fp.phash, fp.thumb.round(2).tolist()
    facts["pack_copies"] = copies_in_packs(img, crops) if against else []
    return facts


_CROPS: list = []


def _init_worker(crops):
    global _CROPS
    _CROPS = crops


def _facts_job(data: bytes) -> dict:
    try:
        return file_facts(data, _CROPS, bool(_CROPS))
    except Exception as e:  # a hostile or broken file must not stop the build
        return {"error": f"{type(e).__name__}: {e}"}


def build_corpus(recipes: list[str | Path], out: str | Path, mirrors: str | Path | None = None,
                 refused_lists: tuple = (), against: list[str | Path] = (), clone: bool = True,
                 git_base: str = "https://github.com", merge: dict | None = None, workers: int | None = None,
                 progress: bool = True) -> dict:
    """Build OUT/train and OUT/lockbox ({ai,real}/ + manifest.csv) and OUT/build_report.json/.md; resumable:
    files already built (OUT/.build/state.jsonl) are not read again."""
    from tqdm.auto import tqdm

    missing = [str(p) for p in refused_lists if not Path(p).is_file()]
    if missing:
        raise FileNotFoundError(f"list of refused repositories not found: {', '.join(missing)} (a build that cannot "
                                "read its refusals does not start)")
    refused = set().union(*[read_list(p) for p in refused_lists]) if refused_lists else set()
    sources = load_recipes(recipes, refused, merge)
    out = Path(out)
    state_dir = out / ".build"
    state_dir.mkdir(parents=True, exist_ok=True)
    state = _read_state(state_dir / "state.jsonl")
    crops = pack_crops(list(against), progress=progress) if against else []
    packs_key = hashlib.sha1("|".join(f"{Path(p).resolve()}:{Path(p).stat().st_size}"
                                      for p in against).encode()).hexdigest()[:12]
    skipped: list[dict] = []
    rows: list[dict] = []
    # lockbox first: a picture in both splits stays in the lockbox
    sources = sorted(sources, key=lambda s: s.split != "lockbox")
    total = sum(len(s.files) for s in sources)
    bar = tqdm(total=total, desc="building", unit="file", disable=not progress)
    mirrors = Path(mirrors) if mirrors else None
    workers = workers or os.cpu_count() or 1
    with ProcessPoolExecutor(workers, initializer=_init_worker, initargs=(crops,)) as pool, \
            open(state_dir / "state.jsonl", "a", encoding="utf-8") as log:
        list(pool.map(abs, range(workers)))  # start every worker now, before any git process they could inherit
        for s in sources:
            repo = GitRepo(s.repository, mirrors, state_dir / "repos", clone, git_base)
            problem = repo.problem or ("" if repo.has_commit(s.commit) else f"commit {s.commit} is not in the snapshot")
            todo = []
            for f in s.files:
                # everything the row depends on: a changed recipe field or another set of packs rebuilds it
                key = "|".join(map(str, (s.split, s.collection, s.label, s.generator, s.family, f.looks,
                                         s.repository, s.commit, f.path, f.sha256, f.crop, packs_key)))
                if key in state and (out / state[key]["split"] / state[key]["path_in_tar"]).is_file():
                    rows.append(state[key])
                    bar.update(1)
                elif problem:
                    skipped.append(_skip(s, f, problem))
                    bar.update(1)
                else:
                    todo.append((key, f))
            for batch in _chunks(todo, 4 * workers):
                made = []
                for key, f in batch:
                    got = _read_one(repo, s, f)
                    if isinstance(got, str):
                        skipped.append(_skip(s, f, got))
                        bar.update(1)
                    else:
                        made.append((key, f, *got))
                for (key, f, data, how, fmt0, size0), facts in zip(made, pool.map(_facts_job, [m[2] for m in made])):
                    bar.update(1)
                    if "error" in facts:
                        skipped.append(_skip(s, f, f"cannot decode: {facts['error']}"))
                        continue
                    row = _row(s, f, data, how, fmt0, size0, facts)
                    dest = out / s.split / row["path_in_tar"]
                    dest.parent.mkdir(parents=True, exist_ok=True)
                    tmp = dest.with_name(dest.name + ".part")
                    tmp.write_bytes(data)
                    os.replace(tmp, dest)
                    state[key] = row
                    rows.append(row)
                    log.write(json.dumps({"key": key, "row": row}) + "\n")
                    log.flush()
            repo.close()
    bar.close()
    kept, dropped = _deduplicate(rows)
    listed = {(r["split"], r["path_in_tar"]) for r in kept}
    for split in ("train", "lockbox"):  # a file no manifest lists (dropped, or left by an earlier recipe) must
        for label in ("ai", "real"):      # not stay: folder readers take every file, not only the manifest's rows
            for path in (out / split / label).glob("*") if (out / split / label).is_dir() else ():
                if (split, f"{label}/{path.name}") not in listed:
                    path.unlink()
    for split in ("train", "lockbox"):
        _write_manifest(out / split / "manifest.csv", [r for r in kept if r["split"] == split])
    report = _report(sources, kept, dropped, skipped, out)
    report["refused_lists"] = [str(p) for p in refused_lists]
    report["duplicates_checked_against"] = [str(p) for p in against]
    save_json(out / "build_report.json", report)
    (out / "build_report.md").write_text(report_markdown(report), encoding="utf-8")
    return report


def _chunks(items: list, n: int):
    for i in range(0, len(items), n):
        yield items[i:i + n]


def _read_state(path: Path) -> dict:
    state = {}
    if path.is_file():
        for line in path.read_text(encoding="utf-8").splitlines():
            try:
                rec = json.loads(line)
                state[rec["key"]] = rec["row"]
            except (ValueError, KeyError):
                continue  # a line cut short by an interruption
    return state


def _skip(s: Source, f, reason: str) -> dict:
    return {"repository": s.repository, "collection": s.collection, "path": f.path,
            "crop": list(f.crop) if f.crop else None, "reason": reason}


def _read_one(repo: GitRepo, s: Source, f):
    """(bytes to write, how they were made, original format, original size), or the reason to skip."""
    data = repo.blob(s.commit, f.path)
    if data is None:
        return MISSING_BLOB
    if hashlib.sha256(data).hexdigest() != f.sha256:
        return "sha256 differs from the recipe's (the file changed or the recipe is wrong)"
    try:
        img = Image.open(io.BytesIO(data))
        fmt, size = img.format, img.size
    except Exception as e:
        return f"not an image Pillow can open ({type(e).__name__})"
    if f.crop is None:
        return data, "whole file, bytes as the source saved them", fmt, size
    try:
        cut, how = crop_losslessly(data, fmt, f.crop)
    except ValueError as e:
        return str(e)
    return cut, how, fmt, size


def _row(s: Source, f, data: bytes, how: str, fmt0: str, size0, facts: dict) -> dict:
    name = out_name(s, f.path, f.crop, facts["format"])
    return {"path_in_tar": f"{s.label}/{name}", "label": s.label, "source_repo": s.repository, "commit": s.commit,
            "original_path": f.path, "generator": s.generator, "category": s.collection,
            "orig_width": size0[0], "orig_height": size0[1], "orig_format": fmt0, "processing": how,
            "looks": f.looks, "collection": s.collection, "family": s.family, "split": s.split,
            "sha256": hashlib.sha256(data).hexdigest(), "source_sha256": f.sha256,
            "crop": "" if f.crop is None else "x".join(map(str, f.crop)), "exif_make": facts["exif_make"],
            "exif_model": facts["exif_model"], "jpeg_quality": facts["jpeg_quality"],
            "jpeg_ijg_exact": facts["jpeg_ijg_exact"], "subsampling": facts["subsampling"],
            "width": facts["width"], "height": facts["height"], "phash": facts["phash"], "thumb": facts["thumb"],
            "pack_copies": facts["pack_copies"]}


def _deduplicate(rows: list[dict]) -> tuple[list[dict], list[dict]]:
    """Exact copies (same bytes), near copies of an earlier file, and copies of a pack image are dropped; rows come
    lockbox first, so a lockbox picture is never the one dropped for a training one."""
    import numpy as np

    kept, dropped, by_sha = [], [], {}
    for r in rows:
        if r["pack_copies"]:
            dropped.append({**r, "dropped": "copy of a pack image", "copy_of": r["pack_copies"][0]})
        elif r["sha256"] in by_sha:
            dropped.append({**r, "dropped": "same bytes", "copy_of": by_sha[r["sha256"]]})
        else:
            by_sha[r["sha256"]] = f"{r['split']}/{r['path_in_tar']}"
            kept.append(r)
    prints = [Fingerprint(int(r["phash"]), np.asarray(r["thumb"], np.float32)) for r in kept]
    gone = {}
    for i, j in near_pairs(prints):
        if i not in gone and j not in gone:
            gone[j] = i
    out = []
    for k, r in enumerate(kept):
        if k in gone:
            o = kept[gone[k]]
            dropped.append({**r, "dropped": "near copy", "copy_of": f"{o['split']}/{o['path_in_tar']}"})
        else:
            out.append(r)
    return out, dropped


def _write_manifest(path: Path, rows: list[dict]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    for label in ("ai", "real"):
        (path.parent / label).mkdir(exist_ok=True)
    with tempfile.NamedTemporaryFile("w", dir=path.parent, delete=False, newline="", encoding="utf-8") as f:
        w = csv.DictWriter(f, fieldnames=COLUMNS, extrasaction="ignore")
        w.writeheader()
        for r in sorted(rows, key=lambda r: r["path_in_tar"]):
            w.writerow(r)
    os.replace(f.name, path)


def _report(sources: list[Source], kept: list[dict], dropped: list[dict], skipped: list[dict], out: Path) -> dict:
    per = defaultdict(Counter)
    for r in kept:
        c = per[(r["split"], r["collection"])]
        c["kept"] += 1
        c[f"looks {r['looks']}"] += 1
    for r in dropped:
        per[(r["split"], r["collection"])][f"dropped: {r['dropped']}"] += 1
    for r in skipped:
        split = next(s.split for s in sources if s.collection == r["collection"])
        per[(split, r["collection"])]["skipped"] += 1
    info = {s.collection: s for s in sources}
    collections = [{"split": sp, "collection": c, "repository": info[c].repository, "commit": info[c].commit,
                    "label": info[c].label, "generator": info[c].generator, "family": info[c].family,
                    "licence": info[c].licence, **dict(per[(sp, c)])} for sp, c in sorted(per)]
    devices = Counter(f"{r['exif_make']} {r['exif_model']}".strip() or "(no EXIF make)"
                      for r in kept if r["label"] == "real" and r["split"] == "train")
    return {"out": str(out), "collections": collections,
            "totals": {sp: dict(Counter(r["label"] for r in kept if r["split"] == sp)) for sp in ("train", "lockbox")},
            "train_ai_photo": sum(r["label"] == "ai" and r["looks"] == "photo" and r["split"] == "train" for r in kept),
            "real_devices_train": dict(devices.most_common()),
            "dropped": [{k: r[k] for k in ("split", "path_in_tar", "dropped", "copy_of")} for r in dropped],
            "skipped": skipped}


def report_markdown(rep: dict) -> str:
    lines = [f"# Corpus build: {rep['out']}", "",
             f"Train: {rep['totals'].get('train', {})} ({rep['train_ai_photo']} AI photo-like); "
             f"lockbox: {rep['totals'].get('lockbox', {})}", "",
             "| split | collection | label | family | kept | photo | illustration | dropped | skipped |",
             "| --- | --- | --- | --- | ---: | ---: | ---: | ---: | ---: |"]
    for c in rep["collections"]:
        drop = sum(v for k, v in c.items() if k.startswith("dropped"))
        lines.append(f"| {c['split']} | {c['collection']} | {c['label']} | {c['family']} | {c.get('kept', 0)} | "
                     f"{c.get('looks photo', 0)} | {c.get('looks illustration', 0)} | {drop} | {c.get('skipped', 0)} |")
    lines += ["", "## Dropped as duplicates", ""] + [f"- {d['split']}/{d['path_in_tar']}: {d['dropped']} of "
                                                       f"{d['copy_of']}" for d in rep["dropped"]]
    lines += ["", "## Skipped", ""] + [f"- {s['repository']}:{s['path']}"
                                       + (f" crop {s['crop']}" if s["crop"] else "") + f": {s['reason']}"
                                       for s in rep["skipped"]]
    return "\n".join(lines) + "\n"

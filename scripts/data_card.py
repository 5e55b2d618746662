"""Write the corpus's data card (docs/data-card.md) from a build (`synthcheck build-data ... --out data/corpus`).

    python scripts/data_card.py data/corpus --out docs/data-card.md

The counts, devices, formats and licences come from the build's report and manifests, so the card says what was
built, not what was meant to be; the prose around them is in this script.
"""

from __future__ import annotations

import argparse
import csv
import json
import statistics
import sys
from collections import Counter
from pathlib import Path

INTRO = """# Data card: the public-collections corpus

Training data and a lockbox built from public GitHub repositories by `synthcheck build-data` from the recipes in
`configs/data/` (one TOML file per repository: repository, commit, label, generator, family, collection, split,
looks, licence, note, and every file pinned by path and sha256). No image is committed; the corpus is rebuilt from
snapshots (or clones at the pinned commits) into the git-ignored `data/corpus/`:

```bash
synthcheck build-data configs/data --out data/corpus --mirrors /work/.mirror --config configs/crossval_photo_corpus.toml
```

(`--mirrors`: a folder of snapshots, `<owner>+<name>/repo`; without it, or for a repository it lacks, the builder
clones from GitHub at the pinned commit. The lists of refused repositories must exist, or the build does not start.
Measured: {build_time}.)

**What the builder does to a file: nothing.** Files are copied byte for byte as their sources saved them (EXIF kept).
The only exception is a frame cut out of a sheet: a lossless crop (PNG to PNG; JPEG with `jpegtran` at MCU-aligned
offsets), recorded in the manifest's `crop` and `processing` columns. Nothing depends on the label.

**Selection.** Every collection's files were chosen by looking at contact sheets of every file (and EXIF for real
photos); each recipe's header says how. AI: single generated frames only; grids, collages, comparison strips, UI
screenshots and the users' reference inputs of edit requests are left out; "photo" or "illustration" per file.
Real: photographs with a long side of at least 800 px; flat-field and test-chart shots, screenshots, renders,
memes, deliberately broken test files and near-duplicate frames left out.

**Duplicates.** Dropped within the corpus (same bytes; same picture by perceptual hash, confirmed on a thumbnail)
and against the shared packs, compared at each pack file's own crop offsets (scaled when a gallery re-hosts a picture
at another size): {dropped}.

**Refused.** Every repository in `../shared/data/held-out-repos.txt` and in `configs/data/refused.txt` (copies of
held-out repositories found while scouting: a renamed snapshot of one, three copies of another, a list synced from
it, one that could not be checked, one that imports its samples). `ruifengzhaomail/Awesome-Nano-Banana-Guides-and-Images` is not used: its images
are a workflow copy of PicoTrex's, which photo-train already holds; `ZizheRuan/awesome-nano-banana-pro-prompts-and-examples`,
`lperng/Awesome-Nano-Banana-images`, `mickorix/awesome-nanobanana-images` and `z23cc/gpt4o-image-prompt` re-host other
galleries. A built file could not be compared with the held-out repositories themselves (they are never fetched).

**The lockbox** (`data/corpus/lockbox`) was marked in the recipes (`split = "lockbox"`) before any score on it was
seen: the nano-banana and openai-image collections of one author's side-by-side test (mmd19999), Midjourney V7
photographic frames from a style-code library (petersteinercode, cut from Gizem Akdag's SREF books), and two real
sources (a Pixel phone and Lightroom blog; a Lightroom-edited macro portfolio). It is in no crossval pool; no
training, recipe choice, calibration or band fit reads it; every score ever taken on it is logged in
`reports/lockbox/`. Two collections left it after review, and their earlier scores stay in the log, marked: a GPT
Image 2 collection (eebv, 9 images) carries a script that imports samples of a held-out gallery, so it is refused;
and the five Midjourney v6 images of Kolors' comparison tables (kolors-repo-mjv6, until 2026-12-07) answered the same
reference images and prompts as Kolors images in the training split, so they are left out of the corpus. Cautions:
the mmd19999 collections are small (16 and 17 images), so their figures move by chance; the Midjourney frames are
not native files (book layout, PDF render, grid cut, JPEG at about quality 85), come three to a style code (37 codes),
and share an author with one training image (pixmind-mj7's `gizakdag_blended.jpg`; no near copy).
"""


def _table(rows: list[list[str]], head: list[str]) -> list[str]:
    return ["| " + " | ".join(head) + " |", "|" + " --- |" * len(head)] + ["| " + " | ".join(r) + " |" for r in rows]


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("corpus", type=Path)
    ap.add_argument("--out", type=Path, default=Path("docs/data-card.md"))
    ap.add_argument("--build-time", default="not measured")
    a = ap.parse_args()
    try:
        rep = json.loads((a.corpus / "build_report.json").read_text())
        manifests = {sp: list(csv.DictReader(open(a.corpus / sp / "manifest.csv", newline="", encoding="utf-8")))
                     for sp in ("train", "lockbox")}
    except (OSError, ValueError) as e:
        print(f"error: {a.corpus} is not a finished build ({e})", file=sys.stderr)
        return 1
    drops = Counter(d["dropped"] for d in rep["dropped"])
    dropped = ", ".join(f"{n} {k}" for k, n in drops.items()) or "none"
    lines = [INTRO.format(build_time=a.build_time, dropped=dropped)]
    tot = rep["totals"]
    lines += ["## Counts", "",
              f"Training split: **{tot['train'].get('ai', 0)} AI** ({rep['train_ai_photo']} photo-like) and "
              f"**{tot['train'].get('real', 0)} real**; lockbox: {tot['lockbox'].get('ai', 0)} AI and "
              f"{tot['lockbox'].get('real', 0)} real. Unique by sha256 and by picture.", ""]
    fams = Counter()
    for r in manifests["train"]:
        if r["label"] == "ai":
            fams[r["family"]] += 1
    repos = {}
    for c in rep["collections"]:
        if c["split"] == "train" and c["label"] == "ai":
            repos.setdefault(c["family"], set()).add(c["repository"])
    lines += _table([[f, str(n), str(len(repos.get(f, ())))] for f, n in fams.most_common()],
                    ["AI family (train)", "images", "independent repositories"]) + [""]
    lines += ["## Collections", ""]
    rows = []
    for c in rep["collections"]:
        rows.append([c["split"], f"`{c['collection']}`", f"[{c['repository']}](https://github.com/{c['repository']})"
                     f" @ `{c['commit'][:7]}`", c["label"], c["generator"] if c["label"] == "ai" else "-",
                     c["family"] if c["label"] == "ai" else "-", str(c.get("kept", 0)), str(c.get("looks photo", 0)),
                     c["licence"].replace("|", "/")])
    lines += _table(rows, ["split", "collection", "repository @ commit", "label", "generator", "family", "files",
                           "photo-like", "licence as stated"]) + [""]
    lines += ["Licences: most repositories state none for their images, and personal photo sites reserve all rights. "
              "The corpus is for training and evaluation here only: never redistribute its images (trained weights "
              "are fine).", "", "## Devices (real photos, training split, by EXIF make and model)", ""]
    dev = rep["real_devices_train"]
    lines.append(", ".join(f"{k} {v}" for k, v in dev.items()) + ".")
    lines += ["", "## Processing history (as the sources saved the files)", ""]
    rows = []
    for sp in ("train", "lockbox"):
        for lab in ("ai", "real"):
            r = [x for x in manifests[sp] if x["label"] == lab]
            if not r:
                continue
            fmt = Counter(x["orig_format"] for x in r)
            jp = [x for x in r if x["jpeg_quality"]]
            ijg = sum(x["jpeg_ijg_exact"] == "True" for x in jp)
            q = statistics.median(int(x["jpeg_quality"]) for x in jp) if jp else None
            sub = Counter(x["subsampling"] for x in jp).most_common(2)
            longs = statistics.median(max(int(x["orig_width"]), int(x["orig_height"])) for x in r)
            rows.append([sp, lab, str(len(r)), ", ".join(f"{k} {v}" for k, v in fmt.most_common()),
                         f"{ijg} of {len(jp)}" if jp else "-", "-" if q is None else f"{q:g}",
                         ", ".join(f"{k} {v}" for k, v in sub) or "-", f"{longs:g}"])
    lines += _table(rows, ["split", "label", "files", "formats", "JPEGs with IJG-standard tables",
                           "median JPEG quality", "subsampling", "median long side (px)"])
    lines += ["", "**Caution: compression history still follows the label here.** The AI galleries' JPEGs are "
              "mostly social-media or site re-encodes with IJG-standard tables, their other files PNG or WebP; the "
              "real photos mostly carry camera or editor tables. In the lockbox every real file is a JPEG with a "
              "camera's or an editor's tables, the AI files PNG, WebP or re-encoded JPEGs. A model can tell these apart without learning anything about generators: "
              "judge it on copies saved the same way for both classes (issue 37's panel), not only as the files "
              "came.", ""]
    a.out.write_text("\n".join(lines) + "\n", encoding="utf-8")
    print(f"wrote {a.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

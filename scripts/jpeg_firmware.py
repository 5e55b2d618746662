"""Build the camera-firmware quantisation-table list shipped with the package (inference/jpeg_firmware.json).

Only camera original files count: photo-train's drewnoakes crops and photo-train-2's exifr and immich crops were
cut losslessly (jpegtran), so they keep the camera's tables, and the manifest names the camera. Files that went
through an editor ("via Adobe Lightroom"), web-sized exports (long side under 1,600 px) and files whose camera is
unknown are left out. Tables that equal IJG-standard tables are kept too: `jpeg_history` still calls those
"IJG-standard", but can say which cameras write them.

    python scripts/jpeg_firmware.py ../shared/data/photo-train/photo-train.tar ../shared/data/photo-train-2/photo-train-2.tar
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from synthcheck.data.folders import iter_source
from synthcheck.data.groups import lookup, manifest_path, read_manifest
from synthcheck.inference.jpeg_history import FIRMWARE_FILE, parse_header, tables_key

CAMERA_SOURCES = ("drewnoakes/", "MikeKovarik/exifr", "immich-app/")


def camera_of(row: dict) -> str | None:
    if not row or not row.get("source_repo", "").startswith(CAMERA_SOURCES):
        return None
    if not row["processing"].startswith("jpegtran") or "lightroom" in row["original_path"].lower():
        return None
    if max(int(row["orig_width"] or 0), int(row["orig_height"] or 0)) < 1600:
        return None
    cam = dict(kv.split("=", 1) for kv in row["category"].split(";") if "=" in kv).get("camera", "unknown")
    return None if cam == "unknown" else " ".join(cam.split())


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("sources", nargs="+")
    ap.add_argument("--out", default=str(FIRMWARE_FILE))
    args = ap.parse_args()
    tables: dict[str, list] = {}
    files = 0
    for src in args.sources:
        manifest = read_manifest(manifest_path(Path(src)))
        for item in iter_source(src):
            cam = camera_of(lookup(manifest, item.name))
            head = parse_header(item.data) if cam else None
            if head is None or head.table(0) is None:
                continue
            files += 1
            cams = tables.setdefault(tables_key(head), [])
            if cam not in cams:
                cams.append(cam)
    out = {"about": "JPEG quantisation tables (luma+chroma, sha1[:16] of big-endian uint16, natural order) of camera "
                    "original files, with the cameras that wrote them; built by scripts/jpeg_firmware.py",
           "command": "python scripts/jpeg_firmware.py " + " ".join(args.sources),
           "files": files, "tables": {k: sorted(v) for k, v in sorted(tables.items())}}
    Path(args.out).write_text(json.dumps(out, indent=1) + "\n")
    print(f"{files} camera files, {len(tables)} distinct table pairs -> {args.out}")


if __name__ == "__main__":
    main()

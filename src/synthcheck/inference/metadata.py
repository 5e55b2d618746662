"""Evidence from the file rather than the pixel score: C2PA, EXIF/XMP, generator text chunks, open generators'
invisible watermarks (watermark.py) and the JPEG's compression history (jpeg_history.py).

Metadata is easy to strip and easy to forge, so it is reported as evidence with a
stated strength, never folded into the probability. Missing metadata is never
evidence either way (most platforms strip it). File history is information only
("history"), never a verdict. The combination rule is `combine_verdict`,
documented there and in docs/guides/metadata.md.
"""

from __future__ import annotations

import io
import json
import re
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
from PIL import Image

from . import jpeg_history, watermark

# IPTC Digital Source Type vocabulary (used by Adobe Firefly, Midjourney, DALL·E/OpenAI, Google and others)
IPTC_AI_TYPES = {
    "trainedAlgorithmicMedia": ("ai", "strong", "IPTC digital source type: created by a trained model"),
    "compositeWithTrainedAlgorithmicMedia": ("ai", "moderate", "IPTC digital source type: composite including AI content"),
    "algorithmicMedia": ("ai", "moderate", "IPTC digital source type: algorithmic media"),
    "compositeSynthetic": ("ai", "moderate", "IPTC digital source type: composite with synthetic elements"),
    "digitalCapture": ("camera", "weak", "IPTC digital source type: digital capture (self-declared)"),
}
AI_SOFTWARE = re.compile(r"stable[ -]?diffusion|midjourney|dall[·\-. ]?e|novelai|comfyui|automatic1111|invokeai|"
                         r"firefly|imagen|bing image creator|leonardo\.ai|dreamstudio|fooocus|flux|sdxl|nijijourney",
                         re.IGNORECASE)
EDITORS = re.compile(r"photoshop|lightroom|gimp|affinity|snapseed|pixelmator|capture one|darktable|paint\.net|"
                     r"picsart|facetune|canva", re.IGNORECASE)
# PNG text keys written by generators (documented by each tool's metadata format)
PNG_GENERATOR_KEYS = {
    "parameters": "Stable Diffusion WebUI (A1111/Forge) generation parameters",
    "prompt": "ComfyUI prompt graph",
    "workflow": "ComfyUI workflow",
    "invokeai_metadata": "InvokeAI metadata",
    "sd-metadata": "InvokeAI (legacy) metadata",
    "dream": "InvokeAI (legacy) dream command",
    "fooocus_scheme": "Fooocus metadata scheme",
    "generation_data": "generation data",
}
THUMBNAIL_MATCH = 0.9  # correlation of the EXIF thumbnail with the image at its size: a stated choice (no file in the
#                        shared data carries a thumbnail to measure it on)
EXIF_TAGS = {0x0131: "Software", 0x010F: "Make", 0x0110: "Model", 0x013B: "Artist", 0x010E: "ImageDescription",
             0x8298: "Copyright"}


@dataclass
class Evidence:
    source: str      # c2pa | exif | xmp | png-text | watermark | jpeg
    field: str
    value: str
    indicates: str   # ai | camera | edited | provenance | history (file history: never moves a verdict) | none
    strength: str    # strong | moderate | weak | info
    note: str

    def to_dict(self) -> dict:
        return asdict(self)


def _short(v, n: int = 200) -> str:
    s = v if isinstance(v, str) else repr(v)
    s = s.replace("\x00", "")
    return s if len(s) <= n else s[:n] + "…"


def _png_text(img: Image.Image) -> list[Evidence]:
    out = []
    info = getattr(img, "text", None) or {}
    for key, value in info.items():
        k = key.lower()
        if k in PNG_GENERATOR_KEYS:
            if k == "prompt" and not value.strip().startswith("{"):
                continue  # a plain 'prompt' caption is not a ComfyUI graph
            if k == "parameters" and not re.search(r"Steps:|Sampler:|CFG scale|Seed:", value):
                continue
            out.append(Evidence("png-text", key, _short(value), "ai", "strong", PNG_GENERATOR_KEYS[k]))
        elif k in ("software", "source") and AI_SOFTWARE.search(value or ""):
            out.append(Evidence("png-text", key, _short(value), "ai", "strong", "generator named in PNG text"))
        elif k == "software" and (value or "").strip().lower() == "novelai":
            out.append(Evidence("png-text", key, value, "ai", "strong", "NovelAI"))
        elif k == "comment" and value.strip().startswith("{") and re.search(r'"(steps|sampler|n_samples|uc)"', value):
            out.append(Evidence("png-text", key, _short(value), "ai", "strong", "NovelAI generation settings"))
    return out


def _exif(img: Image.Image) -> list[Evidence]:
    out = []
    try:
        exif = img.getexif()
    except Exception:
        return out
    fields = {EXIF_TAGS[t]: str(exif.get(t)).strip() for t in EXIF_TAGS if exif.get(t)}
    sw = fields.get("Software", "")
    for name in ("Software", "Artist", "ImageDescription"):
        v = fields.get(name, "")
        if v and AI_SOFTWARE.search(v):
            out.append(Evidence("exif", name, _short(v), "ai", "moderate", "generator named in EXIF (self-declared)"))
    if sw and EDITORS.search(sw):
        out.append(Evidence("exif", "Software", _short(sw), "edited", "info",
                            "edited with an image editor; says nothing about AI either way"))
    if fields.get("Make") or fields.get("Model"):
        out.append(Evidence("exif", "Make/Model", _short(f"{fields.get('Make', '')} {fields.get('Model', '')}".strip()),
                            "camera", "weak", "camera named in EXIF; easily copied, so weak"))
    return out


def _xmp(img: Image.Image) -> list[Evidence]:
    raw = img.info.get("xmp") or img.info.get("XML:com.adobe.xmp") or b""
    if isinstance(raw, str):
        raw = raw.encode("utf-8", "ignore")
    if not raw:
        return []
    text = raw.decode("utf-8", "ignore")
    out = []
    for m in re.finditer(r"digitalsourcetype[\"'=>\s]*(?:[^\"'<>]*/)?([A-Za-z]+)", text, re.IGNORECASE):
        code = m.group(1)
        if code in IPTC_AI_TYPES:
            ind, strength, note = IPTC_AI_TYPES[code]
            out.append(Evidence("xmp", "Iptc4xmpExt:DigitalSourceType", code, ind, strength, note))
    for m in re.finditer(r"CreatorTool[\"'=>\s]*([^\"'<]+)", text):
        tool = m.group(1).strip()
        if AI_SOFTWARE.search(tool):
            out.append(Evidence("xmp", "xmp:CreatorTool", _short(tool), "ai", "moderate", "generator named in XMP"))
        elif EDITORS.search(tool):
            out.append(Evidence("xmp", "xmp:CreatorTool", _short(tool), "edited", "info", "edited with an image editor"))
    return out


def _c2pa(data: bytes, fmt: str | None) -> list[Evidence]:
    """C2PA content credentials via c2pa-python (optional dependency); absent manifest = no evidence."""
    try:
        import c2pa
    except ImportError:
        return []
    mime = {"JPEG": "image/jpeg", "PNG": "image/png", "WEBP": "image/webp", "TIFF": "image/tiff",
            "GIF": "image/gif", "AVIF": "image/avif", "HEIF": "image/heif"}.get(fmt or "")
    if mime is None:
        return []
    # Every embedded manifest sits in a JUMBF box labelled c2pa; a byte scan costs microseconds where the
    # reader costs ~0.1 ms per file (measured: it was most of `predict`'s per-file time on CIFAKE).
    if b"jumb" not in data and b"c2pa" not in data:
        return []
    try:
        with c2pa.Reader(mime, io.BytesIO(data)) as reader:
            store = json.loads(reader.json())
    except Exception as e:
        if any(k in f"{type(e).__name__} {e}" for k in ("ManifestNotFound", "NotSupported", "JumbfNotFound")):
            return []  # no manifest (the usual case) or a format C2PA does not cover: no evidence
        return [Evidence("c2pa", "manifest", _short(str(e)), "provenance", "info", "C2PA data present but unreadable")]
    active = store.get("manifests", {}).get(store.get("active_manifest", ""), {})
    generator = active.get("claim_generator") or ", ".join(
        f"{g.get('name', '')} {g.get('version', '')}".strip() for g in active.get("claim_generator_info", []) or [])
    statuses = store.get("validation_status") or []
    state = store.get("validation_state") or ("Invalid" if any("mismatch" in str(s.get("code", "")) or
                                                                 "invalid" in str(s.get("code", "")).lower()
                                                                 for s in statuses) else "Valid")
    valid = state in ("Valid", "Trusted")
    out = [Evidence("c2pa", "claim_generator", _short(generator or "?"), "provenance", "info",
                    f"C2PA manifest, validation: {state}" + (f" ({', '.join(s.get('code', '') for s in statuses)})"
                                                             if statuses else ""))]
    text = json.dumps(active)
    for code, (ind, strength, note) in IPTC_AI_TYPES.items():
        if f"digitalsourcetype/{code}\"" in text.lower().replace("\\", "") or f"/{code}\"" in text:
            if ind == "ai":
                out.append(Evidence("c2pa", "c2pa.actions digitalSourceType", code, ind,
                                    strength if valid else "moderate",
                                    note + ("" if valid else "; manifest does not validate")))
            break
    return out


# EXIF orientation -> the numpy view that undoes ImageOps.exif_transpose (watermarks and JPEG grids live in the
# pixels as stored)
_UNDO_ORIENTATION = {2: lambda a: a[:, ::-1], 3: lambda a: a[::-1, ::-1], 4: lambda a: a[::-1],
                     5: lambda a: a.transpose(1, 0, 2), 6: lambda a: np.rot90(a, 1), 7: lambda a: a[::-1, ::-1].transpose(1, 0, 2),
                     8: lambda a: np.rot90(a, -1)}


def _as_stored(img: Image.Image, pixels: np.ndarray) -> np.ndarray:
    try:
        orientation = int(img.getexif().get(0x0112) or 1)
    except Exception:
        orientation = 1
    return _UNDO_ORIENTATION.get(orientation, lambda a: a)(pixels)


def _watermark(stored: np.ndarray) -> list[Evidence]:
    res = watermark.check(stored)
    field_ = "invisible watermark (DWT-DCT)"
    if not res["checked"]:
        return [Evidence("watermark", field_, "not checked", "none", "info", res["reason"])]
    if not res["found"]:
        return [Evidence("watermark", field_, "no known mark", "none", "info",
                         "no Stable Diffusion 1.x / 2.x / XL mark; most generators embed none and re-encoding or "
                         "resizing removes it, so absence is not evidence")]
    return [Evidence("watermark", field_, f"{m['generator']} mark, {m['errors']} of {m['bits']} bits off "
                     f"(a match allows {m['allowed']})", "ai", "strong",
                     f"{m['where']} decoded: made by {m['generator']}") for m in res["found"]]


def _history(data: bytes, img: Image.Image, stored: np.ndarray | None, resave: bool = True) -> list[Evidence]:
    h = jpeg_history.read(data, img, stored, resave)
    if h is None:
        return []
    q = h["quality"]
    also = f"; these standard tables are also what {', '.join(h['cameras'][:3])} write" if h["cameras"] else ""
    encoder = {"ijg": (f"an IJG-standard encoder at quality {q}",
                       "libjpeg and everything built on it (PIL, OpenCV, GIMP, ...): the tables alone cannot say which" + also),
               "camera": (f"camera firmware ({', '.join(h['cameras'][:3])}{', ...' if len(h['cameras']) > 3 else ''})",
                          "tables found in original files from these cameras"),
               "other": (f"an encoder with non-standard tables (comparable to quality {q})",
                         "a camera, phone or editor whose tables are not in SynthCheck's list")}[h["family"]]
    details = f"{h['subsampling']}, {h['frame']}, {h['huffman']} Huffman tables; segments {' '.join(h['apps']) or 'none'}"
    out = [Evidence("jpeg", "last encoder", encoder[0], "history", "info", f"{encoder[1]} ({details})")]
    exif = h["exif"]
    camera = " ".join(v for v in (exif.get("make"), exif.get("model")) if v)
    if not camera:
        out.append(Evidence("jpeg", "EXIF consistency", "camera metadata absent", "history", "info",
                            "no camera named in EXIF (most platforms strip it; says nothing either way)"))
    elif h["cameras"] and exif.get("make") and any(exif["make"].lower().split()[0] in c.lower() for c in h["cameras"]):
        out.append(Evidence("jpeg", "EXIF consistency", f"consistent with {camera}", "history", "info",
                            "the tables are ones this maker's firmware writes"))
    elif h["family"] == "ijg":
        out.append(Evidence("jpeg", "EXIF consistency", f"EXIF names {camera}, last written by IJG-standard software",
                            "history", "info", "software re-saved the file after the camera, unless this camera "
                            "writes standard tables" + (f" (EXIF Software: {exif['software']})" if exif.get("software") else "")))
    elif h["cameras"]:
        out.append(Evidence("jpeg", "EXIF consistency", f"EXIF names {camera}, tables are {h['cameras'][0]}'s",
                            "history", "info", "the tables belong to another maker's firmware: EXIF copied or file re-saved"))
    else:
        out.append(Evidence("jpeg", "EXIF consistency", f"EXIF names {camera}; its tables are not in the list",
                            "history", "info", "cannot check this camera's firmware tables"))
    t = h["thumbnail"]
    if t is not None:
        if t["corr"] is None:
            out.append(Evidence("jpeg", "EXIF thumbnail", "present but unreadable", "history", "info", ""))
        else:
            same = t["corr"] >= THUMBNAIL_MATCH
            out.append(Evidence("jpeg", "EXIF thumbnail", f"{'matches' if same else 'differs from'} the image "
                                f"(r = {t['corr']:.2f})", "history", "info",
                                "" if same else "the picture changed after the thumbnail was written (edited, cropped "
                                "or replaced)"))
    if stored is not None and not resave:
        return out  # the pixel trace was not asked for (predict's default: see Detector.resave_check)
    again, how = jpeg_history.resaved(h)
    a = h["aligned"] or {}
    value = {True: "sign of a second save", False: "no sign of a second save", None: "can't tell about a second save"}[again]
    note = [how] + ([f"trace {a['score']:.1f} (threshold {jpeg_history.DQ_THRESHOLD})"] if a.get("score") is not None
                    else []) + ["blind to a crop or resize between saves, a WebP/HEIF first save, or a second save "
                                "finer than about quality 92"]
    out.append(Evidence("jpeg", "re-save trace", value, "history", "info", "; ".join(note)))
    return out


def inspect(source: str | Path | bytes, name: str | None = None, pixels: np.ndarray | None = None,
            resave: bool = True) -> list[Evidence]:
    """All evidence in one image file; never raises for unreadable metadata. `pixels`: the file decoded by
    `preprocess.decode_image` (EXIF orientation applied), when the caller has it, so nothing is decoded twice;
    without it the pixel checks (watermark, re-save trace) decode the file themselves. `resave=False` skips the
    re-save trace, the one check that costs more than the 10% the photo path allows (benchmarks/evidence_cost.py)."""
    data = Path(source).read_bytes() if isinstance(source, (str, Path)) else bytes(source)
    try:
        img = Image.open(io.BytesIO(data))
    except Exception:
        return []
    evidence: list[Evidence] = []
    for fn in (_png_text, _exif, _xmp):
        try:
            evidence += fn(img)
        except Exception:
            continue
    evidence += _c2pa(data, img.format)
    if pixels is None:
        from ..data.preprocess import decode_image

        try:
            pixels = decode_image(data, name)
        except Exception:
            pixels = None
    stored = _as_stored(img, pixels) if pixels is not None else None
    if stored is not None:
        evidence += _watermark(stored)
    try:
        evidence += _history(data, img, stored, resave)
    except Exception as e:  # a hostile header must not cost the other evidence
        evidence.append(Evidence("jpeg", "compression history", "unreadable", "none", "info", f"{type(e).__name__}: {e}"))
    return evidence


def is_file_history(e) -> bool:
    """Items that describe the file's history or a check that found nothing: shown as one summary line."""
    return (e["indicates"] if isinstance(e, dict) else e.indicates) in ("history", "none")


def history_summary(evidence: list) -> str | None:
    """The file-history items in one line of plain words, e.g. "last written by an IJG-standard encoder at quality
    92; camera metadata absent; no sign of a second save; no known generator watermark"."""
    items = {e["field"] if isinstance(e, dict) else e.field: e if isinstance(e, dict) else e.to_dict() for e in evidence
             if (e["source"] if isinstance(e, dict) else e.source) in ("jpeg", "watermark")}
    parts = []
    if "last encoder" in items:
        parts.append("last written by " + items["last encoder"]["value"])
    for key in ("EXIF consistency", "EXIF thumbnail", "re-save trace"):
        if key in items:
            parts.append(("EXIF thumbnail " if key == "EXIF thumbnail" else "") + items[key]["value"])
    wm = items.get("invisible watermark (DWT-DCT)")
    if wm and wm["indicates"] != "ai" and "under" not in wm["note"]:  # thumbnails: the evidence item says it
        parts.append("no known generator watermark" if wm["value"] == "no known mark" else "no watermark check (resized file)")
    return "; ".join(parts) or None


def combine_verdict(pixel_verdict: str | None, evidence: list[Evidence],
                    out_of_domain: bool = False) -> tuple[str | None, str]:
    """The documented rule joining the pixel verdict, metadata evidence and the domain check.

    1. Strong AI evidence (a generator's own parameters chunk, an IPTC
       trainedAlgorithmicMedia declaration, a valid C2PA AI assertion, a decoded
       generator watermark) -> "ai".
    2. An input far outside the model's training domain -> "uncertain": the
       pixel score is shown but not trusted to decide.
    3. Moderate AI evidence (self-declared software names) against a pixel
       verdict of "real" -> "uncertain"; otherwise the pixel verdict stands.
    4. Camera, editor, provenance-only and file-history evidence (encoder, EXIF
       consistency, thumbnail, re-save trace) never change the verdict; no
       metadata and no watermark are never evidence.
    """
    ai = [e for e in evidence if e.indicates == "ai"]
    if any(e.strength == "strong" for e in ai):
        return "ai", "metadata: " + "; ".join(e.note for e in ai if e.strength == "strong")
    if out_of_domain and pixel_verdict in ("ai", "real"):
        return "uncertain", f"pixels say {pixel_verdict}, but the input is outside the model's training domain"
    if ai and pixel_verdict == "real":
        return "uncertain", "pixels say real but metadata names a generator: " + "; ".join(e.note for e in ai)
    return pixel_verdict, "pixels" if pixel_verdict else "no verdict"

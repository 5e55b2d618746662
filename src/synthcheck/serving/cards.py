"""The web page's cards, as HTML: one per image with its thumbnail, the verdict in words, P(AI) on a bar with
the uncertain band marked, the model in plain words, the metadata evidence and the generator, and the
explanation layers over the picture (pictures inlined as data URIs; every string from a client or a file
HTML-escaped). Pure rendering: `webui` builds the page and calls the service."""

from __future__ import annotations

import base64
import html
import io
import secrets

import numpy as np
from PIL import Image

from ..inference.attribution import generator_note
from ..inference.metadata import history_summary, is_file_history

# what the toggle offers: cheap enough to compute for every explained image. LIME and SHAP are not here: on a
# tiled full-size photo each costs a minute or more on CPU (BENCHMARKS.md); the API and `synthcheck explain` have them
METHODS = (("gradcam", "Grad-CAM"), ("gradcampp", "Grad-CAM++"), ("spectrum", "Spectrum"))
THUMB = 256     # px, longest side of a card's picture
HEAT = 128      # px, longest side of a heatmap layer (the maps are smooth; the browser scales them up)
SPECTRUM = 256  # px, longest side of a spectrum image (max-pooled, so single-pixel peaks survive)
VERDICT_WORDS = {"ai": "likely AI-generated", "real": "likely a real photo", "uncertain": "can't tell"}
ARCH_WORDS = {"fastnet": "FastNet", "fastnet_s": "FastNet-S", "cnn": "small CNN", "resnet18": "ResNet-18",
              "resnet50": "ResNet-50", "vgg16": "VGG-16", "efficientnet_b0": "EfficientNet-B0",
              "mobilenet_v2": "MobileNetV2"}
POLICY_WORDS = {"resize": "whole image resized", "center_crop": "centre crop", "crop": "native-resolution centre crop",
                "native": "native-resolution centre"}
COLOURS = {"ai": "#b03a2e", "real": "#1e7b45", "uncertain": "#9a6408"}


# --- plain words --------------------------------------------------------------------------------

def model_words(det) -> str:
    """A model in plain words, from its id and config: "full-size photo model (MobileNetV2, 16 tiles of 128 px)",
    "CIFAKE 32-px model (FastNet)"."""
    c, spec = det.config, det.spec
    arch = ARCH_WORDS.get(c["arch"]["name"], c["arch"]["name"])
    name = det.model_id.rsplit(":", 1)[0]
    sources = " ".join(str(s) for s in c.get("data", {}).get("sources", [])).lower()
    size = spec.image_size
    if spec.resize_policy == "tiles" and spec.tiles > 1:
        what, how = "full-size photo model", f"{arch}, {spec.tiles ** 2} tiles of {size} px"
    elif "cifake" in sources:
        what, how = f"CIFAKE {size}-px model", arch
    else:
        what, how = f"{size}-px model", f"{arch}, {POLICY_WORDS.get(spec.resize_policy, spec.resize_policy)}"
    if name == "robust":
        what += ", robust variant"  # trained on resized, blurred and JPEG copies and adversarial noise
    elif name not in ("default", "photo"):
        what += f" {name}"
    return f"{what} ({how})"


def _members(det) -> dict:
    """model id -> Detector, for every model a result may name."""
    members = getattr(det, "members", None) or {"": det}
    return {m.model_id: m for m in members.values()}


# --- pictures as data URIs ------------------------------------------------------------------------

def _uri(img: Image.Image, fmt: str = "PNG", **kw) -> str:
    buf = io.BytesIO()
    img.save(buf, fmt, **kw)
    return f"data:image/{fmt.lower()};base64,{base64.b64encode(buf.getvalue()).decode('ascii')}"


def thumbnail(arr: np.ndarray) -> tuple[str, tuple[int, int], bool]:
    """HxWx3 uint8 -> (data URI, (width, height), tiny); at most THUMB px a side, never enlarged. Tiny pictures
    (CIFAKE's 32 px) stay lossless PNG and are drawn with visible pixels."""
    img = Image.fromarray(arr)
    img.thumbnail((THUMB, THUMB), Image.LANCZOS)
    tiny = max(img.size) <= 64
    uri = _uri(img, "PNG") if tiny else _uri(img, "JPEG", quality=82, optimize=True)
    return uri, img.size, tiny


def heat_layer(attr: np.ndarray) -> Image.Image:
    """A Grad-CAM map (HxW, >= 0; NaN where the model saw nothing) -> RGBA: the jet colour map, opacity rising
    with the evidence so that the picture stays visible where there is none; unseen pixels greyed out."""
    from matplotlib import colormaps

    a = np.asarray(attr, dtype=np.float64)
    seen = np.isfinite(a)
    lim = float(np.nanmax(a)) if seen.any() else 0.0
    v = np.clip(np.where(seen, a, 0.0) / (lim or 1.0), 0.0, 1.0)
    rgba = colormaps["jet"](v)
    rgba[..., 3] = 0.7 * v ** 0.75
    rgba[~seen] = (0.45, 0.45, 0.45, 0.6)
    img = Image.fromarray((rgba * 255).round().astype(np.uint8), "RGBA")
    if max(img.size) > HEAT:
        img.thumbnail((HEAT, HEAT), Image.BOX)
    return img


def spectrum_image(spec: np.ndarray) -> Image.Image:
    """A residual log-power spectrum -> RGB (magma), max-pooled down to SPECTRUM px so isolated peaks stay visible."""
    from matplotlib import colormaps

    s = np.asarray(spec, dtype=np.float64)
    k = int(np.ceil(max(s.shape) / SPECTRUM))
    if k > 1:
        h, w = (s.shape[0] // k) * k, (s.shape[1] // k) * k
        s = s[:h, :w].reshape(h // k, k, w // k, k).max(axis=(1, 3))
    lo, hi = np.percentile(s, [1, 99.9])
    v = np.clip((s - lo) / ((hi - lo) or 1.0), 0.0, 1.0)
    return Image.fromarray((colormaps["magma"](v)[..., :3] * 255).round().astype(np.uint8), "RGB")


def seen_box(spec, height: int, width: int) -> tuple[float, float, float, float]:
    """(top, left, height, width), as fractions of the picture, of what a model's input covers (a map is
    drawn there): the whole picture for `resize` and for tiles (whose map is stitched over the whole image),
    the centred square for the crops."""
    policy = spec.resize_policy
    if policy == "resize" or (policy == "tiles" and spec.tiles > 1):
        return 0.0, 0.0, 1.0, 1.0
    short, size = min(height, width), spec.image_size
    if policy == "native":
        bh, bw = min(height, size), min(width, size)
    else:
        bh = bw = short if (policy == "center_crop" or short < size) else size
    return (height - bh) / 2 / height, (width - bw) / 2 / width, bh / height, bw / width


def card_pictures(det, name: str, data: bytes, explanations: list) -> dict:
    """The pictures of one card: thumbnail, and per explanation method its layer (heatmap or spectrum)."""
    from ..data.preprocess import decode_image

    arr = decode_image(data, name, max_pixels=det.max_pixels)
    uri, size, tiny = thumbnail(arr)
    member = det.route(*arr.shape[:2])[0]
    box = seen_box(member.spec, *arr.shape[:2])
    layers = {}
    for e in explanations:
        if e.method == "spectrum":
            small = max(e.attribution.shape) <= 64  # noisy: JPEG unless small (a PNG of 256 px is ~200 KB)
            img = spectrum_image(e.attribution)
            layers[e.method] = {"uri": _uri(img, "PNG") if small else _uri(img, "JPEG", quality=80), "box": None,
                                "tiny": small,
                                "caption": "Frequency spectrum of the image's fine noise (a native-resolution crop). "
                                           "Bright dots or lines away from the centre are periodic traces that "
                                           "generators' upsampling tends to leave; camera photos look smooth."}
        else:
            towards = "AI" if e.details.get("towards_ai", True) else "a real photo"
            tiles = e.details.get("tiles")
            where = (f" The model scored {tiles} tiles; their maps are placed back over the whole image"
                     + (" (greyed: parts no tile covered)." if np.isnan(e.attribution).any() else ".")
                     if tiles else "")
            layers[e.method] = {"uri": _uri(heat_layer(e.attribution)), "box": box, "tiny": False,
                                "caption": f"{dict(METHODS)[e.method]}: where the model found the evidence for "
                                           f"{towards} (red strongest, clear none).{where}"}
    return {"thumb": uri, "size": size, "tiny": tiny, "layers": layers}


# --- HTML ---------------------------------------------------------------------------------------

def _e(s) -> str:
    return html.escape(str(s), quote=True)


def _pct(x: float) -> str:
    return f"{100 * min(1.0, max(0.0, float(x))):.2f}%"


def bar(p: float, low: float, high: float) -> str:
    """P(AI) on a 0-1 bar: "real" zone, the uncertain band, "AI" zone and a marker at p."""
    label = f"P(AI) = {p:.3f}; can't tell between {low:.2f} and {high:.2f}"
    return (f'<div class="sc-bar" role="img" aria-label="{_e(label)}">'
            f'<span class="sc-zone sc-zone-real" style="left:0;width:{_pct(low)}"></span>'
            f'<span class="sc-band" style="left:{_pct(low)};width:{_pct(high - low)}" title="can\'t tell"></span>'
            f'<span class="sc-zone sc-zone-ai" style="left:{_pct(high)};width:{_pct(1 - high)}"></span>'
            f'<span class="sc-mark" style="left:{_pct(p)}"></span></div>'
            f'<div class="sc-scale" aria-hidden="true"><span>0 · real</span>'
            f'<span class="sc-bandlabel">can\'t tell {low:.2f}–{high:.2f}</span><span>AI · 1</span></div>'
            f'<p class="sc-prob">P(AI) = <b>{p:.3f}</b> <span class="sc-muted">(calibrated)</span></p>')


def _evidence(items: list[dict]) -> str:
    """Metadata items one per line; the file's history (encoder, EXIF consistency, re-save trace, watermark check)
    in one line of plain words, since it is information and never a verdict."""
    history = history_summary(items)
    file_line = (f'<p class="sc-history"><span class="sc-tag sc-tag-history">file history</span> '
                 f'{_e(history[0].upper() + history[1:])}.</p>') if history else ""
    items = [e for e in items if not is_file_history(e)]
    if not items:
        return ('<div class="sc-evidence"><p class="sc-muted">Metadata: none found (no C2PA, EXIF, PNG text or '
                f'generator watermark that says anything; absence is not evidence).</p>{file_line}</div>')
    lis = "".join(f'<li><span class="sc-tag sc-tag-{_e(e.get("indicates", ""))}">{_e(e.get("indicates", ""))}, '
                  f'{_e(e.get("strength", ""))}</span> {_e(e.get("source", ""))} '
                  f'<code>{_e(e.get("field", ""))}</code>: '
                  f'<q>{_e(e.get("value", ""))}</q> <span class="sc-muted">{_e(e.get("note", ""))}</span></li>'
                  for e in items[:8])
    more = f'<li class="sc-muted">and {len(items) - 8} more (see the full results)</li>' if len(items) > 8 else ""
    return f'<div class="sc-evidence"><p>Metadata evidence:</p><ul>{lis}{more}</ul>{file_line}</div>'


def _visual(uid: str, name: str, vis: dict | None, note: str | None) -> str:
    if vis is None:
        return ""
    w, h = vis["size"]
    frame = [f'<img class="sc-thumb{" sc-px" if vis["tiny"] else ""}" src="{vis["thumb"]}" width="{w}" '
             f'height="{h}" alt="{_e(name)}">']
    picks = [f'<input type="radio" class="sc-pick sc-p-picture" name="{uid}" id="{uid}-picture" checked>']
    labels = [f'<label for="{uid}-picture" class="sc-l-picture">Picture</label>']
    captions = []
    for method, words in METHODS:
        layer = vis["layers"].get(method)
        if layer is None:
            continue
        picks.append(f'<input type="radio" class="sc-pick sc-p-{method}" name="{uid}" id="{uid}-{method}">')
        labels.append(f'<label for="{uid}-{method}" class="sc-l-{method}">{words}</label>')
        captions.append(f'<p class="sc-caption sc-m-{method}">{_e(layer["caption"])}</p>')
        px = " sc-px" if layer["tiny"] else ""
        if layer["box"] is None:
            frame.append(f'<img class="sc-layer sc-spectrum sc-m-{method}{px}" src="{layer["uri"]}" '
                         f'alt="{_e(words)} of {_e(name)}">')
        else:
            t, l, bh, bw = layer["box"]
            frame.append(f'<img class="sc-layer sc-heat sc-m-{method}{px}" src="{layer["uri"]}" '
                         f'style="top:{_pct(t)};left:{_pct(l)};height:{_pct(bh)};width:{_pct(bw)}" '
                         f'alt="{_e(words)} heatmap over {_e(name)}">')
    out = (f'<fieldset class="sc-visual"><legend class="sc-sr">Show {_e(name)} as</legend>{"".join(picks)}'
           f'<div class="sc-frame">{"".join(frame)}</div>')
    if len(picks) > 1:
        out += f'<div class="sc-methods">{"".join(labels)}</div>{"".join(captions)}'
    if note:
        out += f'<p class="sc-caption sc-shown sc-muted">{_e(note)}</p>'
    return out + "</fieldset>"


def card(r: dict, uid: str, vis: dict | None = None, models: dict | None = None, note: str | None = None) -> str:
    """One result (as the REST API returns it) as a card."""
    name = r["file"]
    head = f'<h3 class="sc-file" id="{uid}-name">{_e(name)}</h3>'
    if "error" in r:
        return (f'<article class="sc-card sc-error" data-verdict="error" aria-labelledby="{uid}-name">'
                f'<div class="sc-body">{head}<p class="sc-verdict" style="color:{COLOURS["ai"]}">'
                f'could not check this file</p><p class="sc-problem">{_e(r["error"])}</p></div></article>')
    v = r["verdict"]
    low, high = r.get("uncertain_range") or (r.get("threshold", 0.5),) * 2
    model = (models or {}).get(r.get("model"), r.get("model"))
    body = [head, f'<p class="sc-verdict sc-v-{_e(v)}" style="color:{COLOURS.get(v, "inherit")}">'
                  f'{_e(VERDICT_WORDS.get(v, v))}</p>', bar(r["prob_ai"], low, high)]
    if r.get("reading"):
        body.append(f'<p class="sc-reading">{_e(r["reading"]["text"])}</p>')
    if r.get("reason") and r["reason"] != "pixels":
        body.append(f'<p class="sc-reason">Why this verdict: {_e(r["reason"])}</p>')
    body.append(f'<p class="sc-model" title="{_e(r.get("route") or r.get("model") or "")}">Judged by the '
                f'{_e(model)}</p>')
    if r.get("generator"):
        g = r["generator"]
        line, first = generator_note(g), f"generator: {g.get('name', 'unknown')}"
        rest = line[len(first):].strip() if line.startswith(first) else line
        body.append(f'<p class="sc-generator">Generator: <b>{_e(g.get("name", "unknown"))}</b> '
                    f'<span class="sc-muted">{_e(rest)}</span></p>')
    body += [f'<p class="sc-warning">{_e(w)}</p>' for w in r.get("warnings", [])]
    body.append(_evidence(r.get("evidence", [])))
    return (f'<article class="sc-card" data-verdict="{_e(v)}" aria-labelledby="{uid}-name">'
            f'{_visual(uid, name, vis, note)}<div class="sc-body">{"".join(body)}</div></article>')


def cards(results: list[dict], visuals: list | None = None, models: dict | None = None,
          notes: list | None = None) -> str:
    """All results as cards, with a one-line summary; `visuals[i]` / `notes[i]` belong to `results[i]`."""
    uid = "sc" + secrets.token_hex(4)  # radio groups must be unique on the page, across repeated checks
    counts = {k: sum(r.get("verdict") == k for r in results) for k in VERDICT_WORDS}
    errors = sum("error" in r for r in results)
    parts = [f"{n} {VERDICT_WORDS[k]}" for k, n in counts.items() if n]
    parts += [f"{errors} could not be read"] if errors else []
    summary = (f'<p class="sc-summary" role="status">{len(results)} image{"s" * (len(results) != 1)} checked: '
               f'{", ".join(parts)}.</p>')
    visuals, notes = list(visuals or []), list(notes or [])
    body = "".join(card(r, f"{uid}-{i}", visuals[i] if i < len(visuals) else None, models,
                        notes[i] if i < len(notes) else None) for i, r in enumerate(results))
    legend = ('<p class="sc-muted sc-footnote">P(AI) at or below the band is "likely a real photo", at or above it '
              '"likely AI-generated", inside it "can\'t tell" (each model\'s band was fitted on held-out data: for the '
              'photo model, on sources it never saw). Strong metadata (C2PA, EXIF, generator text) can override the '
              'pixel verdict.</p>')
    return f'<section id="cards" aria-label="Results">{summary}<div class="sc-cards">{body}</div>{legend}</section>'


def _css() -> str:
    per_method = []
    for m in ["picture"] + [m for m, _ in METHODS]:
        per_method.append(f".sc-p-{m}:checked ~ .sc-methods .sc-l-{m}"
                          "{background:var(--button-primary-background-fill,#2563eb);"
                          "color:var(--button-primary-text-color,#fff);border-color:transparent}")
        per_method.append(f".sc-p-{m}:focus-visible ~ .sc-methods .sc-l-{m}"
                          "{outline:3px solid var(--color-accent,#2563eb);outline-offset:2px}")
        if m != "picture":
            per_method.append(f".sc-p-{m}:checked ~ .sc-frame .sc-m-{m},.sc-p-{m}:checked ~ .sc-m-{m}{{display:block}}")
    return CSS + "\n".join(per_method)


CSS = """
#cards{max-width:100%}
.sc-cards{display:grid;align-items:start;grid-template-columns:repeat(auto-fill,minmax(min(100%,34rem),1fr));
  gap:1rem;margin:.5rem 0}
.sc-card{display:flex;flex-wrap:wrap;gap:1rem;padding:1rem;border:1px solid var(--border-color-primary,#ddd);
  border-radius:.75rem;background:var(--block-background-fill,#fff);min-width:0;overflow-wrap:anywhere}
.sc-card.sc-error{border-color:#b03a2e;border-width:2px}
.sc-visual{flex:0 1 16rem;min-width:0;margin:0;padding:0;border:0;position:relative}
.sc-body{flex:1 1 14rem;min-width:0}
.sc-frame{position:relative;width:100%;max-width:16rem;line-height:0;background:#0001;border-radius:.4rem;
  overflow:hidden}
.sc-thumb{display:block;width:100%;height:auto}
.sc-px{image-rendering:pixelated}
.sc-layer{display:none;position:absolute}
.sc-spectrum{inset:0;width:100%;height:100%;object-fit:contain;background:#000}
.sc-sr{position:absolute;width:1px;height:1px;overflow:hidden;clip:rect(0 0 0 0);white-space:nowrap}
.sc-card .sc-pick{position:absolute;opacity:0;width:1px;height:1px;margin:0;pointer-events:none}
.sc-methods{display:flex;flex-wrap:wrap;gap:.3rem;margin:.5rem 0 .25rem}
.sc-methods label{cursor:pointer;padding:.25rem .6rem;border:1px solid var(--border-color-primary,#bbb);
  border-radius:999px;font-size:.85rem;line-height:1.3;user-select:none}
.sc-caption{display:none;font-size:.8rem;margin:.25rem 0;max-width:16rem;line-height:1.35}
.sc-caption.sc-shown{display:block}
.sc-file{font-size:1rem;margin:0 0 .25rem;font-weight:600}
.sc-verdict{font-size:1.35rem;font-weight:700;margin:0 0 .5rem}
.sc-bar{position:relative;height:.9rem;border-radius:.45rem;overflow:visible;background:#8882;margin:.9rem 0 .2rem}
.sc-zone,.sc-band{position:absolute;top:0;bottom:0}
.sc-zone-real{background:#1e7b4555;border-radius:.45rem 0 0 .45rem}
.sc-zone-ai{background:#b03a2e55;border-radius:0 .45rem .45rem 0}
.sc-band{background:repeating-linear-gradient(45deg,#d4a01766 0 6px,#d4a01733 6px 12px);
  border-left:2px solid #9a6408;border-right:2px solid #9a6408}
.sc-mark{position:absolute;top:-.35rem;bottom:-.35rem;width:4px;margin-left:-2px;border-radius:2px;
  background:var(--body-text-color,#111);box-shadow:0 0 0 2px var(--block-background-fill,#fff)}
.sc-scale{display:flex;justify-content:space-between;gap:.5rem;font-size:.75rem;opacity:.8}
.sc-prob{margin:.35rem 0}
.sc-muted{opacity:.75;font-size:.85em}
.sc-model,.sc-generator,.sc-reading,.sc-reason,.sc-warning,.sc-problem{margin:.35rem 0}
.sc-warning{color:#9a6408}
.sc-evidence{margin:.35rem 0;font-size:.9rem}
.sc-evidence p{margin:0}
.sc-evidence ul{margin:.2rem 0 0 1.1rem;padding:0}
.sc-tag{display:inline-block;font-size:.75rem;padding:0 .35rem;border-radius:.3rem;background:#8883}
.sc-tag-ai{background:#b03a2e33}.sc-tag-camera{background:#1e7b4533}.sc-tag-history{background:#5a6b7d33}
.sc-summary{font-weight:600}
.sc-footnote{font-size:.8rem}
@media (max-width:480px){.sc-card{padding:.75rem}.sc-visual{flex-basis:100%}.sc-frame,.sc-caption{max-width:100%}}
"""

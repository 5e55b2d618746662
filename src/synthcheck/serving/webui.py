"""The web page: a Gradio front end over `service.Service` (the same calls as the REST API).

One card per image: its thumbnail, the verdict in words, P(AI) on a bar with the uncertain band marked,
the model that judged it in plain words, the metadata evidence, and the generator when attribution names
one. The explanation is a whole-image heatmap over the picture (for a tiled model, the tile maps placed
back where the tiles were), with a toggle between the methods (plain CSS radio buttons: keyboard
accessible, no script).

Works offline and serves nothing extra: Gradio's front end ships in its wheel, the theme uses system
fonts (no Google Fonts request), analytics are off, server-side rendering (which needs Node) is off, and
the pictures are inlined as small data URIs (nothing is written to disk for them). Every string that comes
from a client or from a file (names, metadata, errors) is HTML-escaped. The cards themselves are drawn by
`cards`; this module builds the page and runs each upload through the service.
"""

from __future__ import annotations

import asyncio
import logging
import os
from pathlib import Path

os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")

import gradio as gr  # noqa: E402

from .cards import METHODS, _css, _e, _members, card_pictures, cards, model_words  # noqa: E402

log = logging.getLogger("synthcheck.webui")

SAMPLES = Path(__file__).resolve().parents[1] / "samples"
EXPLAIN_AT_MOST = 6  # images per upload that get explanations (Grad-CAM, Grad-CAM++, spectrum; ~0.1-1 s each)


# --- the page -----------------------------------------------------------------------------------

def _intro(det) -> str:
    members = getattr(det, "members", None)
    if members:
        models = "; ".join(f"{model_words(m)} for {'small images' if m.spec.image_size < 128 else 'photos'}"
                           for m in members.values())
        which = f"Each image goes to the model made for its size: {models}."
    else:
        which = f"Model: {model_words(det)}."
    return (f'<h2 style="margin:0">SynthCheck: is this image AI-generated?</h2>'
            f'<p>Drop images on the box below, or select it (click, or Tab then Enter) to choose files. Each image '
            f'gets a card with the verdict, how sure the model is, and why. {_e(which)} Nothing leaves this '
            f'server.</p>')


def build_ui(service) -> gr.Blocks:
    det = service.detector
    limit = int(service.settings.max_request_mb * 1024 * 1024)
    models = {k: model_words(m) for k, m in _members(det).items()}
    methods = [m for m, _ in METHODS]

    async def analyse(paths):
        if not paths:
            return '<p id="cards-empty">Drop one or more images above.</p>', {}, None
        paths = paths if isinstance(paths, list) else [paths]
        files, gone, over = [], set(), []
        for p in paths[service.settings.max_files:]:  # not checked: their copies are not kept either
            p = Path(p)
            over.append(p.name)
            if p.is_file() and not _is_example(p, p.read_bytes()):
                p.unlink(missing_ok=True)
        for p in paths[: service.settings.max_files]:
            p = Path(p)
            if not p.is_file():
                gone.add(len(files))
                files.append((p.name, b""))
                continue
            size = p.stat().st_size
            # Gradio stored the upload under a random folder; only its base name is shown
            data = p.read_bytes() if size <= limit else b""
            files.append((p.name, data))
            if not _is_example(p, data):  # the upload's copy on disk is not kept: removed once read
                p.unlink(missing_ok=True)
        results = await service.detect(files)
        for i, ((name, data), r) in enumerate(zip(files, results)):
            if i in gone:
                r["error"] = "the upload is gone (each upload is deleted once checked): drop the file again"
            elif not data and "error" in r:
                r["error"] = f"over the upload limit of {service.settings.max_request_mb:g} MB"
        results += [{"file": name, "error": f"over the limit of {service.settings.max_files} files per check: "
                                            "drop it again with fewer"} for name in over]
        loop = asyncio.get_running_loop()
        pictures, notes, explained = [], [], 0
        for (name, data), r in zip(files, results):
            if "error" in r:
                pictures.append(None)
                notes.append(None)
                continue
            expls, note = [], None
            if explained < EXPLAIN_AT_MOST:
                explained += 1
                try:  # on the model thread, like every model call of the server
                    expls = await service.worker.run(det.explain, data, methods, name)
                except Exception:
                    log.exception("explaining %s failed", name)
                    note = "No explanation: it failed on this image (the verdict stands)."
            else:
                note = (f"Explanations are made for the first {EXPLAIN_AT_MOST} images of an upload; "
                        "check this one on its own to see why.")
            try:
                pictures.append(await loop.run_in_executor(service.decoders, card_pictures, det, name, data, expls))
            except Exception:
                log.exception("drawing %s failed", name)
                pictures.append(None)
            notes.append(note)
        return cards(results, pictures, models, notes), {"model": det.model_id, "results": results}, None

    with gr.Blocks(title="SynthCheck", analytics_enabled=False, delete_cache=(3600, 3600)) as ui:
        gr.HTML(_intro(det), elem_id="intro")
        files = gr.File(label="Images to check", file_count="multiple", type="filepath", elem_id="upload", height=140)
        out = gr.HTML('<p id="cards-empty">Results appear here as one card per image.</p>', elem_id="verdicts",
                      render=False)
        details = gr.JSON(show_label=False, render=False)
        if SAMPLES.is_dir():
            gr.Examples([[[str(p)]] for p in sorted(SAMPLES.glob("*.jpg"))], inputs=[files], fn=analyse,
                        outputs=[out, details, files], run_on_click=True, cache_examples=False,
                        label="Or try an example (CIFAKE test images and one DiffusionDB image)")
        out.render()
        with gr.Accordion("Full results (as the REST API returns them)", open=False):
            details.render()
        files.upload(analyse, inputs=files, outputs=[out, details, files])
    return ui


def _is_example(path: Path, data: bytes) -> bool:
    """Gradio serves the example images from its cache too; those copies must stay."""
    sample = SAMPLES / path.name
    return sample.is_file() and sample.stat().st_size == len(data) and sample.read_bytes() == data


def mount_ui(app, service):
    """Mount the page at / on the API's FastAPI app (routes defined before stay first)."""
    theme = gr.themes.Default(font=["system-ui", "-apple-system", "Segoe UI", "sans-serif"],
                              font_mono=["ui-monospace", "monospace"])
    return gr.mount_gradio_app(app, build_ui(service), path="/", theme=theme, css=_css(), ssr_mode=False,
                               allowed_paths=[str(SAMPLES)], footer_links=["api"],
                               max_file_size=int(service.settings.max_request_mb * 1024 * 1024))

"""The web page: a thin Gradio front end over `service.Service` (the same calls as the REST API).

Works offline: Gradio's front end ships in its wheel, the theme uses system fonts (no Google Fonts
request), analytics are off and server-side rendering (which needs Node) is off.
"""

from __future__ import annotations

import html
import io
import os
from pathlib import Path

os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")

import gradio as gr  # noqa: E402
from PIL import Image  # noqa: E402

from ..inference.attribution import generator_note  # noqa: E402

SAMPLES = Path(__file__).resolve().parents[1] / "samples"
EXPLAIN_AT_MOST = 6  # images per upload that get Grad-CAM + spectrum figures (each costs ~0.1-0.3 s)
COLOURS = {"ai": "#c0392b", "real": "#1e8449", "uncertain": "#b9770e"}


def _is_example(path: Path, data: bytes) -> bool:
    """Gradio serves the example images from its cache too; those copies must stay."""
    sample = SAMPLES / path.name
    return sample.is_file() and sample.stat().st_size == len(data) and sample.read_bytes() == data


def _table(results: list[dict]) -> str:
    """Verdict table; every client-supplied string is HTML-escaped (file names are data, not markup)."""
    rows = []
    for r in results:
        name = html.escape(r["file"])
        if "error" in r:
            rows.append(f'<tr class="result" data-verdict="error"><td class="file">{name}</td>'
                        f'<td class="verdict">error</td><td class="prob">–</td><td class="threshold">–</td>'
                        f'<td class="notes">{html.escape(r["error"])}</td></tr>')
            continue
        v = r["verdict"]
        notes = [f'model {r["model"]}: {r["route"]}'] if r.get("route") else []
        notes += [r["reason"]] if r.get("reason") else []
        notes += r.get("warnings", [])
        notes += [generator_note(r["generator"])] if r.get("generator") else []
        notes += [f'{e["source"]} {e["field"]} = {e["value"]} ({e["indicates"]}, {e["strength"]})'
                  for e in r.get("evidence", [])[:4]]
        rows.append(f'<tr class="result" data-verdict="{v}"><td class="file">{name}</td>'
                    f'<td class="verdict" style="color:{COLOURS.get(v, "#000")};font-weight:bold">{v}</td>'
                    f'<td class="prob">{r["prob_ai"]:.3f}</td>'
                    f'<td class="threshold">{r["uncertain_range"][0]:.3f} – {r["uncertain_range"][1]:.3f}</td>'
                    f'<td class="notes">{"<br>".join(html.escape(str(n)) for n in notes)}</td></tr>')
    return ('<table id="verdict-table"><thead><tr><th>file</th><th>verdict</th><th>P(AI), calibrated</th>'
            f'<th>uncertain between</th><th>notes</th></tr></thead><tbody>{"".join(rows)}</tbody></table>'
            '<p>P(AI) at or below the first number is "real", at or above the second "ai", in between "uncertain" '
            '(each model\'s band was fitted on held-out data: for the photo model, on sources it never saw). '
            'Metadata (C2PA, EXIF, generator text) can override the pixel verdict.</p>')


def build_ui(service) -> gr.Blocks:
    det = service.detector
    limit = int(service.settings.max_request_mb * 1024 * 1024)

    async def analyse(paths):
        if not paths:
            return "<p>Drop one or more images above.</p>", [], {}
        paths = paths if isinstance(paths, list) else [paths]
        files = []
        for p in paths[: service.settings.max_files]:
            p = Path(p)
            size = p.stat().st_size
            # Gradio stored the upload under a random folder; only its base name is shown
            data = p.read_bytes() if size <= limit else b""
            files.append((p.name, data))
            if not _is_example(p, data):  # the upload's copy on disk is not kept: removed once read
                p.unlink(missing_ok=True)
        results = await service.detect(files)
        for (name, data), r in zip(files, results):
            if not data and "error" in r:
                r["error"] = f"over the upload limit of {service.settings.max_request_mb:g} MB"
        gallery = []
        for (name, data), r in list(zip(files, results)):
            if "error" in r or len(gallery) >= 2 * EXPLAIN_AT_MOST:
                continue
            for expl, png in await service.explain(name, data, ["gradcam", "spectrum"]):
                gallery.append((Image.open(io.BytesIO(png)), f"{name}: {expl.method}"))
        return _table(results), gallery, {"model": det.model_id, "results": results}

    with gr.Blocks(title="SynthCheck", analytics_enabled=False, delete_cache=(3600, 3600)) as ui:
        gr.Markdown(f"## SynthCheck: is this image AI-generated?\nModel `{det.describe()}`. "
                    "Drop images, then press **Check**. "
                    "Nothing leaves this server.")
        with gr.Row():
            files = gr.File(label="Images", file_count="multiple", type="filepath", elem_id="upload")
            with gr.Column():
                check = gr.Button("Check", variant="primary", elem_id="check")
                if SAMPLES.is_dir():
                    gr.Examples([[[str(p)]] for p in sorted(SAMPLES.glob("*.jpg"))], inputs=[files],
                                label="Examples (CIFAKE test images and one DiffusionDB image)")
        verdicts = gr.HTML(elem_id="verdicts")
        gallery = gr.Gallery(label="Why: Grad-CAM (where the evidence is) and residual spectrum", columns=1,
                             object_fit="contain", height="auto", elem_id="explanations")
        details = gr.JSON(label="Full results (as the REST API returns them)")
        check.click(analyse, inputs=files, outputs=[verdicts, gallery, details])
    return ui


def mount_ui(app, service):
    """Mount the page at / on the API's FastAPI app (routes defined before stay first)."""
    theme = gr.themes.Default(font=["system-ui", "-apple-system", "Segoe UI", "sans-serif"],
                              font_mono=["ui-monospace", "monospace"])
    return gr.mount_gradio_app(app, build_ui(service), path="/", theme=theme, ssr_mode=False,
                               allowed_paths=[str(SAMPLES)], footer_links=["api"],
                               max_file_size=int(service.settings.max_request_mb * 1024 * 1024))

"""End to end in a real browser: headless Chromium loads the page from `synthcheck serve`, uploads images
(by keyboard, and by drag and drop), and reads the cards the page shows: thumbnail, verdict in words, the
P(AI) bar with its uncertain band, the model in plain words, and the whole-image heatmap over the picture
with its method toggle; then the same page on a phone-sized viewport. Every request must stay on the server.

Saves the screenshots the docs use (cards.png, overlay.png, phone.png): to $SYNTHCHECK_SCREENSHOTS when set
(`SYNTHCHECK_SCREENSHOTS=docs/screenshots pytest tests/test_browser.py` refreshes the committed ones), else to
the test output folder. Skips (saying why) where Chromium or Playwright is absent; .ci/run installs both, so CI
runs it."""

from __future__ import annotations

import base64
import io
import os
import shutil
from pathlib import Path

import pytest

from synthcheck.inference.detector import Detector
from synthcheck.inference.metadata import history_summary, is_file_history

ROOT = Path(__file__).resolve().parents[1]
SAMPLES = ROOT / "src" / "synthcheck" / "samples"
OUTPUT = Path(os.environ.get("SYNTHCHECK_TEST_OUTPUT", ROOT / "test-output")) / "browser"
SCREENSHOTS = Path(os.environ["SYNTHCHECK_SCREENSHOTS"]) if os.environ.get("SYNTHCHECK_SCREENSHOTS") else OUTPUT
MAX_PNG = 300_000  # bytes per committed screenshot
CHROMIUM = os.environ.get("CHROMIUM") or shutil.which("chromium") or "/usr/bin/chromium"
# Chromium's own background traffic is refused on a closed network; these flags turn it off
ARGS = ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking",
        "--disable-component-update", "--disable-sync", "--disable-dev-shm-usage"]
WAIT = 180_000  # ms: explanations of a full-size photo take seconds on a busy 2-core machine
PHOTO = SAMPLES / "ai_diffusiondb_diffusion_000225.jpg"

sync_api = pytest.importorskip("playwright.sync_api", reason="playwright not installed (pip install -e '.[test]')")
pytestmark = [pytest.mark.slow,
              pytest.mark.skipif(not Path(CHROMIUM).exists(),
                                 reason=f"no Chromium at {CHROMIUM}: apt-get install chromium (.ci/run does)")]


@pytest.fixture(scope="module")
def browser():
    with sync_api.sync_playwright() as pw:
        b = pw.chromium.launch(executable_path=CHROMIUM, args=ARGS)
        yield b
        b.close()


@pytest.fixture(scope="module")
def predictions(tmp_path_factory):
    """What the library says about the images the test uploads (the page must show the same): three samples
    and a file that is not one of the examples (its uploaded copy must be gone once it has been scored), a PNG
    whose Stable Diffusion WebUI text is metadata evidence naming the generator."""
    from PIL import Image
    from PIL.PngImagePlugin import PngInfo

    own = tmp_path_factory.mktemp("uploads") / "my upload.png"
    info = PngInfo()
    info.add_text("parameters", "a lighthouse at dusk\nSteps: 20, Sampler: Euler a, CFG scale: 7, Seed: 1, Model: v1-5")
    Image.open(SAMPLES / "ai_cifake_296_10.jpg").transpose(Image.FLIP_LEFT_RIGHT).save(own, pnginfo=info)
    paths = [SAMPLES / "ai_cifake_296_10.jpg", SAMPLES / "real_cifake_0296_8.jpg", PHOTO, own]
    return {p: pred for p, pred in zip(paths, Detector.load().predict([str(p) for p in paths]))}


def open_page(browser, url: str, width: int, height: int):
    """A fresh page on the server; returns it, the list that collects any request to another host, and the
    list of the file choosers it opens."""
    page = browser.new_page(viewport={"width": width, "height": height})
    choosers: list = []  # file choosers the page opened
    page.on("filechooser", lambda chooser: choosers.append(chooser))
    outside: list[str] = []
    # the page must work offline: every request it makes stays on this server
    page.on("request", lambda req: outside.append(req.url)
            if not req.url.startswith((url + "/", "data:", "blob:")) else None)
    page.goto(url + "/", wait_until="networkidle")
    return page, outside, choosers


def save_png(png: bytes, name: str) -> Path:
    """Write a screenshot, fewer colours if it would pass MAX_PNG (the docs keep these in git)."""
    from PIL import Image

    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    if len(png) > MAX_PNG:
        buf = io.BytesIO()
        Image.open(io.BytesIO(png)).convert("RGB").quantize(256, method=Image.Quantize.MEDIANCUT).save(
            buf, "PNG", optimize=True)
        png = buf.getvalue()
    path = SCREENSHOTS / name
    path.write_bytes(png)
    assert len(png) <= MAX_PNG, (name, len(png))
    return path


def fraction(inner, outer) -> tuple[float, float, float, float]:
    """(left, top, width, height) of one element's box as fractions of another's."""
    a, b = inner.bounding_box(), outer.bounding_box()
    return ((a["x"] - b["x"]) / b["width"], (a["y"] - b["y"]) / b["height"], a["width"] / b["width"],
            a["height"] / b["height"])


def test_cards_overlay_and_keyboard_upload(server, browser, predictions, tmp_path):
    url, proc, server_tmp = server
    from synthcheck.serving.cards import VERDICT_WORDS

    broken = tmp_path / "broken & 'odd' name.jpg"
    broken.write_bytes(b"not an image at all")
    want = {p.name: pred for p, pred in predictions.items()}
    files = [str(p) for p in predictions] + [str(broken)]

    page, outside, choosers = open_page(browser, url, 1440, 900)
    # keyboard: Tab reaches the drop zone, Enter opens the file chooser
    for _ in range(10):
        page.keyboard.press("Tab")
        if page.evaluate("!!document.activeElement.closest('#upload')"):
            break
    focused = page.evaluate("[!!document.activeElement.closest('#upload'), "
                            "document.activeElement.outerHTML.slice(0, 200)]")
    assert focused[0], f"Tab does not reach the upload control; focus is on {focused[1]}"
    assert page.evaluate("document.activeElement.getAttribute('aria-label')"), "the upload control has no name"
    # (the chooser is caught by a listener set before the page loaded: `expect_file_chooser` set up only now
    # sometimes misses it)
    page.keyboard.press("Enter")
    for _ in range(100):
        if choosers:
            break
        page.wait_for_timeout(100)
    assert choosers, "Enter on the upload control opens no file chooser"
    choosers[0].set_files(files)
    cards = page.locator("#cards article.sc-card")
    cards.nth(len(files) - 1).wait_for(timeout=WAIT)
    assert cards.count() == len(files)

    seen = {}
    for i in range(cards.count()):
        c = cards.nth(i)
        name = c.locator(".sc-file").inner_text()
        seen[name] = c
    assert set(seen) == {Path(f).name for f in files}, sorted(seen)

    for name, pred in want.items():
        c = seen[name]
        assert c.get_attribute("data-verdict") == pred.verdict
        assert c.locator(".sc-verdict").inner_text() == VERDICT_WORDS[pred.verdict]
        # the thumbnail: inlined, loaded, at most 256 px a side
        thumb = c.locator("img.sc-thumb")
        assert thumb.get_attribute("src").startswith("data:image/")
        w, h = thumb.evaluate("i => [i.naturalWidth, i.naturalHeight]")
        assert 0 < w <= 256 and 0 < h <= 256
        # the bar: the band where the model can't tell, the marker at P(AI)
        bar = c.locator(".sc-bar")
        low, high = pred.uncertain_range
        box = bar.bounding_box()
        band, mark = c.locator(".sc-band").bounding_box(), c.locator(".sc-mark").bounding_box()
        assert abs((band["x"] - box["x"]) / box["width"] - low) < 0.02
        assert abs((band["x"] + band["width"] - box["x"]) / box["width"] - high) < 0.02
        assert abs((mark["x"] + mark["width"] / 2 - box["x"]) / box["width"] - pred.prob_ai) < 0.02
        assert f"{pred.prob_ai:.3f}" in c.locator(".sc-prob").inner_text()
        assert "can't tell" in bar.get_attribute("aria-label")
        model = c.locator(".sc-model").inner_text()
        assert ("full-size photo model (MobileNetV2" if name == PHOTO.name else "CIFAKE 32-px model") in model
        if pred.generator:
            assert pred.generator["name"] in c.locator(".sc-generator").inner_text()
        assert c.locator(".sc-evidence").count() == 1
        for e in pred.evidence:
            if not is_file_history(e):
                assert e["value"][:20] in c.locator(".sc-evidence").inner_text()
        if history_summary(pred.evidence):
            assert history_summary(pred.evidence)[1:40] in c.locator(".sc-history").inner_text()
    assert "metadata" in seen["my upload.png"].locator(".sc-reason").inner_text()
    error = seen[broken.name]
    assert error.get_attribute("data-verdict") == "error"
    assert "could not check this file" in error.inner_text() and "not a supported image" in error.inner_text()
    # file names are text: the odd name shows as written, and nothing it holds became markup
    assert page.locator("#cards img:not(.sc-thumb):not(.sc-layer)").count() == 0
    save_png(page.locator("#cards").screenshot(), "cards.png")

    # the overlay: the photo model's tile maps stitched over the whole picture; the toggle switches method
    photo = seen[PHOTO.name]
    heat, spec = photo.locator("img.sc-m-gradcam"), photo.locator("img.sc-m-spectrum")
    assert not heat.is_visible() and not spec.is_visible()  # the picture alone to start with
    photo.locator("label.sc-l-gradcam").click()
    assert heat.is_visible() and not spec.is_visible()
    assert heat.get_attribute("src").startswith("data:image/png")
    left, top, width, height = fraction(heat, photo.locator("img.sc-thumb"))
    assert abs(left) < 0.01 and abs(top) < 0.01 and abs(width - 1) < 0.01 and abs(height - 1) < 0.01  # whole image
    caption = photo.locator("p.sc-m-gradcam")
    assert caption.is_visible() and "16 tiles" in caption.inner_text()
    save_png(photo.screenshot(), "overlay.png")
    photo.locator("label.sc-l-spectrum").click()
    assert spec.is_visible() and not heat.is_visible()
    # and by keyboard: the methods are radio buttons, arrow keys move between them
    photo.locator("input.sc-p-spectrum").focus()
    page.keyboard.press("ArrowLeft")
    assert photo.locator("img.sc-m-gradcampp").is_visible() and not spec.is_visible()
    # a CIFAKE card's map covers its whole 32-px picture too
    cifake = seen["ai_cifake_296_10.jpg"]
    cifake.locator("label.sc-l-gradcam").click()
    assert cifake.locator("img.sc-m-gradcam").is_visible()
    # an example runs on click, and its card replaces the others
    page.locator("#upload").scroll_into_view_if_needed()
    page.get_by_role("button", name="real_cifake_0102_4.jpg").click()
    page.locator("#cards h3.sc-file", has_text="real_cifake_0102_4.jpg").wait_for(timeout=WAIT)
    assert cards.count() == 1
    page.close()

    assert outside == [], outside
    assert proc.poll() is None
    for name in ("my upload.png", broken.name):
        assert not [p for p in server_tmp.rglob(name)], f"the page kept a copy of {name}"


def test_phone_viewport_and_drag_and_drop(server, browser, predictions):
    url, proc, _ = server
    page, outside, _ = open_page(browser, url, 390, 844)
    assert page.evaluate("document.documentElement.scrollWidth <= innerWidth"), "the empty page scrolls sideways"
    names = [PHOTO.name, "real_cifake_0296_8.jpg"]
    payload = [[n, base64.b64encode((SAMPLES / n).read_bytes()).decode()] for n in names]
    # drag and drop: a DataTransfer holding the files, dropped on the upload zone as a desktop browser would
    transfer = page.evaluate_handle("""files => { const dt = new DataTransfer();
        for (const [name, b64] of files) {
            const bytes = Uint8Array.from(atob(b64), c => c.charCodeAt(0));
            dt.items.add(new File([bytes], name, {type: 'image/jpeg'}));
        }
        return dt; }""", payload)
    zone = "#upload button.upload-container"
    for event in ("dragenter", "dragover", "drop"):
        page.dispatch_event(zone, event, {"dataTransfer": transfer})
    cards = page.locator("#cards article.sc-card")
    cards.nth(len(names) - 1).wait_for(timeout=WAIT)
    assert [cards.nth(i).locator(".sc-file").inner_text() for i in range(cards.count())] == names
    for i, name in enumerate(names):
        assert cards.nth(i).get_attribute("data-verdict") == predictions[SAMPLES / name].verdict

    photo = cards.nth(0)
    photo.locator("label.sc-l-gradcam").click()
    assert photo.locator("img.sc-m-gradcam").is_visible()
    # readable at 390 px: nothing wider than the screen, the cards one above the other, picture above the words
    assert page.evaluate("document.documentElement.scrollWidth <= innerWidth"), \
        page.evaluate("[document.documentElement.scrollWidth, innerWidth]")
    boxes = [cards.nth(i).bounding_box() for i in range(cards.count())]
    for b in boxes:
        assert b["x"] >= 0 and b["x"] + b["width"] <= 390
    assert boxes[1]["y"] >= boxes[0]["y"] + boxes[0]["height"]
    thumb, words = photo.locator("img.sc-thumb").bounding_box(), photo.locator(".sc-body").bounding_box()
    assert words["y"] >= thumb["y"] + thumb["height"]
    page.locator("#cards .sc-summary").scroll_into_view_if_needed()
    page.evaluate("window.scrollBy(0, document.querySelector('#cards').getBoundingClientRect().top - 8)")
    save_png(page.screenshot(), "phone.png")
    page.close()
    assert outside == [], outside
    assert proc.poll() is None

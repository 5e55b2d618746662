"""End to end in a real browser: headless Chromium loads the page from `synthcheck serve`, uploads an
image, and reads the verdict the page shows. Skips (saying why) where Chromium or Playwright is absent;
.ci/run installs both, so CI runs it."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

from synthcheck.inference.detector import Detector

ROOT = Path(__file__).resolve().parents[1]
SAMPLES = ROOT / "src" / "synthcheck" / "samples"
OUTPUT = Path(os.environ.get("SYNTHCHECK_TEST_OUTPUT", ROOT / "test-output")) / "browser"
CHROMIUM = os.environ.get("CHROMIUM") or shutil.which("chromium") or "/usr/bin/chromium"
# Chromium's own background traffic is refused on a closed network; these flags turn it off
ARGS = ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking",
        "--disable-component-update", "--disable-sync", "--disable-dev-shm-usage"]

sync_api = pytest.importorskip("playwright.sync_api", reason="playwright not installed (pip install -e '.[test]')")
pytestmark = [pytest.mark.slow,
              pytest.mark.skipif(not Path(CHROMIUM).exists(),
                                 reason=f"no Chromium at {CHROMIUM}: apt-get install chromium (.ci/run does)")]


def test_page_uploads_an_image_and_shows_the_verdict(server, tmp_path):
    url, proc, server_tmp = server
    OUTPUT.mkdir(parents=True, exist_ok=True)
    images = [SAMPLES / "ai_cifake_296_10.jpg", SAMPLES / "real_cifake_0296_8.jpg"]
    # a file that is not one of the examples: its uploaded copy must be gone once it has been scored
    own = tmp_path / "my upload.png"
    from PIL import Image

    Image.open(images[0]).convert("RGB").transpose(Image.FLIP_LEFT_RIGHT).save(own)
    images.append(own)
    want = {p.name: r.verdict for p, r in zip(images, Detector.load().predict([str(p) for p in images]))}
    outside = []
    with sync_api.sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, args=ARGS)
        page = browser.new_page(viewport={"width": 1280, "height": 1400})
        # the page must work offline: every request it makes stays on this server
        page.on("request", lambda req: outside.append(req.url)
                if not req.url.startswith((url, "data:", "blob:")) else None)
        page.goto(url + "/", wait_until="networkidle")
        page.locator("#upload input[type=file]").set_input_files([str(p) for p in images])
        page.locator("#check").click()
        rows = page.locator("#verdict-table tr.result")
        rows.nth(len(images) - 1).wait_for(timeout=60_000)
        seen = {rows.nth(i).locator("td.file").inner_text(): rows.nth(i).locator("td.verdict").inner_text()
                for i in range(rows.count())}
        page.locator("#explanations img").first.wait_for(timeout=60_000)
        n_figures = page.locator("#explanations img").count()
        page.screenshot(path=str(OUTPUT / "verdict.png"), full_page=True)
        browser.close()
    assert seen == want, seen
    assert n_figures >= 2  # Grad-CAM and spectrum figures for the uploads
    assert outside == [], outside
    assert proc.poll() is None
    assert not [p for p in server_tmp.rglob("my upload.png")], "the page kept a copy of the upload"

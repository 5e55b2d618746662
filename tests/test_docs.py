"""The documentation site builds strictly (a broken link or anchor fails) and requests nothing from outside.

`mkdocs build --strict` turns every warning into a failure: links to missing pages, files or anchors,
a page left out of the navigation, an include whose file is gone, a docstring that cannot be rendered.
The built HTML must then load nothing from another host (no web fonts, no CDN scripts or styles): the
site has to read the same offline as online.
"""

from __future__ import annotations

import importlib.util
import os
import re
import subprocess
import sys
from html.parser import HTMLParser
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]

pytestmark = pytest.mark.skipif(
    importlib.util.find_spec("mkdocs") is None or importlib.util.find_spec("mkdocstrings") is None,
    reason="mkdocs/mkdocstrings not installed: pip install -e '.[docs]' (the test extra includes them)")

# attributes through which a page makes the browser fetch something (links in prose, <a href>, are fine)
FETCHING = {"link": ("href",), "script": ("src",), "img": ("src", "srcset"), "iframe": ("src",),
            "source": ("src", "srcset"), "video": ("src", "poster"), "audio": ("src",), "embed": ("src",),
            "object": ("data",)}
OUTSIDE = re.compile(r"^\s*(https?:)?//", re.I)


class Fetches(HTMLParser):
    def __init__(self):
        super().__init__()
        self.outside: list[str] = []
        self.mermaid = False  # a .mermaid block makes the theme fetch mermaid.js from a CDN

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        for name in FETCHING.get(tag, ()):
            value = attrs.get(name) or ""
            if any(OUTSIDE.match(part) for part in value.split(",")):
                self.outside.append(f"<{tag} {name}={value!r}>")
        if "mermaid" in (attrs.get("class") or "").split():
            self.mermaid = True


@pytest.fixture(scope="module")
def site(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("site")
    env = dict(os.environ, NO_MKDOCS_2_WARNING="1")
    proc = subprocess.run([sys.executable, "-m", "mkdocs", "build", "--strict", "--config-file",
                           str(ROOT / "mkdocs.yml"), "--site-dir", str(out)],
                          cwd=ROOT, env=env, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, f"mkdocs build --strict failed:\n{proc.stdout}\n{proc.stderr}"
    return out


def test_site_builds_strictly_with_every_page(site):
    pages = sorted(p.relative_to(site).as_posix() for p in site.rglob("index.html"))
    for expected in ("index.html", "getting-started/index.html", "guides/serving/index.html",
                     "models/default/index.html", "models/photo/index.html", "studies/photo-v2/index.html",
                     "benchmarks/index.html", "architecture/index.html", "reference/api/index.html",
                     "changelog/index.html"):
        assert expected in pages, pages
    api = (site / "reference/api/index.html").read_text(encoding="utf-8")
    assert 'id="synthcheck.Detector"' in api and 'id="synthcheck.Prediction"' in api
    assert 'id="synthcheck.Detector.predict"' in api
    # the model pages carry the bundled models' cards, read from the package at build time
    assert "Model card" in (site / "models/photo/index.html").read_text(encoding="utf-8")
    # the reports' plots are published beside the pages that show them
    assert (site / "reports/photo_v2/crossval.png").is_file()


def test_built_site_requests_nothing_from_outside(site):
    outside, mermaid = [], []
    for page in sorted(site.rglob("*.html")):
        parser = Fetches()
        parser.feed(page.read_text(encoding="utf-8"))
        outside += [f"{page.relative_to(site)}: {tag}" for tag in parser.outside]
        if parser.mermaid:
            mermaid.append(str(page.relative_to(site)))
    assert not outside, "pages load from other hosts:\n" + "\n".join(outside)
    assert not mermaid, f"mermaid blocks (the theme loads mermaid.js from a CDN): {mermaid}"
    for css in site.rglob("*.css"):
        text = css.read_text(encoding="utf-8", errors="replace")
        assert not re.search(r"(@import|url\()\s*['\"]?(https?:)?//", text, re.I), f"{css} loads from outside"

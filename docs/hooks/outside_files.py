"""MkDocs hooks: bring files that live outside docs/ into the site, and keep links to them working.

- `<!-- include: PATH [shift=N] [notitle] -->` on a line of its own is replaced at build time by the
  file at PATH (relative to the page, as a link would be; e.g. `../BENCHMARKS.md`,
  `../../reports/x/README.md`), its headings moved N levels down, without its first-level title
  with `notitle` (when the page has its own). Read at every build, so the page never drifts from the file.
- `<!-- model-card: NAME -->` is replaced by the card of the bundled model NAME, found inside the
  installed package (wherever the package keeps its weights), headings moved one level down.
- Every file under reports/ that is not Markdown (plots, JSON, CSV, lists) is published at the same
  path (`reports/...`), so pages can show the plots and link the raw figures.
- Links are written as they work on GitHub (relative to the file's real place in the repository) and
  rewritten here to their place in the site: a link to an included file goes to the page that
  includes it, a link to a report's plot to its published copy. Anything else is left for MkDocs to
  check (`mkdocs build --strict` fails on a broken link).

Nothing here reaches the network.
"""

from __future__ import annotations

import importlib.util
import os
import posixpath
import re
from pathlib import Path

from mkdocs.exceptions import PluginError
from mkdocs.structure.files import File, Files

ROOT = Path(__file__).resolve().parents[2]
DOCS = ROOT / "docs"
PUBLISHED_TREES = ("reports",)  # non-Markdown files under these are served at the same path

INCLUDE = re.compile(r"^<!--\s*include:\s*(\S+?)((?:\s+(?:shift=\d|notitle))*)\s*-->[ \t]*$", re.M)
MODEL_CARD = re.compile(r"^<!--\s*model-card:\s*([\w.-]+)\s*-->[ \t]*$", re.M)
LINK = re.compile(r"(!?\[[^\]\n]*\]\()([^)\s]+)((?:\s+\"[^\"\n]*\")?\))")
FENCE = re.compile(r"^\s*(```|~~~)")
SCHEME = re.compile(r"^[a-zA-Z][a-zA-Z0-9+.-]*:")

_included: dict[Path, str] = {}  # real path of an included file -> src_uri of the page that includes it


def model_card(name: str) -> Path:
    """MODEL_CARD.md of bundled model `name`, searched in the package (not imported: no torch)."""
    spec = importlib.util.find_spec("synthcheck")
    if spec is None or not spec.submodule_search_locations:
        raise PluginError("model-card: the synthcheck package is not importable from this environment")
    cards = sorted({p.resolve() for loc in spec.submodule_search_locations
                    for p in Path(loc).glob(f"**/weights/{name}/MODEL_CARD.md")})
    if len(cards) != 1:
        raise PluginError(f"model-card: expected one MODEL_CARD.md for bundled model {name!r}, found {len(cards)}")
    return cards[0]


def _markers(page_path: Path, text: str):
    for m in INCLUDE.finditer(text):
        opts = m.group(2).split()
        shift = next((int(o[6:]) for o in opts if o.startswith("shift=")), 0)
        yield m, (page_path.parent / m.group(1)).resolve(), shift, "notitle" in opts
    for m in MODEL_CARD.finditer(text):
        yield m, model_card(m.group(1)), 1, False


def _outside_code(text: str, fn) -> str:
    """Apply fn to the parts of Markdown text that are not fenced code."""
    out, chunk, fence = [], [], None
    for line in text.splitlines(keepends=True):
        m = FENCE.match(line)
        if fence is None and m:
            out.append(fn("".join(chunk)))
            chunk, fence = [line], m.group(1)
        elif fence is not None:
            chunk.append(line)
            if line.strip().startswith(fence) and len(chunk) > 1:
                out.append("".join(chunk))
                chunk, fence = [], None
        else:
            chunk.append(line)
    out.append("".join(chunk) if fence is not None else fn("".join(chunk)))
    return "".join(out)


def _site_path(real: Path) -> str | None:
    """Where a repository file is in the site (relative to the site root), or None if it is not there."""
    if real in _included:
        return _included[real]
    for base, trees in ((DOCS, None), (ROOT, PUBLISHED_TREES)):
        try:
            rel = real.relative_to(base)
        except ValueError:
            continue
        if trees is None or (rel.parts and rel.parts[0] in trees and real.suffix != ".md"):
            return rel.as_posix()
    return None


def fix_links(text: str, real_dir: Path, page_uri: str) -> str:
    """Rewrite relative links written from `real_dir` (a real folder) for a page at `page_uri`."""

    def one(m: re.Match) -> str:
        target = m.group(2)
        if SCHEME.match(target) or target.startswith(("#", "/")):
            return m.group(0)
        path, _, frag = target.partition("#")
        real = Path(os.path.normpath(real_dir / path))
        site = _site_path(real)
        if site is None:
            return m.group(0)  # MkDocs reports it if it is broken
        new = posixpath.relpath(site, posixpath.dirname(page_uri) or ".")
        return m.group(1) + new + (f"#{frag}" if frag else "") + m.group(3)

    return _outside_code(text, lambda part: LINK.sub(one, part))


def shift_headings(text: str, n: int) -> str:
    if n <= 0:
        return text
    return _outside_code(text, lambda part: re.sub(r"^(#{1,6})(?=\s)", lambda m: m.group(1) + "#" * n, part,
                                                   flags=re.M))


def on_files(files: Files, config) -> Files:
    for tree in PUBLISHED_TREES:
        for path in sorted((ROOT / tree).rglob("*")):
            if path.is_file() and path.suffix != ".md":
                files.append(File(path.relative_to(ROOT).as_posix(), str(ROOT), config["site_dir"],
                                  config["use_directory_urls"]))
    _included.clear()
    for f in files.documentation_pages():
        page_path = Path(f.abs_src_path)
        for _, real, _, _ in _markers(page_path, page_path.read_text(encoding="utf-8")):
            if not real.is_file():
                raise PluginError(f"{f.src_uri}: included file {real} does not exist")
            _included.setdefault(real, f.src_uri)
    return files


def on_page_markdown(markdown: str, page, config, files) -> str:
    page_path = Path(page.file.abs_src_path)
    markdown = fix_links(markdown, page_path.parent, page.file.src_uri)

    def expand(real: Path, shift: int, notitle: bool) -> str:
        text = real.read_text(encoding="utf-8")
        if notitle:
            text = re.sub(r"\A\s*# [^\n]*\n", "", text, count=1)
        return shift_headings(fix_links(text, real.parent, page.file.src_uri), shift).rstrip() + "\n"

    for m, real, shift, notitle in sorted(_markers(page_path, markdown), key=lambda t: -t[0].start()):
        markdown = markdown[:m.start()] + expand(real, shift, notitle) + markdown[m.end():]
    return markdown

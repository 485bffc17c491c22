"""mkdocs hooks: build the site from the Markdown as it reads on GitHub.

The pages in docs/ are written to read well in the repository too, so they
link to files outside docs/ (the benchmark plots in benchmarks/results/) and
the home page is the README. This hook, run by ``mkdocs build``:

- serves every ``benchmarks/results/*.png`` under ``assets/benchmarks/``
  (from the checkout, no copy kept in git) and points links at it;
- replaces ``<!-- include: PATH -->`` ... ``<!-- end include -->`` with the
  file at PATH, its links to docs/ pages pointed at the site's pages;
- replaces ``<!-- exception-table -->`` with the table generated from
  ``resilient_canvas.exceptions`` (see ``exception_table.py``).
"""

from __future__ import annotations

import posixpath
import re
import sys
from pathlib import Path
from typing import Any

from mkdocs.config.defaults import MkDocsConfig
from mkdocs.structure.files import File, Files
from mkdocs.structure.pages import Page

ROOT = Path(__file__).resolve().parents[2]
# Document the checkout being built, not whatever copy is installed.
sys.path.insert(0, str(ROOT))

import exception_table  # noqa: E402  (the hook's own directory is on sys.path)

PLOTS = ROOT / "benchmarks" / "results"
PLOTS_URI = "assets/benchmarks"

_LINK = re.compile(r"(!?\[[^\]\n]*\]\()([^)\s]+)(\))")
_INCLUDE = re.compile(
    r"^<!-- include: (?P<path>\S+) -->\n.*?^<!-- end include -->$", re.DOTALL | re.MULTILINE
)
_TABLE = "<!-- exception-table -->"


def on_files(files: Files, *, config: MkDocsConfig) -> Files:
    """Add the benchmark plots to the site, read from benchmarks/results/."""
    for plot in sorted(PLOTS.glob("*.png")):
        files.append(File.generated(config, f"{PLOTS_URI}/{plot.name}", abs_src_path=str(plot)))
    return files


def on_page_markdown(markdown: str, *, page: Page, config: MkDocsConfig, **_: Any) -> str:
    """Expand includes and the exception table; point outside links inside the site."""
    docs_dir = Path(config.docs_dir)
    page_dir = posixpath.dirname(page.file.src_uri)

    def include(match: re.Match[str]) -> str:
        source = (docs_dir / page_dir / match["path"]).resolve()
        text = source.read_text(encoding="utf-8")
        return relink(text, source.parent, docs_dir, page_dir)

    markdown = _INCLUDE.sub(include, markdown)
    if _TABLE in markdown:
        markdown = markdown.replace(_TABLE, exception_table.table())
    return relink(markdown, docs_dir / page_dir, docs_dir, page_dir)


def relink(markdown: str, base: Path, docs_dir: Path, page_dir: str) -> str:
    """Rewrite relative links written from *base* so they work from the page.

    A link to a page in docs/ becomes a link to that page; a link to a
    benchmark plot becomes a link to its copy on the site. Any other link is
    left alone, for mkdocs to check.
    """

    def target(match: re.Match[str]) -> str:
        url = match[2]
        if re.match(r"^[a-z][a-z0-9+.-]*:|^[#/]", url):
            return match[0]
        path, hash_, fragment = url.partition("#")
        resolved = (base / path).resolve()
        if resolved.parent == PLOTS.resolve() and resolved.suffix == ".png":
            site_uri = f"{PLOTS_URI}/{resolved.name}"
        elif resolved.is_relative_to(docs_dir.resolve()):
            site_uri = resolved.relative_to(docs_dir.resolve()).as_posix()
        else:
            return match[0]
        new = posixpath.relpath(site_uri, page_dir or ".") + hash_ + fragment
        return f"{match[1]}{new}{match[3]}"

    return _LINK.sub(target, markdown)

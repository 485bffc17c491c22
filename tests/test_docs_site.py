"""The documentation site's sources: the generated exception table and the API reference pages.

The site itself is built by CI (`mkdocs build --strict`); these tests check,
without mkdocs, that what the build generates covers the code.
"""

from __future__ import annotations

import importlib.util
import inspect
import pkgutil
import re
import sys
from pathlib import Path
from types import ModuleType

import pytest

import resilient_canvas
from resilient_canvas import exceptions as exc

ROOT = Path(__file__).resolve().parent.parent
DOCS = ROOT / "docs"


def _load_generator() -> ModuleType:
    path = DOCS / "hooks" / "exception_table.py"
    spec = importlib.util.spec_from_file_location("exception_table", path)
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    # dataclasses look their module up in sys.modules while the class is built.
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


table = _load_generator()

PUBLIC_EXCEPTIONS = sorted(
    name
    for name in exc.__all__
    if inspect.isclass(getattr(exc, name))
    and issubclass(getattr(exc, name), BaseException)
    and getattr(exc, name).__name__ == name
)


def _rows() -> dict[str, object]:
    return {row.name: row for row in table.rows(exc, frozenset({"BadRequest", "Conflict"}))}


def test_public_exceptions_are_found() -> None:
    """The list the table is checked against holds the tree, not nothing."""
    assert {"CanvasException", "HTTPException", "RateLimitExceeded"} <= set(PUBLIC_EXCEPTIONS)


def test_table_has_one_row_per_public_exception_class() -> None:
    """Every public exception class has exactly one row, and nothing else does."""
    names = [row.name for row in table.rows(exc)]

    assert PUBLIC_EXCEPTIONS == sorted(names)


def test_rendered_table_links_every_class() -> None:
    """The Markdown has a linked row for every public exception class."""
    rendered = table.render(table.rows(exc))
    linked = re.findall(r"\[`(\w+)`\]\[resilient_canvas\.exceptions\.\1\]", rendered)

    assert PUBLIC_EXCEPTIONS == sorted(linked)


def test_rows_follow_the_tree() -> None:
    """Each row's parent is listed above it, one level shallower."""
    rows = table.rows(exc)
    seen: dict[str, int] = {}
    for row in rows:
        if row.depth:
            assert row.depth - 1 == seen[row.parent], row.name
        seen[row.name] = row.depth

    assert ("CanvasException", 0) == (rows[0].name, rows[0].depth)


def test_rows_carry_the_class_attributes() -> None:
    """Status, quiet and aliases come from the classes and the module's exports."""
    rows = _rows()

    assert (400, True, ("BadURL", "InvalidUsage"), "BadRequest") == (
        rows["BadRequest"].status_code,
        rows["BadRequest"].quiet,
        rows["BadRequest"].aliases,
        rows["BadRequest"].canvasapi_name,
    )
    assert ("HTTPException", None) == (
        rows["RateLimitExceeded"].parent,
        rows["RateLimitExceeded"].canvasapi_name,
    )


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        ("RateLimitExceeded", "yes, any method"),
        ("ServiceUnavailable", "yes, any method"),
        ("ConnectError", "yes, any method"),
        ("ReadTimeout", "idempotent methods only"),
        ("BadGateway", "idempotent methods only"),
        ("BadRequest", "no"),
        ("TLSError", "no"),
    ],
)
def test_retried_column_follows_the_default_policy(name: str, expected: str) -> None:
    """The retried column says what RetryPolicy() decides for a POST and a GET."""
    assert expected == _rows()[name].retried


def _public_modules() -> list[str]:
    submodules = pkgutil.iter_modules(resilient_canvas.__path__, "resilient_canvas.")
    public = sorted(info.name for info in submodules if info.name.rsplit(".")[-1][0] != "_")
    return ["resilient_canvas", *public]


@pytest.mark.parametrize("module", _public_modules())
def test_every_public_module_has_a_reference_page_in_the_nav(module: str) -> None:
    """Each public module is rendered on a page of docs/reference/ listed in mkdocs.yml."""
    pages = [
        page
        for page in sorted((DOCS / "reference").glob("*.md"))
        if re.search(rf"^::: {re.escape(module)}$", page.read_text("utf-8"), re.MULTILINE)
    ]
    nav = (ROOT / "mkdocs.yml").read_text("utf-8")

    assert 1 == len(pages), f"no docs/reference page holds '::: {module}'"
    assert f": {pages[0].relative_to(DOCS).as_posix()}\n" in nav


@pytest.mark.parametrize(
    "plot", sorted(p.name for p in (ROOT / "benchmarks/results").glob("*.png"))
)
def test_every_benchmark_plot_is_embedded(plot: str) -> None:
    """Each plot in benchmarks/results/ is shown on some page of docs/."""
    embeds = "".join(page.read_text("utf-8") for page in DOCS.glob("*.md"))

    assert f"](../benchmarks/results/{plot})" in embeds

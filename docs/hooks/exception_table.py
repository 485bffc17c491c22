"""The exception reference table, generated from ``resilient_canvas.exceptions``.

Walks the public exception classes (those in the module's ``__all__``) in
tree order and renders one Markdown row per class: its parent, status code,
quiet flag, aliases, the CanvasAPI name it matches and whether the default
``RetryPolicy`` retries it. Generated, not written by hand, so the table
cannot drift from the code; ``tests/test_docs_site.py`` checks that every
public exception class has a row.

No mkdocs import here: the test imports this module without mkdocs installed.
"""

from __future__ import annotations

import importlib
import inspect
from dataclasses import dataclass
from types import ModuleType

from resilient_canvas import RetryPolicy
from resilient_canvas.exceptions import CanvasException

MODULE = "resilient_canvas.exceptions"

#: What the retried column says, by what the default policy allows.
ANY_METHOD = "yes, any method"
IDEMPOTENT_ONLY = "idempotent methods only"
NOT_RETRIED = "no"


@dataclass(frozen=True)
class Row:
    """One public exception class as the table shows it."""

    name: str
    depth: int
    parent: str
    status_code: int | None
    quiet: bool | None
    aliases: tuple[str, ...]
    canvasapi_name: str | None
    retried: str


def public_exception_classes(module: ModuleType) -> dict[str, type[BaseException]]:
    """Every exception class the module exports under its own name, by name."""
    exported = {name: getattr(module, name) for name in module.__all__}
    return {
        name: obj
        for name, obj in exported.items()
        if inspect.isclass(obj) and issubclass(obj, BaseException) and obj.__name__ == name
    }


def canvasapi_names() -> frozenset[str]:
    """The exception names of the CanvasAPI client, or none when it is not installed."""
    try:
        canvasapi = importlib.import_module("canvasapi.exceptions")
    except ImportError:
        return frozenset()
    return frozenset(
        name
        for name, obj in vars(canvasapi).items()
        if inspect.isclass(obj) and issubclass(obj, BaseException)
    )


def retried(cls: type[BaseException], policy: RetryPolicy | None = None) -> str:
    """Whether the default retry policy may retry *cls*, and for which methods."""
    if not issubclass(cls, CanvasException):
        return NOT_RETRIED
    policy = policy or RetryPolicy()
    error = cls()
    if policy.allows(error, method="POST", idempotent=None):
        return ANY_METHOD
    if policy.allows(error, method="GET", idempotent=None):
        return IDEMPOTENT_ONLY
    return NOT_RETRIED


def rows(module: ModuleType, canvasapi: frozenset[str] = frozenset()) -> list[Row]:
    """One row per public exception class in tree order, siblings in definition order."""
    classes = public_exception_classes(module)
    public = set(classes.values())
    aliases: dict[type[BaseException], list[str]] = {}
    for name in module.__all__:
        obj = getattr(module, name)
        if inspect.isclass(obj) and obj in public and obj.__name__ != name:
            aliases.setdefault(obj, []).append(name)
    roots = [cls for cls in classes.values() if _nearest_public_base(cls, public) is None]
    order = _definition_order(roots)

    def walk(cls: type[BaseException], depth: int) -> list[Row]:
        names = (cls.__name__, *aliases.get(cls, []))
        parent = _nearest_public_base(cls, public) or cls.__mro__[1]
        row = Row(
            name=cls.__name__,
            depth=depth,
            parent=parent.__name__,
            status_code=getattr(cls, "status_code", None),
            quiet=getattr(cls, "quiet", None),
            aliases=tuple(aliases.get(cls, [])),
            canvasapi_name=next((name for name in names if name in canvasapi), None),
            retried=retried(cls),
        )
        children = sorted(
            (c for c in public if _nearest_public_base(c, public) is cls), key=order.__getitem__
        )
        return [row] + [r for child in children for r in walk(child, depth + 1)]

    return [row for root in roots for row in walk(root, 0)]


def _definition_order(roots: list[type[BaseException]]) -> dict[type[BaseException], int]:
    # __subclasses__() lists a class's subclasses in the order they were
    # defined, which is the order the module docstring draws the tree in.
    order: dict[type[BaseException], int] = {}

    def visit(cls: type[BaseException]) -> None:
        order.setdefault(cls, len(order))
        for sub in cls.__subclasses__():
            visit(sub)

    for root in roots:
        visit(root)
    return order


def _nearest_public_base(
    cls: type[BaseException], public: set[type[BaseException]]
) -> type[BaseException] | None:
    return next((base for base in cls.__mro__[1:] if base in public), None)


HEADER = (
    "| class | parent | `status_code` | `quiet` | aliases | CanvasAPI name | retried |\n"
    "|---|---|---|---|---|---|---|\n"
)


def render(table_rows: list[Row]) -> str:
    """The rows as a Markdown table; class names link to their API entries."""
    lines = []
    for row in table_rows:
        indent = "&nbsp;&nbsp;&nbsp;&nbsp;" * row.depth
        cells = [
            f"{indent}[`{row.name}`][{MODULE}.{row.name}]",
            f"`{row.parent}`",
            "—" if row.status_code is None else str(row.status_code),
            "—" if row.quiet is None else ("yes" if row.quiet else "no"),
            ", ".join(f"`{alias}`" for alias in row.aliases),
            f"`{row.canvasapi_name}`" if row.canvasapi_name else "",
            row.retried,
        ]
        lines.append("| " + " | ".join(cells) + " |")
    return HEADER + "\n".join(lines) + "\n"


def table() -> str:
    """The whole table for ``resilient_canvas.exceptions``, as the site shows it."""
    module = importlib.import_module(MODULE)
    names = canvasapi_names()
    if not names:
        # The column would silently be empty: the docs extra installs canvasapi.
        raise RuntimeError("canvasapi is not installed: pip install '.[docs]'.")
    return render(rows(module, names))

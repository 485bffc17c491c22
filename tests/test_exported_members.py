"""The public namespaces export exactly what they define, sorted."""

from __future__ import annotations

import types

import pytest

import resilient_canvas
from resilient_canvas import errorpages, exceptions, testing


def _isort_style(name: str) -> tuple[int, str]:
    """Ruff's RUF022 order: CONSTANTS, then Classes, then the rest."""
    rank = 0 if name.isupper() else 1 if name[:1].isupper() else 2
    return rank, name


def _public(module: types.ModuleType, *, reexports: bool) -> set[str]:
    """Public names a namespace holds: all of ours for a package, its own for a module."""
    names = set()
    for name, value in vars(module).items():
        if (
            name.startswith("_")
            or isinstance(value, types.ModuleType)
            or name in {"annotations", "TYPE_CHECKING"}
        ):
            continue
        home = getattr(value, "__module__", module.__name__) or ""
        if home == module.__name__ or (reexports and home.startswith("resilient_canvas")):
            names.add(name)
    return names


@pytest.mark.parametrize(
    ("module", "reexports"),
    [(resilient_canvas, True), (testing, True), (exceptions, False), (errorpages, False)],
)
def test_all_is_sorted_and_complete(module: types.ModuleType, reexports: bool) -> None:
    """__all__ is in ruff's order and lists exactly the public names the namespace offers."""
    exported = set(module.__all__) - {"__version__"}

    assert sorted(module.__all__, key=_isort_style) == module.__all__
    assert _public(module, reexports=reexports) == exported


def test_every_exported_name_resolves() -> None:
    """Each name in __all__ exists."""
    for module in (resilient_canvas, exceptions, errorpages, testing):
        for name in module.__all__:
            assert hasattr(module, name), f"{module.__name__}.{name}"

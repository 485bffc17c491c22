"""Tests for resilient_canvas._phrases: status phrases worded as Sanic words them."""

from __future__ import annotations

import inspect

import pytest
import sanic.exceptions
from sanic.helpers import STATUS_CODES

from resilient_canvas import exceptions as exc
from resilient_canvas._http import status_phrase
from resilient_canvas._phrases import SANIC_STATUS_PHRASES
from resilient_canvas.errorpages import BaseRenderer
from resilient_canvas.exceptions import classify_response

SANIC_STATUSES = sorted(STATUS_CODES)

#: Our classes that share a name (and so a meaning) with one of Sanic's.
SHARED_NAMES = sorted(
    name
    for name, obj in vars(sanic.exceptions).items()
    if inspect.isclass(obj)
    and issubclass(obj, sanic.exceptions.SanicException)
    and name in exc.__all__
)


def test_the_copy_has_every_status_sanic_defines() -> None:
    """The copied table names the same statuses as Sanic's, no more, no fewer."""
    assert SANIC_STATUSES == sorted(SANIC_STATUS_PHRASES)


@pytest.mark.parametrize("status", SANIC_STATUSES)
def test_status_phrase_is_sanics(status: int) -> None:
    """Every status Sanic defines gets Sanic's phrase, letter for letter."""
    assert STATUS_CODES[status].decode() == status_phrase(status)


@pytest.mark.parametrize("status", SANIC_STATUSES)
def test_default_message_is_sanics(status: int) -> None:
    """An exception given only a status has the message Sanic's would have."""
    sanics = sanic.exceptions.SanicException(status_code=status)

    assert str(sanics) == str(exc.CanvasException(status_code=status))
    assert str(sanics) == str(exc.HTTPException(status_code=status))


def test_teapot_is_lower_case() -> None:
    """418 reads as RFC 2324 and Sanic write it, not as HTTPStatus does."""
    assert "I'm a teapot" == exc.HTTPException(status_code=418).message


def test_shared_names_are_found() -> None:
    """The comparison below covers Sanic's classes, not an empty list."""
    assert {"NotFound", "PayloadTooLarge", "RangeNotSatisfiable", "URITooLong"} <= set(SHARED_NAMES)


@pytest.mark.parametrize("name", SHARED_NAMES)
def test_same_named_classes_have_sanics_default_message(name: str) -> None:
    """Each of our classes named like one of Sanic's has its default message."""
    ours = getattr(exc, name)
    sanics = getattr(sanic.exceptions, name)

    assert (sanics.status_code, str(sanics())) == (ours.status_code, str(ours()))


def test_classified_message_uses_sanics_phrase() -> None:
    """A classified response names its status with Sanic's phrase."""
    error = classify_response(413, {}, b"", method="POST", url="https://c.test/api/v1/files")

    assert error.message.startswith(
        "POST https://c.test/api/v1/files failed with 413 Request Entity Too Large:"
    )


def test_error_page_title_uses_sanics_phrase() -> None:
    """An error page's title is Sanic's phrase for the status."""
    renderer = BaseRenderer(None, exc.RangeNotSatisfiable(), debug=False)

    assert "416 — Requested Range Not Satisfiable" == renderer.title


def test_status_sanic_does_not_name_falls_back_to_the_standard_library() -> None:
    """A status missing from Sanic's table still gets the standard phrase."""
    assert 421 not in STATUS_CODES
    assert "Misdirected Request" == status_phrase(421)


def test_unknown_status_has_no_phrase() -> None:
    """A status nobody names has no phrase, as in Sanic."""
    assert "" == status_phrase(799)
    assert "" == status_phrase(None)

"""Tests for resilient_canvas.exceptions: the merged tree, classification, aiohttp boundary."""

from __future__ import annotations

import inspect
import json
from typing import Any

import aiohttp
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from resilient_canvas import exceptions as exc
from resilient_canvas.exceptions import classify_response, from_aiohttp_error

BEARER = {"WWW-Authenticate": 'Bearer realm="canvas-lms"'}
JSON = {"Content-Type": "application/json; charset=utf-8"}


def _body(data: Any) -> bytes:
    return json.dumps(data).encode()


# Rows of shared/spec/canvas-server.md section 3, with the real Canvas bodies.
CANVAS_ERRORS = [
    pytest.param(
        401,
        BEARER,
        _body({"errors": [{"message": "Invalid access token."}]}),
        exc.InvalidAccessToken,
        "Invalid access token.",
        id="invalid-token",
    ),
    pytest.param(
        401,
        BEARER,
        _body({"errors": [{"message": "Expired access token.", "expired_at": "2026-01-01"}]}),
        exc.InvalidAccessToken,
        "Expired access token.",
        id="expired-token",
    ),
    pytest.param(
        401,
        JSON,
        _body({"errors": [{"message": "Insufficient scopes on access token."}]}),
        exc.Unauthorized,
        "Insufficient scopes on access token.",
        id="scope",
    ),
    pytest.param(
        401,
        JSON,
        _body(
            {
                "status": "unauthorized",
                "errors": [{"message": "user not authorized to perform that action"}],
            }
        ),
        exc.Unauthorized,
        "user not authorized to perform that action",
        id="legacy-not-permitted",
    ),
    pytest.param(
        403,
        JSON,
        _body(
            {
                "status": "unauthorized",
                "errors": [{"message": "user not authorized to perform that action"}],
            }
        ),
        exc.Forbidden,
        "user not authorized to perform that action",
        id="not-permitted",
    ),
    pytest.param(
        404,
        JSON,
        _body(
            {
                "errors": [{"message": "The specified resource does not exist."}],
                "error_report_id": 77,
            }
        ),
        exc.ResourceDoesNotExist,
        "The specified resource does not exist.",
        id="not-found",
    ),
    pytest.param(
        400,
        JSON,
        _body({"errors": [{"message": "user is missing"}]}),
        exc.BadRequest,
        "user is missing",
        id="missing-param",
    ),
    pytest.param(
        400,
        JSON,
        _body(
            {
                "errors": {
                    "name": [{"attribute": "name", "type": "blank", "message": "can't be blank"}]
                }
            }
        ),
        exc.BadRequest,
        "name: can't be blank",
        id="validation-400",
    ),
    pytest.param(
        422,
        JSON,
        _body(
            {
                "errors": {
                    "name": [{"attribute": "name", "type": "blank", "message": "can't be blank"}]
                }
            }
        ),
        exc.UnprocessableEntity,
        "name: can't be blank",
        id="validation-422",
    ),
    pytest.param(
        400,
        JSON,
        _body({"error": "Grade not allowed"}),
        exc.BadRequest,
        "Grade not allowed",
        id="grade-rejected",
    ),
    pytest.param(
        400,
        JSON,
        _body({"message": "No parameters given"}),
        exc.BadRequest,
        "No parameters given",
        id="enrollment-argument",
    ),
    pytest.param(
        500,
        JSON,
        _body(
            {
                "errors": [
                    {"message": "An error occurred.", "error_code": "internal_server_error"}
                ],
                "error_report_id": 12,
            }
        ),
        exc.ServerError,
        "An error occurred.",
        id="unhandled",
    ),
    pytest.param(
        502,
        JSON,
        _body(
            {
                "errors": [{"message": "An error occurred.", "error_code": "bad_gateway"}],
                "error_report_id": 13,
            }
        ),
        exc.BadGateway,
        "An error occurred.",
        id="circuit-breaker",
    ),
    pytest.param(
        500,
        {"Content-Type": "text/html"},
        b"<!DOCTYPE html><html><body>Oops</body></html>",
        exc.ServerError,
        "HTML page",
        id="html-500",
    ),
    pytest.param(
        503,
        {"Content-Type": "text/html"},
        b"<html><h1>Down for maintenance</h1></html>",
        exc.ServiceUnavailable,
        "HTML page",
        id="maintenance",
    ),
    pytest.param(
        504,
        {"Content-Type": "text/html"},
        b"<html>504 Gateway Time-out</html>",
        exc.GatewayTimeout,
        "HTML page",
        id="gateway-timeout",
    ),
]


@pytest.mark.parametrize(("status", "headers", "body", "expected_cls", "said"), CANVAS_ERRORS)
def test_canvas_error_bodies_classify(
    status: int, headers: dict[str, str], body: bytes, expected_cls: type, said: str
) -> None:
    """Each real Canvas error response maps to its class with the Canvas text in the message."""
    error = classify_response(status, headers, body, method="get", url="https://c.test/api/v1/x")

    assert expected_cls is type(error)
    assert status == error.status_code
    assert said in error.message
    assert str(error) == error.message
    assert error.message.startswith("GET https://c.test/api/v1/x failed with")


@pytest.mark.parametrize(
    ("status", "headers", "body", "expected"),
    [
        pytest.param(
            403,
            {"Content-Type": "text/plain; charset=utf-8", "X-Rate-Limit-Remaining": "-12.5"},
            b"403 Forbidden (Rate Limit Exceeded)\n",
            "Rate Limit Exceeded. X-Rate-Limit-Remaining: -12.5",
            id="legacy-throttle",
        ),
        pytest.param(
            429,
            {"X-Rate-Limit-Remaining": "35.2"},
            b"429 Too Many Requests (Rate Limit Exceeded)\n",
            "Rate Limit Exceeded. X-Rate-Limit-Remaining: 35.2",
            id="throttle-429",
        ),
        pytest.param(
            429, {}, b"", "Rate Limit Exceeded. X-Rate-Limit-Remaining: Unknown", id="no-header"
        ),
        pytest.param(
            429,
            {"X-Rate-Limit-Remaining": "9" * 5000},
            b"",
            "Rate Limit Exceeded. X-Rate-Limit-Remaining: " + "9" * 64,
            id="huge-header",
        ),
    ],
)
def test_throttles_carry_canvasapis_message(
    status: int, headers: dict[str, str], body: bytes, expected: str
) -> None:
    """A throttle's message is the CanvasAPI client's, the header's text as sent (bounded)."""
    error = classify_response(status, headers, body, method="GET", url="https://c.test/api/v1/x")

    assert exc.RateLimitExceeded is type(error)
    assert (expected, expected) == (error.message, str(error))
    assert (status, "GET") == (error.status_code, error.method)


def test_rate_limit_exceeded_is_not_forbidden() -> None:
    """except Forbidden: (skipping what the user may not see) does not swallow a throttle."""
    throttle = classify_response(403, {}, b"403 Forbidden (Rate Limit Exceeded)\n")

    assert not isinstance(throttle, exc.Forbidden)
    assert isinstance(throttle, exc.HTTPException)
    assert (429, True) == (exc.RateLimitExceeded().status_code, exc.RateLimitExceeded().quiet)


@pytest.mark.parametrize(
    ("body", "expected"),
    [
        (b'"Not allowed here."', "Canvas said: Not allowed here."),
        (b"Not allowed here.", "Canvas said: Not allowed here."),
        (b'{"errors":[{"message":"say \\"hi\\""}]}', 'Canvas said: say "hi"'),
    ],
    ids=["json-string", "plain-text", "quoting-message"],
)
def test_body_text_is_not_wrapped_in_quotes(body: bytes, expected: str) -> None:
    """Canvas's words follow as they are: a JSON string body is its text, no doubled quotes."""
    error = classify_response(403, {}, body, method="GET", url="https://c.test/api/v1/x")

    assert error.message.endswith(expected)
    assert '""' not in error.message


STATUS_TABLE = [
    (400, exc.BadRequest),
    (404, exc.ResourceDoesNotExist),
    (405, exc.MethodNotAllowed),
    (408, exc.RequestTimeout),
    (409, exc.Conflict),
    (413, exc.PayloadTooLarge),
    (414, exc.URITooLong),
    (416, exc.RangeNotSatisfiable),
    (417, exc.ExpectationFailed),
    (422, exc.UnprocessableEntity),
    (429, exc.RateLimitExceeded),
    (500, exc.ServerError),
    (502, exc.BadGateway),
    (503, exc.ServiceUnavailable),
    (504, exc.GatewayTimeout),
    (410, exc.BadRequest),
    (418, exc.BadRequest),
    (501, exc.ServerError),
    (599, exc.ServerError),
]


@pytest.mark.parametrize(("status", "expected_cls"), STATUS_TABLE)
def test_status_mapping(status: int, expected_cls: type) -> None:
    """Every status maps to its class; rarer ones to the nearest generic class, status kept."""
    error = classify_response(status, {}, b"")

    assert expected_cls is type(error)
    assert status == error.status_code


def test_401_header_decides_token_versus_permission() -> None:
    """A 401 is an invalid token only when Canvas sends WWW-Authenticate."""
    assert isinstance(classify_response(401, BEARER, b"{}"), exc.InvalidAccessToken)
    assert type(classify_response(401, {}, b"{}")) is exc.Unauthorized


def test_401_with_non_json_body_does_not_crash() -> None:
    """Unlike CanvasAPI, a 401 with an HTML body is classified, not a JSON decode crash."""
    error = classify_response(401, BEARER, b"<html>login</html>")

    assert isinstance(error, exc.InvalidAccessToken)


def test_permission_403_is_not_a_throttle() -> None:
    """A 403 without "Rate Limit Exceeded" is a permission error and not retryable."""
    error = classify_response(403, {}, b'{"errors":[{"message":"nope"}]}')

    assert type(error) is exc.Forbidden
    assert not error.retryable


def test_response_details_are_parsed() -> None:
    """Canvas headers (Ruby floats included) and report ids are on the instance."""
    headers = {
        "X-Rate-Limit-Remaining": "1.0e-05",
        "X-Request-Cost": "0.0123",
        "Retry-After": "7",
        "X-Request-Context-Id": "abc-123",
    }
    body = _body({"errors": [{"message": "An error occurred."}], "error_report_id": 9})

    error = classify_response(500, headers, body, method="POST", url="https://c.test/a")

    assert 1.0e-05 == error.rate_limit_remaining
    assert 0.0123 == error.request_cost
    assert 7.0 == error.retry_after
    assert 9 == error.error_report_id
    assert [{"message": "An error occurred."}] == error.errors
    assert "abc-123" == error.request_id
    assert {"error_report_id": 9, "retry_after": 7.0} == error.context
    assert "POST" == error.extra["method"]
    assert error.request_sent is True


def test_token_never_in_message_url_or_extra() -> None:
    """An access_token query parameter is removed from everything kept on the error."""
    error = classify_response(
        404, {}, b"{}", method="GET", url="https://c.test/api/v1/x?access_token=SEKRET&page=2"
    )

    assert "SEKRET" not in repr(error)
    assert "SEKRET" not in str(error)
    assert "SEKRET" not in json.dumps(error.extra)
    assert "page=2" in str(error.url)


def test_huge_and_invalid_bodies_are_bounded() -> None:
    """A huge or invalid UTF-8 body gives a bounded message and excerpt."""
    error = classify_response(500, {}, b"\xff\xfe" + b"x" * 5_000_000)

    assert len(error.message) < 1_000
    assert len(error.extra["body_excerpt"]) <= 501


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("86400", 86400.0),
        ("garbage", None),
        ("-5", None),
        ("nan", None),
        ("Wed, 21 Oct 2015 07:28:00 GMT", 0.0),
        ("9" * 400, None),
        ("1.5", 1.5),
        ("1_0", None),
        ("1e308", None),
        ("0x10", None),
        ("+5", None),
    ],
)
def test_retry_after_parsing(value: str, expected: float | None) -> None:
    """Retry-After is read as seconds or HTTP-date; garbage and the past are handled."""
    assert expected == classify_response(503, {"Retry-After": value}, b"").retry_after


def test_hostile_headers_do_not_break_classification() -> None:
    """Absurd header containers and values still classify."""
    headers = [("X-Rate-Limit-Remaining", "inf"), ("broken",), (b"X-Request-Cost", b"1e999")]

    error = classify_response(429, headers, None)

    assert isinstance(error, exc.RateLimitExceeded)
    assert error.rate_limit_remaining is None
    assert error.request_cost is None


@settings(max_examples=300, deadline=None)
@given(
    status=st.integers(min_value=-1000, max_value=10_000),
    headers=st.dictionaries(st.text(max_size=30), st.text(max_size=300), max_size=8),
    body=st.one_of(
        st.none(),
        st.binary(max_size=2_000),
        st.text(max_size=2_000),
        st.recursive(
            st.none() | st.booleans() | st.integers() | st.text(max_size=20),
            lambda children: (
                st.lists(children, max_size=4)
                | st.dictionaries(st.text(max_size=10), children, max_size=4)
            ),
            max_leaves=20,
        ),
    ),
)
def test_classify_response_is_total(status: int, headers: dict[str, str], body: object) -> None:
    """Random statuses, headers and bodies always give an HTTPException, never a crash."""
    error = classify_response(status, headers, body, method="GET", url="https://c.test/")

    assert isinstance(error, exc.HTTPException)
    assert status == error.status_code
    assert isinstance(error.message, str)


# ---------------------------------------------------------------- Sanic model


def test_message_defaults_follow_sanic() -> None:
    """None gives the status phrase; bytes decode; an explicit "" stays ""."""
    assert "Not Found" == exc.NotFound().message
    assert "bytes ✓" == exc.BadRequest("bytes ✓".encode()).message
    assert "" == exc.BadRequest("").message
    assert "" == exc.CanvasException(None, 799).message
    assert "Too Many Requests" == exc.CanvasException(None, 429).message


def test_class_message_wins_over_phrase() -> None:
    """A class-level message beats the status phrase when no message is given."""

    class Custom(exc.ServerError):
        message = "Custom trouble."

    assert "Custom trouble." == Custom().message
    assert "explicit" == Custom("explicit").message


class _Computed(exc.HTTPException):
    """A Sanic-style subclass: the message is a read-only property."""

    status_code = 418

    @property
    def message(self) -> str:  # type: ignore[override]
        return f"Brewing {self.context['drink']} for {self.extra['who']}"


def test_message_may_be_a_property() -> None:
    """A read-only message property is computed from context and extra, not assigned."""
    error = _Computed(context={"drink": "tea"}, extra={"who": "Bearer abcdefghijklmnop"})

    assert "Brewing tea for Bearer [redacted]" == str(error)
    assert "Brewing tea for Bearer abcdefghijklmnop" == error.message
    assert 418 == error.status_code


def test_explicit_message_beats_a_message_property() -> None:
    """As in Sanic, str() is the message given to the constructor."""
    error = _Computed("Out of tea.", context={"drink": "tea"}, extra={"who": "Ann"})

    assert "Out of tea." == str(error)


def test_computed_message_survives_redaction_and_pickling() -> None:
    """The classifier's redaction and a round trip through pickle leave it working."""
    import pickle

    from resilient_canvas._errors import redact_error

    error = _Computed("Out of tea.", context={"drink": "tea"}, extra={"who": "Ann"})
    redact_error(error)
    copy = pickle.loads(pickle.dumps(error))  # noqa: S301 (our own bytes)

    assert ("Out of tea.", "Brewing tea for Ann") == (str(copy), copy.message)


def test_explicit_quiet_beats_class_default() -> None:
    """quiet=False on a quiet class and quiet=True on a loud one both win."""
    assert exc.NotFound().quiet is True
    assert exc.NotFound(quiet=False).quiet is False
    assert exc.ServerError().quiet is False
    assert exc.ServerError(quiet=True).quiet is True


def test_each_instance_owns_its_headers() -> None:
    """Headers set on one instance never leak into another (Sanic's shared-dict bug)."""
    first = exc.Forbidden()
    first.headers["X-Leak"] = "1"

    assert {} == exc.Forbidden().headers


def test_aliases_are_identical() -> None:
    """Sanic's aliases are the same class objects."""
    assert exc.InvalidUsage is exc.BadRequest
    assert exc.BadURL is exc.BadRequest
    assert exc.NotFound is exc.ResourceDoesNotExist
    assert exc.MethodNotSupported is exc.MethodNotAllowed
    assert exc.ContentRangeError is exc.RangeNotSatisfiable
    assert exc.HeaderExpectationFailed is exc.ExpectationFailed
    assert exc.InternalServerError is exc.ServerError


@pytest.mark.parametrize(
    ("kwargs", "expected"),
    [
        ({"scheme": "Basic", "realm": "Restricted Area"}, 'Basic realm="Restricted Area"'),
        (
            {
                "scheme": "Digest",
                "realm": "Restricted Area",
                "qop": "auth, auth-int",
                "algorithm": "MD5",
                "nonce": "abcdef",
                "opaque": "zyxwvu",
            },
            'Digest realm="Restricted Area", qop="auth, auth-int", algorithm="MD5", '
            'nonce="abcdef", opaque="zyxwvu"',
        ),
        ({"scheme": "Bearer"}, "Bearer"),
        ({"scheme": "Bearer", "realm": "canvas-lms"}, 'Bearer realm="canvas-lms"'),
    ],
)
def test_unauthorized_builds_www_authenticate(kwargs: dict[str, str], expected: str) -> None:
    """The WWW-Authenticate value is built exactly as Sanic builds it."""
    assert expected == exc.Unauthorized("Auth required.", **kwargs).headers["WWW-Authenticate"]


def test_unauthorized_without_scheme_sets_no_header() -> None:
    """No scheme, no WWW-Authenticate."""
    assert "WWW-Authenticate" not in exc.Unauthorized("nope").headers


def test_method_not_allowed_sets_allow() -> None:
    """A 405 lists the allowed methods in Allow."""
    error = exc.MethodNotAllowed("no", "POST", ["GET", "HEAD"])

    assert "GET, HEAD" == error.headers["Allow"]
    assert 405 == error.status_code


def test_range_not_satisfiable_sets_content_range() -> None:
    """A 416 with a content range states the total size."""

    class Range:
        total = 1234

    assert "bytes */1234" == exc.RangeNotSatisfiable("x", Range()).headers["Content-Range"]
    assert "bytes */99" == exc.InvalidRangeType("x", 99).headers["Content-Range"]


def test_dict_message_is_a_sentence_with_raw_errors_kept() -> None:
    """A Canvas body as message reads well and keeps its raw errors and report id."""
    body = {"errors": [{"message": "a"}, {"message": "b"}], "error_report_id": 5}

    error = exc.CanvasException(body)

    assert "a; b" == str(error)
    assert body["errors"] == error.errors
    assert 5 == error.error_report_id


def test_required_field_missing_is_client_side() -> None:
    """RequiredFieldMissing is a CanvasException that never reached the server."""
    error = exc.RequiredFieldMissing("Dictionary with key 'name' is required.")

    assert isinstance(error, exc.CanvasException)
    assert not error.may_have_been_applied


@pytest.mark.parametrize(
    ("cls", "retryable", "may_have_been_applied"),
    [
        (exc.RateLimitExceeded, True, False),
        (exc.ServiceUnavailable, True, False),
        (exc.BadGateway, True, True),
        (exc.GatewayTimeout, True, True),
        (exc.ConnectError, True, False),
        (exc.ConnectTimeout, True, False),
        (exc.ReadTimeout, True, True),
        (exc.ConnectionDropped, True, True),
        (exc.TLSError, False, False),
        (exc.Forbidden, False, True),
        (exc.BadRequest, False, True),
    ],
)
def test_retryability_and_application(
    cls: type[exc.CanvasException], retryable: bool, may_have_been_applied: bool
) -> None:
    """Each class says whether it is transient and whether the request may have applied."""
    error = cls()

    assert retryable == error.retryable
    assert may_have_been_applied == error.may_have_been_applied


# ---------------------------------------------------------------- aiohttp boundary


def _aiohttp_exception_classes() -> set[type[BaseException]]:
    found: set[type[BaseException]] = set()
    for module in (aiohttp, aiohttp.client_exceptions):
        for value in vars(module).values():
            if inspect.isclass(value) and issubclass(value, aiohttp.ClientError):
                found.add(value)
    pending = list(found)
    while pending:
        for sub in pending.pop().__subclasses__():
            if sub.__module__.startswith("aiohttp") and sub not in found:
                found.add(sub)
                pending.append(sub)
    return found


def test_every_aiohttp_exception_is_mapped() -> None:
    """aiohttp growing a client exception we do not map fails this test."""
    unmapped = {
        cls.__name__ for cls in _aiohttp_exception_classes() if cls not in exc.AIOHTTP_EXCEPTION_MAP
    }

    assert set() == unmapped


def _connector_error() -> aiohttp.ClientConnectorError:
    key = aiohttp.client_reqrep.ConnectionKey("c.test", 443, True, True, None, None, None)
    return aiohttp.ClientConnectorError(key, ConnectionRefusedError(111, "Connection refused"))


@pytest.mark.parametrize(
    ("error", "expected_cls", "sent"),
    [
        (_connector_error(), exc.ConnectError, False),
        (aiohttp.ConnectionTimeoutError("connect"), exc.ConnectTimeout, False),
        (aiohttp.SocketTimeoutError("read"), exc.ReadTimeout, True),
        (TimeoutError(), exc.ReadTimeout, True),
        (aiohttp.ServerDisconnectedError(), exc.ConnectionDropped, True),
        (aiohttp.ClientPayloadError("truncated"), exc.InvalidResponse, True),
    ],
)
def test_transport_errors_say_whether_sent(
    error: BaseException, expected_cls: type, sent: bool
) -> None:
    """Transport failures map to classes that say whether the request was sent."""
    translated = from_aiohttp_error(error, method="post", url="https://c.test/api/v1/x")

    assert translated is not None
    assert expected_cls is type(translated)
    assert sent == translated.request_sent
    assert translated.message.endswith(".")


def test_client_response_error_is_classified_by_status() -> None:
    """raise_for_status() errors become the status's class."""
    error = aiohttp.ClientResponseError(
        request_info=None,  # type: ignore[arg-type]
        history=(),
        status=503,
        message="Service Unavailable",
    )

    assert isinstance(from_aiohttp_error(error, method="GET"), exc.ServiceUnavailable)


def test_unrelated_exceptions_are_not_translated() -> None:
    """A KeyError from user code is not ours to translate."""
    assert from_aiohttp_error(KeyError("x")) is None


# ------------------------------------------------------- the split, one header view


def test_every_public_name_reports_the_public_module_as_home() -> None:
    """Classes and functions moved to private modules still name resilient_canvas.exceptions."""
    homes = {
        getattr(exc, name).__module__
        for name in exc.__all__
        if inspect.isclass(getattr(exc, name)) or inspect.isfunction(getattr(exc, name))
    }

    assert {"resilient_canvas.exceptions"} == homes


@pytest.mark.parametrize(
    "error",
    [
        classify_response(401, BEARER, _body({"errors": [{"message": "Invalid access token."}]})),
        classify_response(503, {"Retry-After": "30"}, b"<html>down</html>", method="GET"),
        exc.InvalidResponse("cut short", retryable=True),
        exc.MethodNotAllowed("no", "POST", ["GET"]),
    ],
    ids=["invalid-token", "unavailable", "invalid-response", "method-not-allowed"],
)
def test_errors_survive_pickling(error: exc.CanvasException) -> None:
    """An error sent to another process (multiprocessing, a task queue) arrives whole."""
    import pickle

    copy = pickle.loads(pickle.dumps(error))  # noqa: S301 (our own bytes)

    assert (type(error), str(error), vars(error)) == (type(copy), str(copy), vars(copy))
    assert error.retryable == copy.retryable


def test_one_header_view_serves_both_paths() -> None:
    """ResponseHeaders parses every header we act on once, hostile values included."""
    from multidict import CIMultiDict

    from resilient_canvas._http import ResponseHeaders

    headers = CIMultiDict(
        {
            "x-rate-limit-remaining": "1.0e-05",
            "X-Request-Cost": "nan",
            "Retry-After": "7",
            "Content-Type": "Text/HTML; charset=utf-8",
            "X-Request-Context-Id": "r" * 500,
            "Link": '<https://c.test/api/v1/x?page=2>; rel="next"',
            "WWW-Authenticate": "Bearer",
        }
    )

    view = ResponseHeaders.parse(headers)

    assert (
        ResponseHeaders(
            rate_limit_remaining=1.0e-05,
            request_cost=None,
            retry_after=7.0,
            content_type="text/html; charset=utf-8",
            request_id="r" * 128,
            link='<https://c.test/api/v1/x?page=2>; rel="next"',
            www_authenticate=True,
        )
        == view
    )
    assert ResponseHeaders() == ResponseHeaders.parse(CIMultiDict())


# ------------------------------------------- what retrying can heal (issue 14 §3)


def _redirects() -> aiohttp.TooManyRedirects:
    return aiohttp.TooManyRedirects(None, (), status=302)  # type: ignore[arg-type]


def _unparsable() -> aiohttp.ClientResponseError:
    error = aiohttp.ClientResponseError(None, (), status=400, message="Bad status line")  # type: ignore[arg-type]
    error.__cause__ = aiohttp.http_exceptions.BadStatusLine("HTTP/9 nope")
    return error


def _bad_gzip() -> aiohttp.ClientPayloadError:
    error = aiohttp.ClientPayloadError("Can not decode content-encoding: gzip")
    error.__cause__ = aiohttp.http_exceptions.ContentEncodingError("gzip")
    return error


@pytest.mark.parametrize(
    ("error", "retryable", "match"),
    [
        (aiohttp.ClientPayloadError("Response payload is not completed"), True, "cut short"),
        (_bad_gzip(), False, "could not be read"),
        (_redirects(), False, "redirect loop"),
        (aiohttp.ContentTypeError(None, ()), False, "could not be read"),  # type: ignore[arg-type]
        (_unparsable(), False, "not valid HTTP"),
    ],
    ids=["truncated", "bad-gzip", "redirect-loop", "content-type", "not-http"],
)
def test_only_answers_cut_short_may_heal(error: BaseException, retryable: bool, match: str) -> None:
    """The boundary marks truncation retryable; every complete unusable answer is not."""
    translated = from_aiohttp_error(error, method="GET", url="https://c.test/api/v1/x")

    assert isinstance(translated, exc.InvalidResponse)
    assert retryable == translated.retryable
    assert match in str(translated)


def test_invalid_responses_raised_directly_are_not_retryable() -> None:
    """A complete answer we refuse (too large, not JSON, a bad Link) is deterministic."""
    assert not exc.InvalidResponse("A body larger than the limit.").retryable
    assert exc.InvalidResponse("Cut short.", retryable=True).retryable


def test_translated_errors_keep_only_a_summary_of_their_cause() -> None:
    """The aiohttp exception is summarised (type, message), not chained with its request."""
    translated = from_aiohttp_error(aiohttp.ServerDisconnectedError(), method="GET")

    assert translated is not None
    cause = translated.__cause__
    assert isinstance(cause, exc.UnderlyingError)
    assert "aiohttp.client_exceptions.ServerDisconnectedError: Server disconnected" == str(cause)

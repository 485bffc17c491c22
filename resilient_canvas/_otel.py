"""OpenTelemetry traces and metrics (the ``otel`` extra), on the global providers.

Installed on the :mod:`~resilient_canvas._telemetry` seam by the package's
``__init__`` when ``opentelemetry`` imports; nothing is configured here: the
application sets the tracer and meter providers (the OpenTelemetry
convention), and until it does the API's no-op proxies are used.

Spans: one ``INTERNAL`` span per logical call (``canvas GET
/api/v1/courses/{id}``) around one ``CLIENT`` span per HTTP attempt, with the
HTTP client semantic conventions (``http.request.method``, ``url.template``,
``server.address``, ``server.port``, ``http.response.status_code``,
``error.type``, ``http.request.resend_count``) and Canvas's quota
(``canvas.request_cost``, ``canvas.rate_limit_remaining``,
``canvas.throttle_wait``). URLs are recorded without query string or
credentials, exception messages not at all: no token or query secret can
reach a span, an attribute, an event or a metric.
"""

from __future__ import annotations

import re
import time
from collections.abc import Awaitable, Callable, Iterable
from typing import Any, TypeVar

from yarl import URL

from resilient_canvas._breaker import CircuitState, breakers
from resilient_canvas._errors import CanvasException
from resilient_canvas._retry import CallInfo, translate
from resilient_canvas._telemetry import install

T = TypeVar("T")

#: The circuit state as the ``canvas.circuit.state`` gauge reports it.
STATE_VALUES = {CircuitState.CLOSED: 0, CircuitState.HALF_OPEN: 1, CircuitState.OPEN: 2}
#: Seconds boundaries of the duration histograms (the semantic conventions' advice).
DURATION_BUCKETS = [0.005, 0.01, 0.025, 0.05, 0.075, 0.1, 0.25, 0.5, 0.75, 1, 2.5, 5, 7.5, 10]

_PLACEHOLDER = re.compile(r":(\w+)")


def url_template(route: str | None) -> str | None:
    """``"GET /api/v1/courses/:id"`` as a URL template: ``/api/v1/courses/{id}``."""
    if not route:
        return None
    path = route.partition(" ")[2] or route
    return _PLACEHOLDER.sub(r"{\1}", path)


def _server(url: str | None) -> dict[str, Any]:
    """``server.address``, ``server.port`` and ``url.full`` without query or credentials."""
    if not url:
        return {}
    parsed = URL(url)
    if not parsed.is_absolute():
        return {}
    bare = parsed.with_user(None).with_password(None).with_query(None).with_fragment(None)
    return {"server.address": parsed.host, "server.port": parsed.port, "url.full": str(bare)}


def _error_type(error: BaseException) -> str:
    """Low-cardinality ``error.type``: the status for an HTTP error, else our class name."""
    if isinstance(error, CanvasException) and error.response_status is not None:
        return str(error.response_status)
    return type(error).__name__


class OtelHooks:
    """The telemetry hooks on OpenTelemetry.

    Args:
        tracer_provider: Defaults to the global one (resolved when the
            application sets it, even later).
        meter_provider: Likewise.
    """

    def __init__(self, tracer_provider: Any = None, meter_provider: Any = None) -> None:
        from opentelemetry import metrics, trace

        from resilient_canvas._version import __version__

        self._trace = trace
        self._metrics = metrics
        # Providers given explicitly are live; the global ones once the application sets them.
        self._live = tracer_provider is not None or meter_provider is not None
        self._checked_at = float("-inf")
        self._tracer = trace.get_tracer("resilient_canvas", __version__, tracer_provider)
        meter = metrics.get_meter("resilient_canvas", __version__, meter_provider=meter_provider)
        self._requests = meter.create_counter(
            "canvas.client.requests", unit="{request}", description="HTTP requests sent to Canvas."
        )
        self._throttled = meter.create_counter(
            "canvas.client.throttled",
            unit="{request}",
            description="Requests Canvas refused as throttled (429, legacy 403).",
        )
        self._retries = meter.create_counter(
            "canvas.client.retries", unit="{retry}", description="Retries, by reason."
        )
        self._duration = meter.create_histogram(
            "http.client.request.duration",
            unit="s",
            description="Duration of HTTP client requests.",
            explicit_bucket_boundaries_advisory=DURATION_BUCKETS,
        )
        self._throttle_wait = meter.create_histogram(
            "canvas.client.throttle_wait",
            unit="s",
            description="Time a request waited for the client-side throttle.",
            explicit_bucket_boundaries_advisory=DURATION_BUCKETS,
        )
        self._active = meter.create_up_down_counter(
            "http.client.active_requests",
            unit="{request}",
            description="Requests in flight.",
        )
        self._transitions = meter.create_counter(
            "canvas.circuit.transitions",
            unit="{transition}",
            description="Circuit breaker changes of state.",
        )
        meter.create_observable_gauge(
            "canvas.circuit.state",
            callbacks=[self._circuit_states],
            description="Circuit breaker state per Canvas origin: 0 closed, 1 half-open, 2 open.",
        )

    def active(self) -> bool:
        """Whether a provider is configured; until then spans and metrics would go nowhere.

        The API's proxies would record nothing yet cost a tenth of a request's
        overhead, so calls skip the hooks until the application sets a provider
        (global providers are set once and never unset). Looked up at most
        once a second: the lookup costs more than the rest of the check.
        """
        if self._live:
            return True
        now = time.monotonic()
        if now - self._checked_at < 1.0:
            return False
        self._checked_at = now
        proxy_tracing = isinstance(
            self._trace.get_tracer_provider(), self._trace.ProxyTracerProvider
        )
        proxy_metrics = type(self._metrics.get_meter_provider()).__name__ == "_ProxyMeterProvider"
        self._live = not (proxy_tracing and proxy_metrics)
        return self._live

    async def run_call(
        self, call: Callable[[], Awaitable[T]], method: str | None, route: str | None
    ) -> T:
        """Run one logical call inside an INTERNAL span."""
        template = url_template(route)
        attributes = {"http.request.method": method or "_OTHER"}
        if template:
            attributes["url.template"] = template
        name = f"canvas {method} {template}" if method and template else "canvas call"
        with self._tracer.start_as_current_span(
            name, attributes=attributes, record_exception=False, set_status_on_exception=False
        ) as span:
            try:
                return await call()
            except BaseException as error:
                span.set_attribute("error.type", _error_type(error))
                span.set_status(self._trace.StatusCode.ERROR)
                raise

    async def run_attempt(
        self,
        attempt: Callable[[], Awaitable[T]],
        *,
        method: str | None,
        route: str | None,
        url: str | None,
        resend_count: int,
        throttle_wait_s: float,
    ) -> T:
        """Run one HTTP attempt inside a CLIENT span; count and time it."""
        template = url_template(route)
        common: dict[str, Any] = {"http.request.method": method or "_OTHER"}
        if template:
            common["url.template"] = template
        server = _server(url)
        if "server.address" in server:
            common["server.address"] = server["server.address"]
        attributes = {**common, **server, "canvas.throttle_wait": round(throttle_wait_s, 6)}
        if resend_count:
            attributes["http.request.resend_count"] = resend_count
        name = f"{method} {template}" if method and template else (method or "HTTP")
        self._throttle_wait.record(throttle_wait_s, common)
        self._active.add(1, common)
        started = time.perf_counter()
        with self._tracer.start_as_current_span(
            name,
            kind=self._trace.SpanKind.CLIENT,
            attributes=attributes,
            record_exception=False,
            set_status_on_exception=False,
        ) as span:
            try:
                result = await attempt()
            except BaseException as raw:
                error = (
                    translate(raw, CallInfo(method=method, url=url))
                    if isinstance(raw, Exception)
                    else None
                )
                self._ended(span, common, started, error or raw)
                raise
            self._ended(span, common, started, None, result)
            return result

    def retry_scheduled(self, reason: str, method: str | None, route: str | None) -> None:
        """Count a retry by the reason of the failure before it."""
        attributes = {"reason": reason, "http.request.method": method or "_OTHER"}
        template = url_template(route)
        if template:
            attributes["url.template"] = template
        self._retries.add(1, attributes)

    def circuit_changed(self, origin: str, state: str) -> None:
        """Count a change of a circuit's state (the gauge reads the state itself)."""
        self._transitions.add(1, {"server.address": URL(origin).host or origin, "state": state})

    def _ended(
        self,
        span: Any,
        common: dict[str, Any],
        started: float,
        error: BaseException | None,
        result: Any = None,
    ) -> None:
        source: Any = error if isinstance(error, CanvasException) else result
        status = getattr(source, "response_status" if error else "status", None)
        measured = dict(common)
        if isinstance(status, int):
            span.set_attribute("http.response.status_code", status)
            measured["http.response.status_code"] = status
        for attribute, name in (
            ("canvas.request_cost", "request_cost"),
            ("canvas.rate_limit_remaining", "rate_limit_remaining"),
        ):
            value = getattr(source, name, None)
            if isinstance(value, int | float):
                span.set_attribute(attribute, float(value))
        if error is not None:
            kind = _error_type(error)
            span.set_attribute("error.type", kind)
            span.set_status(self._trace.StatusCode.ERROR)
            measured["error.type"] = kind
            if getattr(error, "reason", None) == "throttled":
                self._throttled.add(1, common)
        self._active.add(-1, common)
        self._requests.add(1, measured)
        self._duration.record(time.perf_counter() - started, measured)

    def _circuit_states(self, options: Any) -> Iterable[Any]:
        from opentelemetry.metrics import Observation

        return [
            Observation(STATE_VALUES[breaker.state], {"server.address": URL(origin).host or origin})
            for origin, breaker in breakers().items()
        ]


def install_if_available() -> bool:
    """Install the OpenTelemetry hooks if the ``otel`` extra is installed; return whether."""
    try:
        import opentelemetry.metrics
        import opentelemetry.trace  # noqa: F401
    except ImportError:
        return False
    install(OtelHooks())
    return True

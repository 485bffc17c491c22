"""Tests for the OpenTelemetry integration, with the SDK's in-memory exporters."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from typing import Any

import pytest
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind, StatusCode

from resilient_canvas import CanvasClient, CircuitBreaker, breaker_for, resilient
from resilient_canvas import exceptions as exc
from resilient_canvas._breaker import Outcome
from resilient_canvas._otel import OtelHooks, url_template
from resilient_canvas._telemetry import install
from resilient_canvas.exceptions import classify_response
from resilient_canvas.testing import (
    CanvasSimulator,
    FakeClock,
    Fault,
    FaultSettings,
    SimulatorSettings,
)

SECRET_QUERY = "hunter2-query-secret"


class Telemetry:
    """An SDK tracer and meter provider with in-memory exporters, installed as our hooks."""

    def __init__(self) -> None:
        self.spans = InMemorySpanExporter()
        tracer_provider = TracerProvider()
        tracer_provider.add_span_processor(SimpleSpanProcessor(self.spans))
        self.reader = InMemoryMetricReader()
        self.hooks = OtelHooks(tracer_provider, MeterProvider(metric_readers=[self.reader]))

    def finished(self) -> list[ReadableSpan]:
        return list(self.spans.get_finished_spans())

    def metrics(self) -> dict[str, list[Any]]:
        """Every data point, by metric name."""
        points: dict[str, list[Any]] = {}
        data = self.reader.get_metrics_data()
        assert data is not None
        for resource in data.resource_metrics:
            for scope in resource.scope_metrics:
                for metric in scope.metrics:
                    points.setdefault(metric.name, []).extend(metric.data.data_points)
        return points

    def total(self, name: str, **attributes: Any) -> float:
        """Sum of a counter's points whose attributes include *attributes*."""
        return sum(
            point.value
            for point in self.metrics().get(name, [])
            if attributes.items() <= dict(point.attributes).items()
        )


@pytest.fixture
def telemetry() -> Iterator[Telemetry]:
    """Our hooks on in-memory SDK providers; the previous hooks are restored after."""
    recorder = Telemetry()
    previous = install(recorder.hooks)
    yield recorder
    install(previous)


def by_kind(spans: list[ReadableSpan], kind: SpanKind) -> list[ReadableSpan]:
    return [span for span in spans if span.kind is kind]


@pytest.mark.parametrize(
    ("route", "expected"),
    [
        ("GET /api/v1/courses/:id", "/api/v1/courses/{id}"),
        ("PUT /api/v1/courses/:id/assignments/:id", "/api/v1/courses/{id}/assignments/{id}"),
        (None, None),
    ],
)
def test_url_template_uses_braces(route: str | None, expected: str | None) -> None:
    """Route templates read as the semantic conventions' url.template."""
    assert expected == url_template(route)


async def test_one_call_is_one_call_span_around_one_client_span(
    sim: CanvasSimulator, telemetry: Telemetry
) -> None:
    """A successful GET: a CLIENT span with HTTP and Canvas attributes inside the call span."""
    async with CanvasClient(sim.base_url, sim.token) as canvas:
        await canvas.get("courses/101")
    spans = telemetry.finished()
    (client,) = by_kind(spans, SpanKind.CLIENT)
    (call,) = by_kind(spans, SpanKind.INTERNAL)
    assert client.parent is not None
    assert call.context.span_id == client.parent.span_id
    assert "GET /api/v1/courses/{id}" == client.name
    attributes = dict(client.attributes or {})
    port = int(sim.base_url.rsplit(":", 1)[1])
    assert {
        "http.request.method": "GET",
        "url.template": "/api/v1/courses/{id}",
        "server.address": "127.0.0.1",
        "server.port": port,
        "url.full": f"{sim.base_url}/api/v1/courses/101",
        "http.response.status_code": 200,
    }.items() <= attributes.items()
    assert {"canvas.request_cost", "canvas.rate_limit_remaining", "canvas.throttle_wait"} <= set(
        attributes
    )
    assert "http.request.resend_count" not in attributes
    assert "canvas GET /api/v1/courses/{id}" == call.name


async def test_retried_attempts_have_resend_count_and_error_type(telemetry: Telemetry) -> None:
    """A 503 then a success: two client spans, the second a resend; metrics count both."""
    clock = FakeClock()
    faults = FaultSettings(schedule={1: Fault.MAINTENANCE})
    settings = SimulatorSettings.instant(faults=faults)
    async with (
        CanvasSimulator(settings, clock=clock, sleep=clock.sleep) as sim,
        CanvasClient(sim.base_url, sim.token, clock=clock, sleep=clock.sleep) as canvas,
    ):
        await canvas.get("courses/101")
    first, second = by_kind(telemetry.finished(), SpanKind.CLIENT)
    assert ("503", StatusCode.ERROR) == (first.attributes["error.type"], first.status.status_code)
    assert 1 == second.attributes["http.request.resend_count"]
    assert 200 == second.attributes["http.response.status_code"]
    assert 1 == telemetry.total("canvas.client.retries", reason="unavailable")
    assert 2 == telemetry.total("canvas.client.requests")
    assert 1 == telemetry.total("canvas.client.requests", **{"error.type": "503"})
    assert 0 == telemetry.total("http.client.active_requests")
    durations = telemetry.metrics()["http.client.request.duration"]
    assert 2 == sum(point.count for point in durations)
    waits = telemetry.metrics()["canvas.client.throttle_wait"]
    assert 2 == sum(point.count for point in waits)


async def test_throttled_attempts_are_counted(telemetry: Telemetry) -> None:
    """A 429 counts as a throttled request and a retry for reason throttled."""
    responses = [classify_response(429, {}, b"", method="GET", url="https://c.test/x")]

    async def no_wait(seconds: float) -> None:
        return None

    @resilient(sleep=no_wait)
    async def fetch() -> str:
        if responses:
            raise responses.pop()
        return "ok"

    assert "ok" == await fetch()
    assert 1 == telemetry.total("canvas.client.throttled")
    assert 1 == telemetry.total("canvas.client.retries", reason="throttled")


async def test_failed_call_span_has_error_type(sim: CanvasSimulator, telemetry: Telemetry) -> None:
    """A 404 ends both spans in error, error.type being the status."""
    async with CanvasClient(sim.base_url, sim.token) as canvas:
        with pytest.raises(exc.ResourceDoesNotExist):
            await canvas.get("courses/999999")
    (call,) = by_kind(telemetry.finished(), SpanKind.INTERNAL)
    assert ("404", StatusCode.ERROR) == (call.attributes["error.type"], call.status.status_code)


async def test_no_token_or_query_secret_anywhere(telemetry: Telemetry) -> None:
    """Neither the token nor a query value appears in any span, event or metric."""
    clock = FakeClock()
    faults = FaultSettings(schedule={1: Fault.MAINTENANCE})
    settings = SimulatorSettings.instant(faults=faults)
    async with (
        CanvasSimulator(settings, clock=clock, sleep=clock.sleep) as sim,
        CanvasClient(sim.base_url, sim.token, clock=clock, sleep=clock.sleep) as canvas,
    ):
        await canvas.get("courses", params={"search_term": SECRET_QUERY})
        with pytest.raises(exc.CanvasException):
            await canvas.get(f"courses/{SECRET_QUERY}", params={"q": SECRET_QUERY})
        token = sim.token
    spans = telemetry.finished()
    assert len(spans) >= 4
    exported = "\n".join(span.to_json() for span in spans)
    data = telemetry.reader.get_metrics_data()
    assert data is not None
    exported += data.to_json()
    assert token not in exported
    assert SECRET_QUERY not in exported.replace("courses/" + SECRET_QUERY, "")
    assert "search_term" not in exported


def test_circuit_state_gauge_reads_every_origin(telemetry: Telemetry) -> None:
    """The canvas.circuit.state gauge is 2 for an open circuit, 0 for a closed one."""
    clock = FakeClock()
    down = breaker_for("https://down.test", clock=clock)
    breaker_for("https://up.test", clock=clock)
    for _ in range(10):
        down.finish(down.admit(), Outcome.FAILURE)
    states = {
        point.attributes["server.address"]: point.value
        for point in telemetry.metrics()["canvas.circuit.state"]
    }
    assert {"down.test": 2, "up.test": 0} == states


def test_circuit_transitions_are_counted(telemetry: Telemetry) -> None:
    """Each change of state reported by the circuit shell is counted by state."""
    from resilient_canvas._circuit import finish

    breaker = CircuitBreaker(clock=FakeClock(), name="https://c.test")
    for _ in range(10):
        finish(breaker, breaker.admit(), Outcome.FAILURE)
    assert 1 == telemetry.total("canvas.circuit.transitions", state="open")


_GLOBAL_SCRIPT = """
import asyncio, json
from opentelemetry import trace
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from resilient_canvas import CanvasClient
from resilient_canvas.testing import CanvasSimulator, SimulatorSettings

async def main():
    async with CanvasSimulator(SimulatorSettings.instant()) as sim:
        # Configured after resilient_canvas was imported, as applications often do.
        exporter = InMemorySpanExporter()
        provider = TracerProvider()
        provider.add_span_processor(SimpleSpanProcessor(exporter))
        trace.set_tracer_provider(provider)
        async with CanvasClient(sim.base_url, sim.token) as canvas:
            await canvas.get("courses/101")
        print(json.dumps(sorted(span.name for span in exporter.get_finished_spans())))

asyncio.run(main())
"""

_ABSENT_SCRIPT = """
import sys
sys.modules["opentelemetry"] = None  # as if the otel extra were not installed
import resilient_canvas
from resilient_canvas import _telemetry
loaded = [name for name, module in sys.modules.items() if "opentelemetry" in name and module]
print(_telemetry.hooks is None and loaded == [])
"""


def _run(script: str) -> str:
    result = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(script)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert "" == result.stderr
    return result.stdout.strip()


def test_spans_go_to_the_global_tracer_provider_set_later() -> None:
    """With the SDK configured by the application, even after import, our spans reach it."""
    names = json.loads(_run(_GLOBAL_SCRIPT))
    assert ["GET /api/v1/courses/{id}", "canvas GET /api/v1/courses/{id}"] == names


def test_without_the_extra_no_hooks_are_installed() -> None:
    """Without opentelemetry, the seam stays None: nothing to call per request."""
    assert "True" == _run(_ABSENT_SCRIPT)

"""SIS imports: start one from a CSV or zip file, and wait for its outcome.

``POST /api/v1/accounts/:id/sis_imports`` takes the file as the request body
(``import_type=instructure_csv``, ``extension=csv|zip``), streamed from disk
through the client's send path. The import then moves through
``created``/``importing``/``cleanup_batch`` to ``imported``,
``imported_with_messages`` (warnings), ``failed``, ``failed_with_messages``
or ``aborted``. Waiting uses the job poller (``_jobs``): a deadline, backoff
polling and stuck detection (docs/sis.md).
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from resilient_canvas._api import CanvasApi
from resilient_canvas._errors import InvalidResponse, SisImportFailed
from resilient_canvas._jobs import JobKind, JobWait, wait_for_job
from resilient_canvas._retry import Clock, Sleep
from resilient_canvas._source import FileSource, Uploadable

DONE = frozenset({"imported", "imported_with_messages"})
FAILED = frozenset({"failed", "failed_with_messages", "aborted"})
#: How many of Canvas's messages an error's text shows (all stay on ``errors``).
_SHOWN_MESSAGES = 3


@dataclass(frozen=True, slots=True)
class SisImportResult:
    """A finished SIS import.

    Attributes:
        id: The import's id.
        workflow_state: ``imported`` or ``imported_with_messages``.
        warnings: Canvas's ``processing_warnings``, as (file, message) pairs.
        counts: What was imported, by kind (``users``, ``enrollments``...).
        data: The whole SIS import object as Canvas answered it.
    """

    id: int
    workflow_state: str
    warnings: list[tuple[str, str]] = field(default_factory=list)
    counts: dict[str, int] = field(default_factory=dict)
    data: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def of(cls, data: Mapping[str, Any]) -> SisImportResult:
        """Read a final SIS import object."""
        inner = data.get("data")
        counts = inner.get("counts") if isinstance(inner, Mapping) else None
        return cls(
            id=int(data.get("id") or 0),
            workflow_state=str(data.get("workflow_state")),
            warnings=_pairs(data.get("processing_warnings")),
            counts=dict(counts) if isinstance(counts, Mapping) else {},
            data=dict(data),
        )


async def start_sis_import(
    api: CanvasApi,
    account: int | str,
    file: Uploadable,
    *,
    import_type: str = "instructure_csv",
    extension: str | None = None,
    params: Mapping[str, Any],
) -> dict[str, Any]:
    """POST *file* as a new SIS import of *account*; return the SIS import object.

    Not repeated after a failure that may have been applied: that could start
    a second import.
    """
    named = isinstance(file, str | os.PathLike) or isinstance(getattr(file, "name", None), str)
    source = FileSource.of(file, name=None if named else "sis_import")
    chosen = extension or ("zip" if source.name.lower().endswith(".zip") else "csv")
    kind = "application/zip" if chosen == "zip" else "text/csv"
    source = dataclasses.replace(source, content_type=kind)
    response = await api.request(
        "POST",
        f"accounts/{account}/sis_imports",
        params={**params, "import_type": import_type, "extension": chosen},
        content=lambda: source.payload(filename=False),
        idempotent=False,
    )
    if not isinstance(response.data, Mapping) or "id" not in response.data:
        error = InvalidResponse(
            f"POST {response.url} answered {response.status} without an SIS import object."
        )
        error.method, error.url, error.request_sent = "POST", response.url, True
        raise error
    return dict(response.data)


async def wait_for_sis_import(
    api: CanvasApi,
    account: int | str,
    sis_import: Mapping[str, Any] | int | str,
    *,
    wait: JobWait,
    clock: Clock,
    sleep: Sleep,
    on_poll: Callable[[Mapping[str, Any]], None] | None = None,
) -> SisImportResult:
    """Poll the import until it ends (see :func:`~resilient_canvas._jobs.wait_for_job`)."""
    import_id = sis_import.get("id") if isinstance(sis_import, Mapping) else sis_import
    if import_id is None:
        raise ValueError("An SIS import object needs an 'id'.")

    async def fetch() -> Any:
        return (await api.request("GET", f"accounts/{account}/sis_imports/{import_id}")).data

    final = await wait_for_job(
        fetch,
        kind=JobKind("SIS import", DONE, FAILED, "progress", _failure, id_key="sis_import_id"),
        job_id=import_id,
        wait=wait,
        clock=clock,
        sleep=sleep,
        on_poll=on_poll,
    )
    return SisImportResult.of(final)


def _failure(state: Mapping[str, Any]) -> SisImportFailed:
    errors = _pairs(state.get("processing_errors"))
    shown = "; ".join(f"{file}: {message}" for file, message in errors[:_SHOWN_MESSAGES])
    more = f" (and {len(errors) - _SHOWN_MESSAGES} more)" if len(errors) > _SHOWN_MESSAGES else ""
    said = f' Canvas said: "{shown}"{more}.' if shown else " Canvas gave no message."
    error = SisImportFailed(
        f"SIS import {state.get('id')} ended {state.get('workflow_state')}.{said}",
        context={"sis_import_id": state.get("id")},
    )
    error.errors = [list(pair) for pair in errors]
    error.extra["sis_import"] = dict(state)
    return error


def _pairs(raw: Any) -> list[tuple[str, str]]:
    if not isinstance(raw, list):
        return []
    pairs = []
    for item in raw:
        if isinstance(item, list | tuple) and len(item) >= 2:
            pairs.append((str(item[0]), str(item[1])))
        elif item is not None:
            pairs.append(("", str(item)))
    return pairs

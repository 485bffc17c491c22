"""SIS imports in the simulator: Canvas's state machine, warnings, failures and stalls.

``POST /api/v1/accounts/:id/sis_imports`` reads the CSV (or zip) body as a
stream and decides the outcome from it, as Canvas does: unknown headers fail
the import (``failed_with_messages``), rows missing a required value are
skipped with a warning (``imported_with_messages``). Each poll of
``GET .../sis_imports/:id`` moves the import one step: ``created`` ->
``importing`` (progress 0, 50) -> ``cleanup_batch`` (90) -> final (100).

Tests force the rarer outcomes with :attr:`SisImports.next_outcomes`:
``"stuck"`` (stays ``importing`` at 40 forever), ``"failed"``,
``"failed_with_messages"`` and ``"aborted"``.
"""

from __future__ import annotations

import csv
import io
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web

#: Headers Canvas recognises, by the file they start (a small, common subset).
KNOWN_HEADERS = {
    "user_id": "users",
    "course_id": "courses",
    "section_id": "sections",
    "term_id": "terms",
    "account_id": "accounts",
}
#: Required values per kind (rows without one are skipped with a warning).
REQUIRED = {
    "users": ("user_id", "login_id"),
    "courses": ("course_id", "short_name"),
    "enrollments": ("course_id", "user_id", "role"),
    "sections": ("section_id", "course_id"),
    "terms": ("term_id",),
    "accounts": ("account_id",),
}
_KEPT_BYTES = 4 * 1024 * 1024
_STEPS = (("created", 0), ("importing", 0), ("importing", 50), ("cleanup_batch", 90))


@dataclass(slots=True)
class SisImports:
    """The simulated SIS imports.

    Attributes:
        imports: Every import by id (the objects Canvas answers).
        next_outcomes: Outcomes forced on the next imports, in order.
        received_bytes: Bytes of import files received.
    """

    imports: dict[int, dict[str, Any]] = field(default_factory=dict)
    next_outcomes: list[str] = field(default_factory=list)
    received_bytes: int = 0
    _plans: dict[int, tuple[str, list[list[str]], list[list[str]]]] = field(default_factory=dict)
    _steps: dict[int, int] = field(default_factory=dict)

    def add_routes(self, router: web.UrlDispatcher) -> None:
        """Register the SIS import routes on the Canvas side."""
        router.add_post("/api/v1/accounts/{account_id}/sis_imports", self._create)
        router.add_get("/api/v1/accounts/{account_id}/sis_imports/{import_id}", self._get)

    async def _create(self, request: web.Request) -> web.Response:
        kept = bytearray()
        size = 0
        # Streamed: only the first few MB are kept to decide the outcome.
        while chunk := await request.content.read(256 * 1024):
            size += len(chunk)
            if len(kept) < _KEPT_BYTES:
                kept += chunk[: _KEPT_BYTES - len(kept)]
        self.received_bytes += size
        if size == 0:
            return web.json_response(
                {"errors": [{"message": "No file or attachment was given"}]}, status=400
            )
        extension = request.query.get("extension", "csv")
        import_id = len(self.imports) + 1
        forced = self.next_outcomes.pop(0) if self.next_outcomes else None
        outcome, counts, warnings, errors = _judge(bytes(kept), extension)
        if forced is not None:
            outcome = forced
            if forced == "failed_with_messages" and not errors:
                errors = [["sis_import.csv", "Invalid or unknown user_id 'x' for enrollment"]]
        self._plans[import_id] = (outcome, warnings, errors)
        self._steps[import_id] = 0
        self.imports[import_id] = {
            "id": import_id,
            "workflow_state": "created",
            "progress": 0,
            "created_at": "2026-01-01T00:00:00Z",
            "data": {
                "import_type": request.query.get("import_type", "instructure_csv"),
                "counts": counts,
                "supplied_batches": sorted(k for k, v in counts.items() if v),
            },
            "processing_warnings": None,
            "processing_errors": None,
            "batch_mode": request.query.get("batch_mode") == "true",
        }
        return web.json_response(self.imports[import_id])

    async def _get(self, request: web.Request) -> web.Response:
        try:
            import_id = int(request.match_info["import_id"])
        except ValueError:
            import_id = -1
        record = self.imports.get(import_id)
        if record is None:
            return web.json_response(
                {"errors": [{"message": "The specified resource does not exist."}]}, status=404
            )
        self._advance(import_id, record)
        return web.json_response(record)

    def _advance(self, import_id: int, record: dict[str, Any]) -> None:
        outcome, warnings, errors = self._plans[import_id]
        step = self._steps[import_id]
        if record["workflow_state"] in (
            "imported",
            "imported_with_messages",
            "failed",
            "failed_with_messages",
            "aborted",
        ):
            return
        if outcome == "stuck" and step >= 2:
            record.update(workflow_state="importing", progress=40)
            return
        if step < len(_STEPS):
            state, progress = _STEPS[step]
            record.update(workflow_state=state, progress=progress)
            self._steps[import_id] = step + 1
            return
        record.update(workflow_state=outcome, progress=100)
        if warnings:
            record["processing_warnings"] = warnings
        if outcome.startswith("failed") and errors:
            record["processing_errors"] = errors


def _judge(
    body: bytes, extension: str
) -> tuple[str, dict[str, int], list[list[str]], list[list[str]]]:
    """Decide what Canvas would make of a CSV: outcome, counts, warnings, errors."""
    counts = dict.fromkeys(REQUIRED, 0)
    if extension == "zip":
        if not body.startswith(b"PK"):
            return "failed_with_messages", counts, [], [["", "The file is not a valid zip file"]]
        return "imported", counts, [], []
    name = "sis_import.csv"
    rows = list(csv.reader(io.StringIO(body.decode("utf-8", errors="replace"))))
    if not rows:
        return "failed_with_messages", counts, [], [[name, "The file is empty"]]
    header = [cell.strip() for cell in rows[0]]
    kind = _kind(header)
    if kind is None:
        return (
            "failed_with_messages",
            counts,
            [],
            [[name, "Couldn't find Canvas CSV import headers"]],
        )
    warnings = []
    for number, row in enumerate(rows[1:], start=2):
        values = dict(zip(header, row, strict=False))
        missing = [column for column in REQUIRED[kind] if not values.get(column, "").strip()]
        if missing:
            warnings.append([name, f"Row {number}: no {missing[0]} given, skipped"])
        else:
            counts[kind] += 1
    return ("imported_with_messages" if warnings else "imported"), counts, warnings, []


def _kind(header: list[str]) -> str | None:
    if {"course_id", "user_id", "role"} <= set(header):
        return "enrollments"
    if {"section_id", "course_id"} <= set(header):
        return "sections"
    return KNOWN_HEADERS.get(header[0]) if header else None

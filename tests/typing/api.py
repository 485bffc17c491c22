"""Type-checked, never run: the public API must keep these signatures for users' checkers."""

from __future__ import annotations

import datetime as dt
from pathlib import Path
from typing import Any

from resilient_canvas import (
    CanvasClient,
    CheckReader,
    Reconciler,
    RetryPolicy,
    SisImportResult,
    Write,
    resilient,
)
from resilient_canvas.exceptions import CanvasException, classify_response


@resilient
async def bare(course_id: int, *, include: list[str] | None = None) -> dict[str, int]:
    return {"id": course_id}


@resilient(policy=RetryPolicy(attempts=3, deadline=dt.timedelta(seconds=30)), idempotent=True)
async def configured(name: str) -> str:
    return name


async def enrolled(course_id: int, user_id: int) -> list[dict[str, int]]:
    return [{"course_id": course_id, "user_id": user_id}]


@resilient(reconcile=enrolled)
async def enroll(course_id: int, user_id: int) -> dict[str, int]:
    return {"course_id": course_id, "user_id": user_id}


async def check(write: Write, canvas: CheckReader) -> list[dict[str, int]] | None:
    return [await canvas.get(write.path)] if write.param("user_id") else None


async def use() -> None:
    result: dict[str, int] = await bare(1, include=["x"])
    text: str = await configured("x")
    enrollment: dict[str, int] = await enroll(1, 2)
    routes: dict[str, Reconciler | None] = {"POST /api/v1/groups/:id/memberships": check}
    async with CanvasClient("https://canvas.test", "token", reconcilers=routes) as canvas:
        data = await canvas.get("courses/1", params={"include": ["teachers"]})
        await canvas.post("groups/1/memberships", data={"user_id": 5}, reconcile=check)
        async for item in canvas.paginate("courses"):
            print(item, data)
        created: dict[str, Any] = await canvas.upload(
            Path("syllabus.pdf"), to="courses/1/files", on_duplicate="rename"
        )
        written: Path = await canvas.download(created, Path("copy.pdf"))
        graph: dict[str, Any] = await canvas.graphql("{ course(id: 1) { name } }", {"a": 1})
        async for node in canvas.graphql_nodes("q", connection="course.enrollmentsConnection"):
            print(node, written, graph)
        started: dict[str, Any] = await canvas.start_sis_import(1, b"user_id\n", batch_mode=True)
        outcome: SisImportResult = await canvas.wait_for_sis_import(1, started, within=60)
        print(outcome.warnings, outcome.counts)
    error: CanvasException = classify_response(404, {}, b"")
    print(result, text, enrollment, error.status_code)


# A check must take the decorated function's arguments: mypy refuses this one.
@resilient(reconcile=enrolled)  # type: ignore[arg-type]
async def mismatched(name: str) -> dict[str, int]:
    return {"name": len(name)}

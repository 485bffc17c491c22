"""Type-checked, never run: the public API must keep these signatures for users' checkers."""

from __future__ import annotations

import datetime as dt
from pathlib import Path
from typing import Any

from resilient_canvas import CanvasClient, RetryPolicy, SisImportResult, resilient
from resilient_canvas.exceptions import CanvasException, classify_response


@resilient
async def bare(course_id: int, *, include: list[str] | None = None) -> dict[str, int]:
    return {"id": course_id}


@resilient(policy=RetryPolicy(attempts=3, deadline=dt.timedelta(seconds=30)), idempotent=True)
async def configured(name: str) -> str:
    return name


async def use() -> None:
    result: dict[str, int] = await bare(1, include=["x"])
    text: str = await configured("x")
    async with CanvasClient("https://canvas.test", "token") as canvas:
        data = await canvas.get("courses/1", params={"include": ["teachers"]})
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
    print(result, text, error.status_code)

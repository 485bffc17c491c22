"""Type-checked, never run: the public API must keep these signatures for users' checkers."""

from __future__ import annotations

import datetime as dt

from resilient_canvas import CanvasClient, RetryPolicy, resilient
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
    error: CanvasException = classify_response(404, {}, b"")
    print(result, text, error.status_code)

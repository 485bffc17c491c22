"""The part of :class:`~resilient_canvas.CanvasClient` the workflows build on.

Files, GraphQL and SIS imports are written against this protocol, not the
client class, so the client can delegate to them without an import circle and
every workflow request goes through the client's one send path: its throttle,
retries, classification, logging and token handling.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any, Protocol

from yarl import URL

from resilient_canvas._encoding import Params
from resilient_canvas._policy import Seconds

if TYPE_CHECKING:
    from aiohttp.payload import Payload

    from resilient_canvas._store import StoreContext

#: Makes a request body for one attempt (a retried upload streams it again).
ContentFactory = Callable[[], "Payload"]


class ApiResponse(Protocol):
    """What the workflows read from a response."""

    @property
    def status(self) -> int: ...

    @property
    def headers(self) -> Mapping[str, str]: ...

    @property
    def data(self) -> Any: ...

    @property
    def content(self) -> bytes: ...

    @property
    def url(self) -> str: ...


class CanvasApi(Protocol):
    """A client's request machinery, as the workflows use it."""

    @property
    def base_url(self) -> str: ...

    async def request(
        self,
        method: str,
        path: str | URL,
        *,
        params: Params | None = None,
        data: Params | None = None,
        json: Any = None,
        idempotent: bool | None = None,
        deadline: Seconds | None = None,
        content: ContentFactory | None = None,
        follow_redirects: bool = True,
    ) -> ApiResponse: ...

    def _store_context(self) -> StoreContext: ...

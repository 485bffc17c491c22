"""Uploads and downloads: Canvas's three-step upload and redirected downloads.

Upload (``docs/files.md``):

1. POST the Canvas endpoint (``courses/1/files``...) with the name, size and
   type: Canvas answers an ``upload_url`` and ``upload_params``. Sent through
   the client like any call (throttled, retried, with the token).
2. POST ``upload_url``, usually another host, as multipart: every upload
   param first, the file **last**, streamed from disk, **without the token**.
   The URL is single-use, so a failed step 2 restarts at step 1.
3. Confirm: a 3xx from the store is followed with a GET (with the token only
   when it points at the Canvas origin; a confirmation on another origin is
   followed without it); a 201 carries the File, or a ``Location`` to GET it.

Download: a File's ``url`` on Canvas answers a redirect to a signed URL on the
store, which is fetched without the token, streamed to a temporary file next
to the destination and renamed over it only once complete. A dropped
connection resumes with ``Range`` when the store offers it.
"""

from __future__ import annotations

import errno
import json
import os
import secrets
import shutil
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
from yarl import URL

from resilient_canvas._api import CanvasApi
from resilient_canvas._body import read_body, read_error_body
from resilient_canvas._classify import classify_response
from resilient_canvas._errors import (
    CanvasException,
    InvalidResponse,
    LocalFileError,
    redact_error,
)
from resilient_canvas._http import redact_url, status_phrase, strip_json_guard
from resilient_canvas._policy import Seconds
from resilient_canvas._source import CHUNK, FileSource, ProgressCallback, Uploadable
from resilient_canvas._store import StoreContext, checked_url

#: Most of a store's step-2 answer we read: a File is a few kilobytes.
_STORE_ANSWER_LIMIT = 1024 * 1024


class _Settled(Exception):
    """Carries a Canvas step's final error past the upload's own retry loop.

    Steps 1 and 3 are retried by the client's send path already; only a
    failed step 2 restarts the upload.
    """

    def __init__(self, error: CanvasException) -> None:
        super().__init__()
        self.error = error


@dataclass(frozen=True, slots=True)
class _StoreAnswer:
    status: int
    location: URL | None
    data: Any


async def upload(
    api: CanvasApi,
    file: Uploadable,
    *,
    to: str,
    name: str | None = None,
    content_type: str | None = None,
    on_progress: ProgressCallback | None = None,
    deadline: Seconds | None = None,
    params: Mapping[str, Any],
) -> dict[str, Any]:
    """Upload *file* to the Canvas endpoint *to*; return the File (see the module docs)."""
    source = FileSource.of(file, name=name, content_type=content_type)
    store = api._store_context()
    ticket_params = {
        **params,
        "name": source.name,
        "size": source.size,
        "content_type": source.content_type,
    }
    # Canvas overwrites a same-named file unless told to rename: then sending
    # the file again after an answer we never saw gives the same result.
    repeatable = str(params.get("on_duplicate", "overwrite")) != "rename"

    async def attempt() -> dict[str, Any]:
        try:
            ticket = await api.request("POST", to, data=ticket_params)
        except CanvasException as error:
            raise _Settled(error) from None
        upload_url, upload_params = _read_ticket(ticket.data, ticket.url)
        answer = await _send_to_store(store, upload_url, upload_params, source, on_progress)
        try:
            return await _confirm(api, store, answer, upload_url)
        except CanvasException as error:
            raise _Settled(error) from None

    try:
        return await store.call(
            attempt, method="POST", url=to, idempotent=repeatable, label="upload", deadline=deadline
        )
    except _Settled as settled:
        raise settled.error from None


def _read_ticket(data: Any, url: str) -> tuple[URL, list[tuple[str, str]]]:
    if not isinstance(data, Mapping):
        raise _invalid("POST", url, "Canvas answered step 1 of the upload without an upload_url.")
    target = checked_url(data.get("upload_url"), what="the upload_url", method="POST", url=url)
    raw = data.get("upload_params") or {}
    if not isinstance(raw, Mapping):
        raise _invalid(
            "POST", url, "Canvas answered step 1 with upload_params that are not an object."
        )
    return target, [(str(key), "" if value is None else str(value)) for key, value in raw.items()]


async def _send_to_store(
    store: StoreContext,
    url: URL,
    upload_params: list[tuple[str, str]],
    source: FileSource,
    on_progress: ProgressCallback | None,
) -> _StoreAnswer:
    """Step 2: the params, then the file, to the store, without the token; one attempt."""
    safe = redact_url(url) or ""
    with aiohttp.MultipartWriter("form-data") as form:
        for key, value in upload_params:
            part = form.append(value)
            part.set_content_disposition("form-data", name=key)
        # Last: stores ignore (or refuse) fields sent after the file.
        form.append_payload(source.payload(on_progress)).set_content_disposition(
            "form-data", name="file", filename=source.name
        )
        async with store.session.post(
            url, data=form, headers=store.headers, timeout=store.timeout, allow_redirects=False
        ) as response:
            return await _read_store_answer(response, safe)


async def _read_store_answer(response: aiohttp.ClientResponse, safe: str) -> _StoreAnswer:
    if response.status >= 400:
        raise await _store_error(response, "POST", safe)
    raw_location = response.headers.get("Location")
    location = response.url.join(URL(raw_location)) if raw_location else None
    if 300 <= response.status < 400:
        if location is None:
            raise _invalid("POST", safe, "The file store redirected without a Location.")
        return _StoreAnswer(response.status, location, None)
    body = await read_body(response, _STORE_ANSWER_LIMIT) or b""
    data = _json_or_none(body)
    if not isinstance(data, Mapping) and location is None:
        kind = "an HTML page" if b"<html" in body[:512].lower() else "a body that is not JSON"
        raise _invalid(
            "POST",
            safe,
            f"The file store answered step 2 of the upload ({response.status}) with {kind} "
            "and no Location: the upload cannot be confirmed.",
        )
    return _StoreAnswer(response.status, location, data)


async def _confirm(
    api: CanvasApi, store: StoreContext, answer: _StoreAnswer, upload_url: URL
) -> dict[str, Any]:
    """Step 3: the File, from the store's answer or its confirmation URL."""
    if answer.status < 300 and isinstance(answer.data, Mapping) and "id" in answer.data:
        return dict(answer.data)
    assert answer.location is not None  # _read_store_answer guarantees one otherwise
    where = checked_url(
        str(answer.location), what="a confirmation URL", method="POST", url=str(upload_url)
    )
    if store.is_canvas(where):
        confirmed = (await api.request("GET", where)).data
    else:
        # Another origin: followed, but never with the token (docs/files.md).
        confirmed = await _get_json_from_store(store, where)
    if not isinstance(confirmed, Mapping):
        raise _invalid(
            "GET", redact_url(where) or "", "The upload confirmation did not answer a File."
        )
    return dict(confirmed)


async def _get_json_from_store(store: StoreContext, url: URL) -> Any:
    safe = redact_url(url) or ""
    async with store.session.get(url, headers=store.headers, timeout=store.timeout) as response:
        if response.status >= 400:
            raise await _store_error(response, "GET", safe)
        return _json_or_none(await read_body(response, _STORE_ANSWER_LIMIT) or b"")


async def _store_error(response: aiohttp.ClientResponse, method: str, safe: str) -> CanvasException:
    """The classified error of a store's error answer (retried by the usual rules)."""
    read = await read_error_body(response, _STORE_ANSWER_LIMIT)
    prefix = read[0] if read is not None else b""
    error = classify_response(response.status, response.headers, prefix, method=method, url=safe)
    # The classifier speaks of Canvas and the token; neither applies to the store.
    said = " ".join(str(error.extra.get("body_excerpt", "")).split())[:300]
    message = (
        f"{method} {safe} failed with {response.status} {status_phrase(response.status)}: the "
        "file store (another host, which never gets the access token) refused or failed "
        "the request; a signed URL may have expired." + (f' It said: "{said}"' if said else "")
    )
    error.message, error.args = message, (message,)
    redact_error(error)
    return error


def _json_or_none(body: bytes) -> Any:
    try:
        return json.loads(strip_json_guard(body)) if body.strip() else None
    except (ValueError, RecursionError):
        return None


def _invalid(method: str, url: str, message: str) -> InvalidResponse:
    error = InvalidResponse(message)
    error.method, error.url, error.request_sent = method, url, True
    return error


# ------------------------------------------------------------------- download


async def download(
    api: CanvasApi,
    file_or_url: Mapping[str, Any] | str | URL,
    dest: str | os.PathLike[str],
    *,
    on_progress: ProgressCallback | None = None,
    deadline: Seconds | None = None,
) -> Path:
    """Download a File (or its URL) to *dest*; return the path written (see the module docs)."""
    store = api._store_context()
    raw = file_or_url.get("url") if isinstance(file_or_url, Mapping) else str(file_or_url)
    url = checked_url(raw, what="the file URL", method="GET", url="download()")
    target = _destination(Path(dest), file_or_url, url)
    if store.is_canvas(url):
        first = await api.request("GET", url, follow_redirects=False)
        location = first.headers.get("Location")
        if not 300 <= first.status < 400 or not location:
            # Canvas served the bytes itself (read whole, within max_body_size).
            return _write_small(first.content, target)
        url = checked_url(
            str(URL(first.url).join(URL(location))),
            what="a download redirect",
            method="GET",
            url=first.url,
        )
    return await _stream_to(store, url, target, on_progress, deadline)


def _destination(dest: Path, file_or_url: Mapping[str, Any] | str | URL, url: URL) -> Path:
    return dest / _file_name(file_or_url, url) if dest.is_dir() else dest


def _file_name(file_or_url: Mapping[str, Any] | str | URL, url: URL) -> str:
    if isinstance(file_or_url, Mapping):
        for key in ("filename", "display_name"):
            value = file_or_url.get(key)
            if isinstance(value, str) and value and Path(value).name == value:
                return value
    return Path(url.path).name or "download"


def _temp_for(target: Path) -> Path:
    # Next to the destination: the final rename is atomic on one filesystem.
    return target.with_name(f".{target.name}.{secrets.token_hex(4)}.part")


def _write_small(content: bytes, target: Path) -> Path:
    temp = _temp_for(target)
    try:
        _ensure_space(temp.parent, len(content), target)
        temp.write_bytes(content)
        temp.replace(target)
    except BaseException:
        temp.unlink(missing_ok=True)
        raise
    return target


def free_bytes(directory: Path) -> int:
    """Free space where the download goes (a seam for tests of a full disk)."""
    return shutil.disk_usage(directory).free


def _ensure_space(directory: Path, needed: int, target: Path) -> None:
    free = free_bytes(directory)
    if needed > free:
        raise _disk_full(target, needed, free)


def _disk_full(target: Path, needed: int | None, free: int | None) -> LocalFileError:
    detail = (
        f" ({needed:,} bytes needed, {free:,} free)"
        if needed is not None and free is not None
        else ""
    )
    return LocalFileError(
        f"Not enough disk space to download to {target}{detail}; nothing was left behind. "
        "Free some space or choose another destination."
    )


@dataclass(slots=True)
class _Transfer:
    """A download in progress: what is on disk so far, and whether the store resumes."""

    temp: Path
    target: Path
    written: int = 0
    total: int | None = None
    resumable: bool = False


async def _stream_to(
    store: StoreContext,
    url: URL,
    target: Path,
    on_progress: ProgressCallback | None,
    deadline: Seconds | None,
) -> Path:
    transfer = _Transfer(temp=_temp_for(target), target=target)

    async def attempt() -> None:
        await _fetch_once(store, url, transfer, on_progress)

    try:
        await store.call(
            attempt, method="GET", url=url, idempotent=True, label="download", deadline=deadline
        )
        transfer.temp.replace(target)
    finally:
        transfer.temp.unlink(missing_ok=True)
    return target


async def _fetch_once(
    store: StoreContext, url: URL, transfer: _Transfer, on_progress: ProgressCallback | None
) -> None:
    """One GET of the store, resuming after what an earlier attempt wrote when it can."""
    headers = store.headers
    resuming = transfer.written > 0 and transfer.resumable
    if resuming:
        headers = {**headers, "Range": f"bytes={transfer.written}-"}
    safe = redact_url(url) or ""
    async with store.session.get(url, headers=headers, timeout=store.timeout) as response:
        if response.status >= 400:
            raise await _store_error(response, "GET", safe)
        if response.status != 206 or not resuming:
            transfer.written = 0  # the whole file again
        transfer.resumable = response.headers.get("Accept-Ranges", "").lower() == "bytes"
        remaining = response.content_length
        if remaining is not None:
            transfer.total = transfer.written + remaining
            _ensure_space(transfer.temp.parent, remaining, transfer.target)
        await _write_body(response, transfer, on_progress)


async def _write_body(
    response: aiohttp.ClientResponse, transfer: _Transfer, on_progress: ProgressCallback | None
) -> None:
    mode = "r+b" if transfer.written and transfer.temp.exists() else "wb"
    try:
        with transfer.temp.open(mode) as handle:
            if mode == "r+b":
                # Resuming: drop whatever a cut write left past the point resumed from.
                # (Never on a fresh file: ext4 flushes a file truncated to zero on close.)
                handle.seek(transfer.written)
                handle.truncate()
            async for chunk in response.content.iter_chunked(CHUNK):
                handle.write(chunk)
                transfer.written += len(chunk)
                if on_progress is not None:
                    on_progress(transfer.written, transfer.total or transfer.written)
    except OSError as exc:
        if isinstance(exc, aiohttp.ClientError):
            raise  # the network's failure, retried by the usual rules
        if exc.errno in (errno.ENOSPC, errno.EDQUOT):
            transfer.temp.unlink(missing_ok=True)
            raise _disk_full(transfer.target, transfer.total, None) from None
        raise LocalFileError(f"Could not write the download to {transfer.temp}: {exc}.") from None

"""Files in the simulator: Canvas's three-step upload and a file store on a second origin.

The Canvas side (routes on the simulator, behind its throttle and
authentication) hands out single-use upload URLs, confirms uploads and
redirects downloads; the store (its own server on another port, like an
object store on another host) receives the multipart upload, serves the
bytes with ``Range`` support, and records the ``Authorization`` header of
every request it sees, so a test can prove the token never reached it.

Files live in a temporary directory on disk, so a 1 GB upload costs the
simulator no memory.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal
from urllib.parse import quote

from aiohttp import BodyPartReader, web
from yarl import URL

_CHUNK = 256 * 1024


@dataclass(slots=True)
class _Ticket:
    """A pending upload: what step 1 asked for, valid for one step 2."""

    name: str
    size: int | None
    content_type: str
    folder: str
    on_duplicate: str
    context: str
    canvas_url: str


@dataclass(slots=True)
class FileStore:
    """The simulated file store and the Canvas routes of the upload and download flows.

    Attributes:
        base_url: The store's origin (set when the simulator starts).
        authorization_seen: The ``Authorization`` header of every request the
            store received, None when absent: all None unless a token leaked.
        confirm: How the store answers a finished upload: ``"redirect"`` (a
            303 to Canvas's confirmation URL, as S3 does) or ``"created"``
            (201 with the File and its ``Location``, as Instructure's file
            service does).
        fail_uploads: Answer the next this-many uploads with a 503 HTML page
            (the upload URL is used up all the same).
        drop_downloads_after: Cut the next download's connection after this
            many bytes (once), to test resuming.
        files: The confirmed and pending files by id.
        uploads: Step-2 uploads received.
        range_requests: Downloads that asked for a ``Range``.
    """

    base_url: str = ""
    authorization_seen: list[str | None] = field(default_factory=list)
    confirm: Literal["redirect", "created"] = "redirect"
    fail_uploads: int = 0
    drop_downloads_after: int | None = None
    files: dict[int, dict[str, Any]] = field(default_factory=dict)
    uploads: int = 0
    range_requests: int = 0
    _tickets: dict[str, _Ticket] = field(default_factory=dict)
    _paths: dict[int, Path] = field(default_factory=dict)
    _next_id: int = 1
    _secret: bytes = field(default_factory=lambda: secrets.token_bytes(16))
    _directory: tempfile.TemporaryDirectory[str] | None = None

    # ------------------------------------------------------------ lifecycle

    def store_app(self) -> web.Application:
        """The store's own application (served on its own port)."""
        app = web.Application(client_max_size=1024**4)
        app.router.add_post("/upload/{key}", self._receive)
        app.router.add_get("/objects/{file_id}/{name}", self._serve)
        return app

    def add_canvas_routes(self, router: web.UrlDispatcher) -> None:
        """Register the Canvas side: step 1, the confirmation, File reads, downloads."""
        for context in (
            "/api/v1/courses/{course_id}/files",
            "/api/v1/users/{user_id}/files",
            "/api/v1/folders/{folder_id}/files",
            "/api/v1/courses/{course_id}/assignments/{assignment_id}/submissions/{user_id}/files",
        ):
            router.add_post(context, self._start_upload)
        router.add_get("/api/v1/files/{file_id}/create_success", self._create_success)
        router.add_get("/api/v1/files/{file_id}", self._get_file)
        router.add_get("/files/{file_id}/download", self._download)

    def close(self) -> None:
        """Remove the stored bytes."""
        if self._directory is not None:
            self._directory.cleanup()
            self._directory = None

    def _dir(self) -> Path:
        if self._directory is None:
            self._directory = tempfile.TemporaryDirectory(prefix="canvas-sim-files-")
        return Path(self._directory.name)

    # ---------------------------------------------------------- Canvas side

    async def _start_upload(self, request: web.Request) -> web.Response:
        params = await _form(request)
        name = params.get("name", "").strip()
        if not name:
            return _errors(400, "name is missing")
        size = params.get("size")
        key = secrets.token_urlsafe(16)
        self._tickets[key] = _Ticket(
            name=name,
            size=int(size) if size and size.isdigit() else None,
            content_type=params.get("content_type") or "application/octet-stream",
            folder=params.get("parent_folder_path") or "/",
            on_duplicate=params.get("on_duplicate") or "overwrite",
            context=request.path.removeprefix("/api/v1/").rsplit("/files", 1)[0],
            canvas_url=str(request.url.origin()),
        )
        return web.json_response(
            {
                "upload_url": f"{self.base_url}/upload/{key}",
                "upload_params": {
                    "key": key,
                    "filename": name,
                    "content_type": self._tickets[key].content_type,
                },
                "file_param": "file",
            }
        )

    async def _create_success(self, request: web.Request) -> web.Response:
        record = self.files.get(_int(request.match_info["file_id"]))
        if record is None or request.query.get("uuid") != record["uuid"]:
            return _errors(404, "The specified resource does not exist.")
        record["upload_status"] = "success"
        return web.json_response(record)

    async def _get_file(self, request: web.Request) -> web.Response:
        record = self.files.get(_int(request.match_info["file_id"]))
        if record is None or record["upload_status"] != "success":
            return _errors(404, "The specified resource does not exist.")
        return web.json_response(record)

    async def _download(self, request: web.Request) -> web.Response:
        record = self.files.get(_int(request.match_info["file_id"]))
        if record is None or record["upload_status"] != "success":
            return _errors(404, "The specified resource does not exist.")
        file_id = record["id"]
        target = (
            URL(self.base_url)
            .with_path(f"/objects/{file_id}/{quote(record['filename'])}")
            .with_query({"sig": self._sign(file_id)})
        )
        raise web.HTTPFound(str(target))

    # ------------------------------------------------------------ the store

    async def _receive(self, request: web.Request) -> web.Response:
        self.authorization_seen.append(request.headers.get("Authorization"))
        ticket = self._tickets.pop(request.match_info["key"], None)
        if ticket is None:
            return _errors(400, "This upload URL is invalid or was already used.")
        if self.fail_uploads > 0:
            self.fail_uploads -= 1
            return web.Response(
                status=503, text="<html><body>Slow Down</body></html>", content_type="text/html"
            )
        reader = await request.multipart()
        fields: dict[str, str] = {}
        stored: tuple[Path, int] | None = None
        while (part := await reader.next()) is not None:
            if stored is not None:
                return _errors(400, "The file must be the last field of the form.")
            if not isinstance(part, BodyPartReader):
                return _errors(400, "Nested multipart is not accepted.")
            if part.name == "file":
                stored = await self._write(part)
            else:
                fields[part.name or ""] = await part.text()
        if stored is None:
            return _errors(400, "file is missing")
        if fields.get("key") is None:
            stored[0].unlink()
            return _errors(400, "upload_params must come before the file.")
        self.uploads += 1
        record = self._record(ticket, stored)
        canvas = URL(ticket.canvas_url)
        if self.confirm == "created":
            record["upload_status"] = "success"
            location = canvas.with_path(f"/api/v1/files/{record['id']}")
            return web.json_response(record, status=201, headers={"Location": str(location)})
        location = canvas.with_path(f"/api/v1/files/{record['id']}/create_success").with_query(
            {"uuid": record["uuid"]}
        )
        return web.Response(status=303, headers={"Location": str(location)})

    async def _write(self, part: BodyPartReader) -> tuple[Path, int]:
        path = self._dir() / secrets.token_hex(8)
        size = 0
        with path.open("wb") as handle:
            while chunk := await part.read_chunk(_CHUNK):
                handle.write(chunk)
                size += len(chunk)
        return path, size

    def _record(self, ticket: _Ticket, stored: tuple[Path, int]) -> dict[str, Any]:
        path, size = stored
        name = ticket.name
        same = [
            f
            for f in self.files.values()
            if (f["folder"], f["display_name"]) == (ticket.folder, name)
        ]
        if same and ticket.on_duplicate == "overwrite":
            record = same[0]
            self._paths[record["id"]].unlink(missing_ok=True)
        else:
            if same:
                stem, dot, ext = name.rpartition(".")
                name = f"{stem}-{len(same)}.{ext}" if dot else f"{name}-{len(same)}"
            record = {"id": self._next_id, "display_name": name, "folder": ticket.folder}
            self._next_id += 1
            self.files[record["id"]] = record
        file_id = record["id"]
        uuid = secrets.token_hex(20)
        record.update(
            uuid=uuid,
            filename=name,
            size=size,
            upload_status="pending",
            locked=False,
            context=ticket.context,
            url=f"{ticket.canvas_url}/files/{file_id}/download?download_frd=1&verifier={uuid}",
        )
        record["content-type"] = ticket.content_type
        self._paths[file_id] = path
        return record

    async def _serve(self, request: web.Request) -> web.StreamResponse:
        self.authorization_seen.append(request.headers.get("Authorization"))
        file_id = _int(request.match_info["file_id"])
        path = self._paths.get(file_id)
        if path is None or not hmac.compare_digest(
            request.query.get("sig", ""), self._sign(file_id)
        ):
            return web.Response(status=403, text="<Error>AccessDenied</Error>")
        if "Range" in request.headers:
            self.range_requests += 1
        if self.drop_downloads_after is not None:
            cut, self.drop_downloads_after = self.drop_downloads_after, None
            return await _drop_after(request, path, cut)
        return web.FileResponse(path, headers={"Content-Type": "application/octet-stream"})

    def _sign(self, file_id: int) -> str:
        return hmac.new(self._secret, str(file_id).encode(), hashlib.sha256).hexdigest()[:32]


async def _drop_after(request: web.Request, path: Path, cut: int) -> web.StreamResponse:
    """Send the first *cut* bytes of a full answer, then cut the connection."""
    response = web.StreamResponse(headers={"Accept-Ranges": "bytes"})
    response.content_length = _size(path)
    await response.prepare(request)
    with path.open("rb") as handle:
        await response.write(handle.read(cut))
    if request.transport is not None:
        request.transport.abort()
    return response


def _size(path: Path) -> int:
    return path.stat().st_size


async def _form(request: web.Request) -> dict[str, str]:
    params = dict(request.query.items())
    if request.content_type == "application/json":
        body = await request.json()
        if isinstance(body, dict):
            params.update({str(k): str(v) for k, v in body.items()})
    elif request.can_read_body:
        form = await request.post()
        params.update({k: v for k, v in form.items() if isinstance(v, str)})
    return params


def _errors(status: int, message: str) -> web.Response:
    return web.json_response({"errors": [{"message": message}]}, status=status)


def _int(raw: str) -> int:
    try:
        return int(raw)
    except ValueError:
        return -1

"""What an upload sends: a path, bytes or a binary file, streamed and re-readable.

A retried upload sends the file again from its first byte, so a source is a
recipe for a body (:meth:`FileSource.payload`, one per attempt), not a stream
read once. Files are read in chunks off the event loop: a 1 GB upload holds a
chunk or two in memory, never the file.
"""

from __future__ import annotations

import asyncio
import io
import mimetypes
import os
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

from aiohttp.abc import AbstractStreamWriter
from aiohttp.payload import Payload

#: Read size: large enough that reading is not the bottleneck on loopback,
#: small enough that memory stays flat.
CHUNK = 256 * 1024

#: What a caller may upload.
Uploadable = str | os.PathLike[str] | bytes | bytearray | memoryview | IO[bytes]

#: Called with the bytes sent so far and the total, after each chunk.
ProgressCallback = Callable[[int, int], None]


@dataclass(frozen=True, slots=True)
class FileSource:
    """A body to upload: where its bytes come from, its size, name and type."""

    name: str
    size: int
    content_type: str
    path: Path | None = None
    data: bytes | None = None
    stream: IO[bytes] | None = None
    start: int = 0

    @classmethod
    def of(
        cls, file: Uploadable, *, name: str | None = None, content_type: str | None = None
    ) -> FileSource:
        """Describe *file*: a path, bytes, or a binary file object (read from its position).

        Raises:
            TypeError: For text or anything that is not one of those.
            FileNotFoundError: For a path that does not exist.
            ValueError: For a file object that cannot seek (it could not be
                sent again after a failure) or a source without a name.
        """
        if isinstance(file, bytes | bytearray | memoryview):
            source = cls(name=name or "", size=len(file), content_type="", data=bytes(file))
        elif isinstance(file, str | os.PathLike):
            path = Path(file)
            source = cls(
                name=name or path.name, size=path.stat().st_size, content_type="", path=path
            )
        elif isinstance(getattr(file, "encoding", None), str):  # a text file
            raise TypeError("Upload a binary file (open it with 'rb'), not a text file.")
        elif hasattr(file, "read") and hasattr(file, "seek"):
            source = _stream_source(file, name)
        else:
            raise TypeError(
                f"Cannot upload {type(file).__name__}: give a path, bytes or a binary file."
            )
        if not source.name:
            raise ValueError("name= is required when uploading bytes or an unnamed file.")
        guessed = mimetypes.guess_type(source.name)[0] or "application/octet-stream"
        return cls(
            name=source.name,
            size=source.size,
            content_type=content_type or guessed,
            path=source.path,
            data=source.data,
            stream=source.stream,
            start=source.start,
        )

    def payload(
        self, progress: ProgressCallback | None = None, *, filename: bool = True
    ) -> SourcePayload:
        """A fresh body for one attempt, reporting *progress* as chunks are sent."""
        return SourcePayload(self, progress, filename=filename)

    @contextmanager
    def reader(self) -> Iterator[IO[bytes]]:
        """The bytes from the first, for one attempt."""
        if self.path is not None:
            with self.path.open("rb") as handle:
                yield handle
        elif self.stream is not None:
            self.stream.seek(self.start)
            yield self.stream
        else:
            yield io.BytesIO(self.data or b"")


def _stream_source(file: Any, name: str | None) -> FileSource:
    try:
        start = file.tell()
        end = file.seek(0, io.SEEK_END)
        file.seek(start)
    except (OSError, ValueError) as exc:
        raise ValueError(
            "The file object cannot seek, so it could not be sent again after a failure; "
            "pass its path or its bytes."
        ) from exc
    raw_name = getattr(file, "name", None)
    default = Path(raw_name).name if isinstance(raw_name, str) else ""
    return FileSource(
        name=name or default, size=end - start, content_type="", stream=file, start=start
    )


class SourcePayload(Payload):
    """An aiohttp body streamed from a :class:`FileSource` in chunks, off the event loop."""

    def __init__(
        self, source: FileSource, progress: ProgressCallback | None, *, filename: bool
    ) -> None:
        super().__init__(
            source,
            content_type=source.content_type,
            filename=source.name if filename else None,
        )
        self._source = source
        self._progress = progress

    @property
    def size(self) -> int:
        """Known in advance, so the request carries a Content-Length (stores require one)."""
        return self._source.size

    async def write(self, writer: AbstractStreamWriter) -> None:
        """Send the bytes chunk by chunk; reads run in a thread, files are not read at once."""
        loop = asyncio.get_running_loop()
        sent, total = 0, self._source.size
        with self._source.reader() as handle:
            while sent < total:
                chunk = await loop.run_in_executor(None, handle.read, min(CHUNK, total - sent))
                if not chunk:
                    raise OSError(
                        f"{self._source.name} became shorter while it was uploaded "
                        f"({sent:,} of {total:,} bytes read)."
                    )
                await writer.write(chunk)
                sent += len(chunk)
                if self._progress is not None:
                    self._progress(sent, total)

    def decode(self, encoding: str = "utf-8", errors: str = "strict") -> str:
        """Not offered: the body is a file, never read whole into memory."""
        raise TypeError("An upload body is streamed, not decoded.")

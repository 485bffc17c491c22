"""The ``upload``, ``download`` and ``sis-import`` commands of ``resilient-canvas``.

Each shows a rich progress bar on stderr (when it is a terminal), prints its
result as JSON on stdout (``--json``: one compact line, for machines), and
exits with the code of its failure class (see :func:`resilient_canvas._cli.exit_code_for`).
"""

from __future__ import annotations

import argparse
import json
import os
from collections.abc import AsyncIterator, Callable, Mapping
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.progress import (
    BarColumn,
    DownloadColumn,
    Progress,
    TextColumn,
    TimeRemainingColumn,
    TransferSpeedColumn,
)

from resilient_canvas._client import CanvasClient
from resilient_canvas._policy import RetryPolicy

#: Whole transfers get an hour; each Canvas call the usual retries.
_TRANSFER_DEADLINE = 3600.0

Usage = Callable[[str], Exception]


def add_connection_options(parser: argparse.ArgumentParser) -> None:
    """--base-url, --token, --user-agent, --attempts, --json, --debug: shared by the commands."""
    parser.add_argument(
        "--base-url",
        default=os.environ.get("CANVAS_BASE_URL"),
        help="Canvas root URL (default: $CANVAS_BASE_URL)",
    )
    parser.add_argument(
        "--token",
        default=None,
        help="access token (default: $CANVAS_ACCESS_TOKEN; prefer the variable)",
    )
    parser.add_argument(
        "--user-agent",
        default=os.environ.get("CANVAS_USER_AGENT"),
        help="your product and contact, sent before ours (default: $CANVAS_USER_AGENT)",
    )
    parser.add_argument("--attempts", type=int, default=5, help="attempts per request (default: 5)")
    parser.add_argument("--json", action="store_true", help="print one compact JSON line")
    parser.add_argument(
        "--debug",
        action="store_true",
        help="show the full error page: every exception in the chain with its traceback",
    )


def add_commands(commands: Any) -> None:
    """Register ``upload``, ``download`` and ``sis-import`` on the subparsers *commands*."""
    upload = commands.add_parser("upload", help="upload a file (Canvas's three steps)")
    upload.add_argument("path", help="the file to upload")
    upload.add_argument(
        "--to", required=True, help="the endpoint, e.g. courses/101/files or users/self/files"
    )
    upload.add_argument("--name", default=None, help="its name in Canvas (default: the file's)")
    upload.add_argument("--folder", default=None, help="parent_folder_path in Canvas")
    upload.add_argument(
        "--on-duplicate",
        choices=["overwrite", "rename"],
        default=None,
        help="Canvas's on_duplicate",
    )
    add_connection_options(upload)

    download = commands.add_parser("download", help="download a file by its URL")
    download.add_argument("url", help="a File's url (or any file URL on Canvas or its store)")
    download.add_argument("dest", help="the path to write, or a directory")
    add_connection_options(download)

    sis = commands.add_parser("sis-import", help="start an SIS import (CSV or zip)")
    sis.add_argument("account", help="the account id, e.g. 1 or self")
    sis.add_argument("file", help="the CSV or zip file")
    sis.add_argument("--wait", action="store_true", help="wait for the import to end")
    sis.add_argument(
        "--poll-every", type=float, default=2.0, help="seconds before the second poll (default: 2)"
    )
    sis.add_argument(
        "--within", type=float, default=3600.0, help="seconds to wait in all (default: 3600)"
    )
    sis.add_argument(
        "--stuck-after",
        type=float,
        default=900.0,
        help="seconds without progress before giving up as stuck (default: 900)",
    )
    sis.add_argument(
        "--extension", choices=["csv", "zip"], default=None, help="default: from the file name"
    )
    add_connection_options(sis)


@asynccontextmanager
async def _client(args: argparse.Namespace, usage: Usage) -> AsyncIterator[CanvasClient]:
    token = args.token or os.environ.get("CANVAS_ACCESS_TOKEN")
    if not args.base_url:
        raise usage("No Canvas URL: set CANVAS_BASE_URL or pass --base-url.")
    if not token:
        raise usage("No access token: set CANVAS_ACCESS_TOKEN or pass --token.")
    if args.attempts < 1:
        raise usage("--attempts must be at least 1.")
    policy = RetryPolicy(attempts=args.attempts, deadline=60.0, attempt_timeout=30.0)
    try:
        canvas = CanvasClient(args.base_url, token, policy=policy, user_agent=args.user_agent)
    except ValueError as exc:
        raise usage(str(exc)) from None
    async with canvas:
        yield canvas


def _existing_file(raw: str, usage: Usage) -> tuple[Path, int]:
    path = Path(raw)
    if not path.is_file():
        raise usage(f"No file at {raw}.")
    return path, path.stat().st_size


def _bar(console: Console) -> Progress:
    return Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        DownloadColumn(),
        TransferSpeedColumn(),
        TimeRemainingColumn(),
        console=console,
        transient=True,
        disable=not console.is_terminal,
    )


def _print(data: Any, args: argparse.Namespace, stdout: Any) -> None:
    print(json.dumps(data, indent=None if args.json else 2, default=str), file=stdout)


async def run_upload(args: argparse.Namespace, stdout: Any, console: Console, usage: Usage) -> int:
    """``resilient-canvas upload PATH --to ENDPOINT``: print the File."""
    path, size = _existing_file(args.path, usage)
    params = {
        key: value
        for key, value in (("parent_folder_path", args.folder), ("on_duplicate", args.on_duplicate))
        if value is not None
    }
    async with _client(args, usage) as canvas:
        with _bar(console) as bar:
            task = bar.add_task(f"upload {path.name}", total=size)
            created = await canvas.upload(
                path,
                to=args.to,
                name=args.name,
                on_progress=lambda sent, total: bar.update(task, completed=sent, total=total),
                deadline=_TRANSFER_DEADLINE,
                **params,
            )
    _print(created, args, stdout)
    return 0


async def run_download(
    args: argparse.Namespace, stdout: Any, console: Console, usage: Usage
) -> int:
    """``resilient-canvas download URL DEST``: print where it went and its size."""
    async with _client(args, usage) as canvas:
        with _bar(console) as bar:
            task = bar.add_task("download", total=None)
            try:
                written = await canvas.download(
                    args.url,
                    args.dest,
                    on_progress=lambda got, total: bar.update(task, completed=got, total=total),
                    deadline=_TRANSFER_DEADLINE,
                )
            except ValueError as exc:
                raise usage(str(exc)) from None
    _print({"path": str(written), "bytes": _existing_file(str(written), usage)[1]}, args, stdout)
    return 0


async def run_sis_import(
    args: argparse.Namespace, stdout: Any, console: Console, usage: Usage
) -> int:
    """``resilient-canvas sis-import ACCOUNT FILE [--wait]``: print the import or its result."""
    path, _ = _existing_file(args.file, usage)
    async with _client(args, usage) as canvas:
        started = await canvas.start_sis_import(args.account, path, extension=args.extension)
        if not args.wait:
            _print(started, args, stdout)
            return 0
        with Progress(
            TextColumn("{task.description}"),
            BarColumn(),
            TextColumn("{task.percentage:>3.0f}%"),
            console=console,
            transient=True,
            disable=not console.is_terminal,
        ) as bar:
            task = bar.add_task(f"SIS import {started['id']}", total=100)

            def show(state: Mapping[str, Any]) -> None:
                progress = state.get("progress")
                if isinstance(progress, int | float):
                    bar.update(task, completed=progress)

            result = await canvas.wait_for_sis_import(
                args.account,
                started,
                poll_every=args.poll_every,
                within=args.within,
                stuck_after=args.stuck_after,
                on_poll=show,
            )
    _print(
        {
            "id": result.id,
            "workflow_state": result.workflow_state,
            "counts": result.counts,
            "warnings": [list(pair) for pair in result.warnings],
        },
        args,
        stdout,
    )
    return 0

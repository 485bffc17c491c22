"""Canvas's pagination, as ``lib/api.rb`` does it: per_page, Link headers, bookmarks.

Ordinal collections take ``page=N`` and answer ``[]`` past the end; bookmark
collections take ``page=first`` then ``page=bookmark:<urlsafe base64 JSON>``,
have no ``rel="last"``, and silently restart on an undecodable bookmark.
Links are absolute, joined by "," without spaces, keep the caller's
parameters, drop ``access_token`` and put ``page`` and ``per_page`` last.
"""

from __future__ import annotations

import base64
import binascii
import json
import math
from typing import Any

from aiohttp import web

DEFAULT_PER_PAGE = 10
MAX_PER_PAGE = 100


def _per_page(request: web.Request) -> int:
    raw = request.query.get("per_page")
    if raw is None:
        return DEFAULT_PER_PAGE
    try:
        value = int(raw)
    except ValueError:
        return 1
    return min(MAX_PER_PAGE, max(1, value))


def _page_url(request: web.Request, page: str, per_page: int) -> str:
    # Links keep the caller's parameters, drop the token, and put page and
    # per_page last, as Canvas's Api.build_links does.
    kept = [
        (k, v) for k, v in request.query.items() if k not in {"page", "per_page", "access_token"}
    ]
    return str(request.url.with_query([*kept, ("page", page), ("per_page", str(per_page))]))


def _link_header(request: web.Request, rels: list[tuple[str, str]], per_page: int) -> str:
    return ",".join(f'<{_page_url(request, page, per_page)}>; rel="{rel}"' for rel, page in rels)


def ordinal_page(request: web.Request, items: list[dict[str, Any]]) -> web.Response:
    """Answer one ``page=N`` page of *items* with Canvas's Link header."""
    per_page = _per_page(request)
    try:
        page = max(1, int(request.query.get("page", "1")))
    except ValueError:
        page = 1
    last = max(1, math.ceil(len(items) / per_page))
    rels = [("current", str(page))]
    if page < last:
        rels.append(("next", str(page + 1)))
    if page > 1:
        rels.append(("prev", str(page - 1)))
    rels += [("first", "1"), ("last", str(last))]
    chunk = items[(page - 1) * per_page : page * per_page]
    return web.json_response(chunk, headers={"Link": _link_header(request, rels, per_page)})


def _encode_bookmark(last_id: int) -> str:
    raw = base64.urlsafe_b64encode(json.dumps([last_id]).encode()).decode()
    return "bookmark:" + raw.rstrip("=")


def _decode_bookmark(page: str | None) -> int | None:
    if not page or not page.startswith("bookmark:"):
        return None
    token = page.removeprefix("bookmark:")
    try:
        decoded = json.loads(base64.urlsafe_b64decode(token + "=" * (-len(token) % 4)))
    except (ValueError, binascii.Error):
        return None
    valid = isinstance(decoded, list) and len(decoded) == 1 and isinstance(decoded[0], int)
    return decoded[0] if valid else None


def bookmark_page(request: web.Request, items: list[dict[str, Any]]) -> web.Response:
    """Answer one ``page=bookmark:...`` page of *items* (ordered by id); no last link."""
    per_page = _per_page(request)
    current = request.query.get("page", "first")
    after = _decode_bookmark(current)
    if after is None:
        # An undecodable bookmark silently starts over, as Canvas does.
        current, remaining = "first", sorted(items, key=lambda item: item["id"])
    else:
        remaining = sorted((i for i in items if i["id"] > after), key=lambda item: item["id"])
    chunk = remaining[:per_page]
    rels = [("current", current)]
    if len(remaining) > per_page:
        rels.append(("next", _encode_bookmark(chunk[-1]["id"])))
    rels.append(("first", "first"))
    return web.json_response(chunk, headers={"Link": _link_header(request, rels, per_page)})

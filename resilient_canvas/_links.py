"""Reading RFC 8288 ``Link`` headers one entry at a time.

Pagination depends on ``rel="next"`` alone, so the entries are read
independently: a malformed ``prev``, ``first`` or ``last`` entry must not hide a
well-formed ``next`` (ending a listing early, silently), and a malformed
``next`` must be reported rather than read as "no more pages". Pure: no I/O.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass, field

from yarl import URL

#: Schemes a link may use: anything else (``javascript:``, ``data:``, ``file:``)
#: is never fetched, let alone with the access token.
_FOLLOWABLE_SCHEMES = frozenset({"http", "https"})
#: One relation type: a registered name or a URI; no quotes, brackets or separators.
_REL_TOKEN = re.compile(r'[^\s"<>,;=]+')
#: What follows ``rel=`` in an entry too broken to parse: its words are taken
#: as the relations it names, so a broken ``next`` is reported, never dropped.
_LOOSE_REL = re.compile(r"(?i)\brel\s*=([^;]*)")
_WORD = re.compile(r"[a-z][a-z0-9.\-]*")
_ENTRY_START = re.compile(r",(?=\s*<)")


@dataclass(frozen=True, slots=True)
class ParsedLinks:
    """The entries of ``Link`` headers by relation.

    Attributes:
        urls: Absolute http(s) URL of each relation read without doubt.
        errors: Why a relation could not be read, for each relation named by
            a malformed, unusable or contradictory entry.
    """

    urls: dict[str, URL] = field(default_factory=dict)
    errors: dict[str, str] = field(default_factory=dict)


def parse_links(values: Iterable[str], base: URL) -> ParsedLinks:
    """Read ``Link`` header values, resolving relative targets against *base*.

    Never raises: an entry that cannot be read is recorded in ``errors``
    under every relation it seems to name, and other entries are unaffected.
    Two different URLs for one relation are an error too (which one is the
    next page?).
    """
    parsed = ParsedLinks()
    for value in values:
        for entry in _split_entries(value):
            if entry.strip():
                _read_entry(entry.strip(), base, parsed)
    for rel in parsed.errors:
        parsed.urls.pop(rel, None)
    return parsed


def _read_entry(entry: str, base: URL, parsed: ParsedLinks) -> None:
    target, rels, problem = _parse_entry(entry)
    if problem is None:
        assert target is not None
        url, problem = _resolve(target, base)
    if problem is not None:
        for rel in rels or _loose_rels(entry):
            parsed.errors.setdefault(rel, problem)
        return
    for rel in rels:
        known = parsed.urls.get(rel)
        if known is not None and known != url:
            parsed.errors.setdefault(rel, "two different targets are given for it")
        parsed.urls[rel] = url


def _parse_entry(entry: str) -> tuple[str | None, list[str], str | None]:
    """Return (target, relations, problem) for one ``<uri>; rel="a b"`` entry."""
    if not entry.startswith("<") or ">" not in entry:
        return None, [], "its target is not enclosed in <>"
    target, _, rest = entry[1:].partition(">")
    rels: list[str] = []
    params = _split_outside_quotes(rest, ";")
    if params and params[0].strip():
        return None, [], "text follows its target outside a parameter"
    for param in params[1:]:
        name, equals, raw = param.partition("=")
        name = name.strip().lower()
        if not name or (equals and not raw.strip()):
            return None, [], f"a parameter is malformed ({param.strip()[:40]!r})"
        if name == "rel":
            value = raw.strip()
            if value.startswith('"'):
                if len(value) < 2 or not value.endswith('"'):
                    return None, [], "its rel value has an unterminated quote"
                value = value[1:-1]
            rels = value.lower().split()
            if not all(_REL_TOKEN.fullmatch(rel) for rel in rels):
                return None, [], "its rel value is not a list of relation types"
    if not rels:
        return None, [], "it names no relation"
    return target.strip(), rels, None


def _resolve(target: str, base: URL) -> tuple[URL, str | None]:
    try:
        url = URL(target)
        if not url.scheme:  # relative, or scheme-relative ("//host/path")
            url = base.join(url)
        host = url.host
    except (ValueError, TypeError) as exc:
        return base, f"its target is not a valid URL ({exc})"
    if url.scheme not in _FOLLOWABLE_SCHEMES:
        return base, f"its target uses the {url.scheme or 'empty'}: scheme, not http(s)"
    if not host:
        return base, "its target has no host"
    return url, None


def _loose_rels(entry: str) -> list[str]:
    return [
        word for match in _LOOSE_REL.finditer(entry) for word in _WORD.findall(match[1].lower())
    ]


def _split_entries(value: str) -> list[str]:
    """Split a header value into entries, so that a broken entry stays alone.

    A comma followed by ``<`` always starts an entry: ``<`` cannot appear in a
    URL or a relation, so an unclosed ``<`` or quote before it belongs to the
    broken entry and must not swallow the next one.
    """
    return [
        entry for chunk in _ENTRY_START.split(value) for entry in _split_outside_quotes(chunk, ",")
    ]


def _split_outside_quotes(text: str, separator: str) -> list[str]:
    """Split on *separator* outside ``<...>`` and ``"..."`` (commas are legal in URLs)."""
    parts: list[str] = []
    start, in_quote, in_angle = 0, False, False
    for index, char in enumerate(text):
        if char == '"' and not in_angle:
            in_quote = not in_quote
        elif char == "<" and not in_quote:
            in_angle = True
        elif char == ">" and not in_quote:
            in_angle = False
        elif char == separator and not in_quote and not in_angle:
            parts.append(text[start:index])
            start = index + 1
    parts.append(text[start:])
    return parts

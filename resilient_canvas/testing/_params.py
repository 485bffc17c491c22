"""Decoding Rails-style nested parameters (``user[name]=x``, ``include[]=a``) as Canvas does."""

from __future__ import annotations

import re
from collections.abc import Iterable
from typing import Any

_KEY_PART = re.compile(r"\[([^\]]*)\]")


def parse_nested(pairs: Iterable[tuple[str, str]]) -> dict[str, Any]:
    """Turn flat ``key[sub][]=value`` pairs into nested dicts and lists.

    Malformed keys are kept as plain keys rather than rejected, as Rails does.
    """
    result: dict[str, Any] = {}
    for key, value in pairs:
        head, _, rest = key.partition("[")
        parts = [head, *_KEY_PART.findall("[" + rest)] if rest else [head]
        _assign(result, parts, value)
    return result


def _assign(target: dict[str, Any], parts: list[str], value: str) -> None:
    node: Any = target
    for index, part in enumerate(parts):
        last = index == len(parts) - 1
        following = None if last else parts[index + 1]
        if isinstance(node, list):
            if last:
                node.append(value)
                return
            # "a[][b]": start a new dict unless the previous one lacks this key.
            if not node or not isinstance(node[-1], dict) or following in node[-1]:
                node.append({})
            node = node[-1]
            continue
        if last:
            node[part] = value
            return
        default: Any = [] if following == "" else {}
        child = node.get(part)
        if not isinstance(child, list | dict):
            child = node[part] = default
        node = child

"""Canvas's parameter encoding: Rails nesting for query strings and form bodies.

``user={"name": "Jo", "sis": {"id": 5}}, include=["a", "b"], flag=True`` becomes
``user[name]=Jo``, ``user[sis][id]=5``, ``include[]=a``, ``include[]=b``,
``flag=true``. None values are dropped and datetimes become ISO 8601.

A list of scalars is sent as ``key[]=a&key[]=b``. A list that holds dicts or
lists is sent with indices, ``rows[0][a]=1&rows[1][b]=2``: Rack groups
``rows[][a]`` pairs into records by key collisions, so records with different
fields would be merged into the wrong record, silently (a ``[]`` sequence
starts a new record only when a key repeats). Indexed keys are unambiguous;
Rails reads them as a hash keyed by index, which Canvas accepts wherever it
takes a list of records.
"""

from __future__ import annotations

import datetime as dt
import enum
from collections.abc import Iterable, Mapping
from typing import Any

from resilient_canvas.exceptions import RequiredFieldMissing

Params = Mapping[str, Any] | Iterable[tuple[str, Any]]


def encode_params(params: Params | None) -> list[tuple[str, str]]:
    """Flatten nested parameters into the ``(key, value)`` pairs Canvas expects.

    Raises:
        TypeError: For a value that has no Canvas encoding (a set, an object).
    """
    if params is None:
        return []
    items = params.items() if isinstance(params, Mapping) else params
    pairs: list[tuple[str, str]] = []
    for key, value in items:
        _flatten(str(key), value, pairs)
    return pairs


def _flatten(key: str, value: Any, out: list[tuple[str, str]]) -> None:
    if value is None:
        return
    if isinstance(value, Mapping):
        for sub_key, sub_value in value.items():
            _flatten(f"{key}[{sub_key}]", sub_value, out)
    elif isinstance(value, list | tuple):
        if any(isinstance(element, Mapping | list | tuple) for element in value):
            for index, element in enumerate(value):
                _flatten(f"{key}[{index}]", element, out)
        else:
            for element in value:
                _flatten(f"{key}[]", element, out)
    else:
        out.append((key, _scalar(key, value)))


def _scalar(key: str, value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, dt.datetime | dt.date):
        return value.isoformat()
    if isinstance(value, enum.Enum):
        return _scalar(key, value.value)
    if isinstance(value, str | int | float):
        return str(value)
    raise TypeError(f"Parameter {key!r} has a {type(value).__name__}, which Canvas cannot take.")


def require(params: Mapping[str, Any], *keys: str, within: str | None = None) -> None:
    """Raise RequiredFieldMissing unless every key is present (optionally inside a dict).

    ``require(kwargs, "name", within="user")`` checks ``kwargs["user"]["name"]``,
    as CanvasAPI does before sending a request it knows Canvas would reject.
    """
    container: Any = params
    if within is not None:
        container = params.get(within)
        if not isinstance(container, Mapping):
            raise RequiredFieldMissing(f"Dictionary with key {within!r} is required.")
    for key in keys:
        if container.get(key) is None:
            where = f"Dictionary {within!r} needs key" if within else "Parameter"
            raise RequiredFieldMissing(f"{where} {key!r}, which is required.")

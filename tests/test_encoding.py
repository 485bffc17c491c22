"""Canvas parameter encoding, checked against Rack's nested-query rules.

Canvas is a Rails app: Rack's ``QueryParser#normalize_params`` turns the pairs
we send back into nested params. ``rack_parse`` below follows that method as
Rack documents and specifies it (``spec_utils.rb``): ``a[]`` appends,
``a[b]`` nests, and ``a[][b]`` appends a new hash only when the last one
already has ``b``; an index such as ``a[0][b]`` is an ordinary hash key.
"""

from __future__ import annotations

import re
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from resilient_canvas import encode_params

_HEAD = re.compile(r"\A[\[\]]*([^\[\]]+)\]*")
_ARRAY_OF_HASH = (re.compile(r"\[\]\[([^\[\]]+)\]"), re.compile(r"\[\](.+)"))


def rack_parse(pairs: list[tuple[str, str]]) -> dict[str, Any]:
    """Rack's nested query parsing of already-unescaped pairs."""
    params: dict[str, Any] = {}
    for name, value in pairs:
        _normalize(params, name, value)
    return params


def _normalize(params: dict[str, Any], name: str, value: str) -> dict[str, Any]:
    match = _HEAD.match(name)
    if match is None:
        return params
    key, after = match[1], name[match.end() :]
    if after == "":
        params[key] = value
    elif after == "[":
        params[name] = value
    elif after == "[]":
        _typed(params.setdefault(key, []), list).append(value)
    elif child := next((m[1] for p in _ARRAY_OF_HASH if (m := p.fullmatch(after))), None):
        records = _typed(params.setdefault(key, []), list)
        if records and isinstance(records[-1], dict) and not _has_key(records[-1], child):
            _normalize(records[-1], child, value)
        else:
            records.append(_normalize({}, child, value))
    else:
        params[key] = _normalize(_typed(params.setdefault(key, {}), dict), after, value)
    return params


def _has_key(params: dict[str, Any], key: str) -> bool:
    """Rack's ``params_hash_has_key?``: does the nested path *key* exist already?"""
    if "[]" in key:
        return False
    node: Any = params
    for part in filter(None, re.split(r"[\[\]]+", key)):
        if not isinstance(node, dict) or part not in node:
            return False
        node = node[part]
    return True


def _typed(value: Any, kind: type) -> Any:
    # Rack raises ParameterTypeError when one key is used as two kinds.
    if not isinstance(value, kind):
        raise TypeError(f"expected {kind.__name__}, got {type(value).__name__}")
    return value


def as_rails_reads(value: Any) -> Any:
    """Read index-keyed hashes ({"0": a, "1": b}) as lists, as Canvas does."""
    if isinstance(value, dict):
        if value and list(value) == [str(index) for index in range(len(value))]:
            return [as_rails_reads(element) for element in value.values()]
        return {key: as_rails_reads(element) for key, element in value.items()}
    if isinstance(value, list):
        return [as_rails_reads(element) for element in value]
    return value


def as_sent(value: Any) -> Any:
    """What each scalar becomes on the wire (Canvas sees strings)."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, dict):
        return {key: as_sent(element) for key, element in value.items()}
    if isinstance(value, list):
        return [as_sent(element) for element in value]
    return str(value)


@pytest.mark.parametrize(
    ("query", "expected"),
    [
        ([("foo", "bar")], {"foo": "bar"}),
        ([("foo[]", "bar"), ("foo[]", "baz")], {"foo": ["bar", "baz"]}),
        ([("x[y][z]", "1")], {"x": {"y": {"z": "1"}}}),
        ([("x[][y]", "1"), ("x[][z]", "2")], {"x": [{"y": "1", "z": "2"}]}),
        ([("x[][y]", "1"), ("x[][y]", "2")], {"x": [{"y": "1"}, {"y": "2"}]}),
        (
            [("x[][y][][z]", "1"), ("x[][y][][w]", "2")],
            {"x": [{"y": [{"z": "1", "w": "2"}]}]},
        ),
        ([("x[0][y]", "1"), ("x[1][y]", "2")], {"x": {"0": {"y": "1"}, "1": {"y": "2"}}}),
    ],
)
def test_rack_parser_matches_racks_specified_examples(
    query: list[tuple[str, str]], expected: dict[str, Any]
) -> None:
    """The test's parser reproduces Rack's own specified examples."""
    assert expected == rack_parse(query)


def test_lists_of_dicts_keep_their_records() -> None:
    """Records with different fields are not regrouped by Rack (r16)."""
    sent = {
        "quiz_extensions": [{"user_id": 1, "extra_time": 10}, {"extra_attempts": 1, "user_id": 2}],
        "rows": [{"a": 1, "b": None}, {"b": 2}],
    }

    pairs = encode_params(sent)

    assert ("quiz_extensions[0][user_id]", "1") == pairs[0]
    assert {
        "quiz_extensions": [
            {"user_id": "1", "extra_time": "10"},
            {"extra_attempts": "1", "user_id": "2"},
        ],
        "rows": [{"a": "1"}, {"b": "2"}],
    } == as_rails_reads(rack_parse(pairs))


def test_lists_of_scalars_keep_empty_brackets() -> None:
    """include[]=a&include[]=b stays as Canvas documents it."""
    assert [("include[]", "a"), ("include[]", "b")] == encode_params({"include": ["a", "b"]})


_KEYS = st.from_regex(r"[a-z][a-z0-9_]{0,6}", fullmatch=True)
_SCALARS = st.one_of(st.integers(-(10**6), 10**6), st.booleans(), st.text(max_size=6))
_VALUES = st.recursive(
    _SCALARS,
    lambda inner: st.one_of(
        st.lists(inner, min_size=1, max_size=3),
        st.dictionaries(_KEYS, inner, min_size=1, max_size=3),
    ),
    max_leaves=12,
)


@given(st.dictionaries(_KEYS, _VALUES, min_size=1, max_size=4))
def test_rack_reads_back_what_was_encoded(params: dict[str, Any]) -> None:
    """Any nesting of dicts, lists and scalars survives Rack's parsing unchanged."""
    assert as_sent(params) == as_rails_reads(rack_parse(encode_params(params)))

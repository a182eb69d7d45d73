"""``proxy.jsonstrict``: JSON as RFC 8259 has it, read totally (red team 45, F12).

Python's ``json.loads`` takes ``NaN``/``Infinity``, reads ``1e999`` as infinity, and raises
RecursionError and TypeError besides ValueError. The webhook took such a body and sent back a
patch that was not JSON. Every JSON reader of the project that takes text from elsewhere reads
through this module: a value that ``json.dumps(..., allow_nan=False)`` writes back, or NotJson.
"""

from __future__ import annotations

import json
import re
from typing import Any

import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from proxy.jsonstrict import NotJson, loads


@pytest.mark.parametrize(
    ("text", "says"),
    [
        ('{"a": NaN}', "NaN is not a JSON number"),
        ("[Infinity]", "Infinity is not a JSON number"),
        ("[-Infinity]", "-Infinity is not a JSON number"),
        ("[1e999]", "a number too large for a double"),
        ("[" * 100_000, "it nests too deep"),
        ("{", "Expecting property name"),
        (b"\xff\xfe\xff", "not UTF-8"),
        ("[" + "9" * 5000 + "]", "cannot read it as JSON (ValueError)"),
    ],
    ids=["nan", "infinity", "minus-infinity", "overflow", "deep", "syntax", "encoding", "long-integer"],
)
def test_what_is_not_json_is_not_json(text: str | bytes, says: str) -> None:
    with pytest.raises(NotJson, match=re.escape(says)):
        loads(text)


def test_json_is_read_as_json() -> None:
    assert loads(b'{"a": [1, 2.5, -0.0, 1e308, true, null, "\\u00e9"]}') == {
        "a": [1, 2.5, -0.0, 1e308, True, None, "é"]
    }


_PIECES = ["NaN", "Infinity", "-Infinity", "1e999", "-1e999", "[", "]", "{", "}", ",", ":", '"', "\\", "0", "1.5",
           "true", "null", "\x00", "\ud800", "é", " "]  # fmt: skip


@settings(max_examples=500, derandomize=True, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(st.sampled_from(_PIECES), max_size=30).map("".join), st.sampled_from(["utf-8", "utf-16", "str"]))
@example('{"a": NaN}', "str")
@example("[1e999]", "utf-8")
def test_any_text_is_json_that_writes_back_or_not_json(text: str, encoding: str) -> None:
    data: Any = text if encoding == "str" else text.encode(encoding, "surrogatepass")
    try:
        value = loads(data)
    except NotJson as e:
        assert str(e)
        return
    json.dumps(value, allow_nan=False)  # (raises ValueError on NaN or infinity)

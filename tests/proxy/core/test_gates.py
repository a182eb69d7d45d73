"""The decoders' triggers: asking a gate only where one of its triggers is (proxy.core.scrub._gates)
must never skip a decoding that applies.

Each decoder of ``_DECODERS`` names the bytes its gate needs one of. Up to ``_PRESENT_UPTO`` bytes the
views ask only the gates whose triggers are there (a head's field with one ``=`` asked all 18, each
0.2-1 us). If a gate ever held for bytes without any of its triggers, a view would silently be
missing, and with it every value encoded that way; these tests hold the table to the gates.
"""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from proxy.core.scrub import _ALL_GATES, _DECODERS, _PRESENT_UPTO, _gates, views

# Pieces each some decoding reads (or begins to), and plain ones, so that drawn texts open gates.
_PIECES = [
    b"\\u0073", b"\\u015b", b"\\ud835\\udc1a", b"\\uff53", b"\\x73", b"\\163", b"\\N{LATIN SMALL LETTER S}", b"\\73 ",
    b"\\\"", b"\\k", b"%73", b"%u0073", b"%EF%BD%93", b"=73", b"=\r\n", b"=\n", b"&#115;", b"&#x73;", b"&amp;",
    b"&sol;", b"\x00", b"\n", b"\r\n", b"\n ", b"+AHM-", b"+AHMAaw", b"\x1b(B", b"\x1b$B", b"~{", b"~}", b"\x0e",
    b"\x0f", b"Content-Transfer-Encoding: base64\n\n", b"c2st", b"c2s=tUk", b"==", b"=?utf-8?b?c2st?=",
    b"=?utf-8?q?=73k?=", b"; name*0=", b"name*1*=utf-8''%73", b"c2stUkVBTC0xMjM0NTY3\n", b"ODkw\r\n", b";", b".eyJ", b"eyJzIjoi", b"J", b".", b"*", b"sk-",
    b"abc", b"ABC", b"0123", b" ", b"/", b"-", b"_", b"\x01", b"\xc5\x9b", b"\xef\xbd\x93", b"\xff",
    b"\xed\xa0\xb5\xed\xb0\xac", b"\xed\xa0\xb5", b"\\u00ef\\u00bc\\u00b3",
]  # fmt: skip
_TEXT = st.lists(st.sampled_from(_PIECES) | st.binary(max_size=4), max_size=24).map(b"".join)


def _asked(data: bytes) -> list[object]:
    return [decode for applies, decode in _gates(data) if applies(data)]


def _every(data: bytes) -> list[object]:
    return [decode for applies, decode in _ALL_GATES if applies(data)]


@settings(max_examples=3000, deadline=None)
@given(_TEXT)
def test_no_gate_holds_without_one_of_its_triggers(data: bytes) -> None:
    for triggers, applies, decode in _DECODERS:
        if applies(data):
            assert not triggers.isdisjoint(data), (decode, data)
    assert _asked(data) == _every(data)


def test_every_gate_holds_for_some_piece() -> None:
    """The property above is not vacuous: each decoder's gate holds for some of the drawn pieces."""
    held = {decode for piece in _PIECES for decode in _every(b"x" + piece + b"y" + piece)}
    assert held == {decode for _, _, decode in _DECODERS}


def test_a_long_text_asks_every_gate() -> None:
    long = b"\\u0073" + b"x" * _PRESENT_UPTO
    assert _gates(long) == _ALL_GATES
    assert b"s" + b"x" * _PRESENT_UPTO in views(long)


def test_a_field_with_one_mark_asks_its_gates_only() -> None:
    cookie = b"__cf_bm=Zm9vYmFy-12345-1.0.1.1-abc; path=/; expires=Thu, 03-Dec-26 16:30:00 GMT; HttpOnly"
    asked = {decode.__name__ for _, decode in _gates(cookie)}
    assert asked == {"_qp_decode", "_drop_inner_padding", "_decode_words"}
    assert any(view.startswith(b"__cf_bmZm9vYmFy-12345") for view in views(cookie))  # (the padding view)

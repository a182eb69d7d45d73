"""Our speed patches of mitmproxy's Headers answer exactly what mitmproxy's own methods answer."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st
from mitmproxy.http import Headers

from proxy import mitm_patches

NAMES = st.sampled_from(["Host", "host", "HOST", "Content-Length", "transfer-encoding", "X-Api-Key", "x-ÄPI", "é"])
VALUES = st.text(max_size=8).map(lambda t: t.encode("utf-8", "surrogateescape"))
FIELDS = st.lists(st.tuples(NAMES.map(lambda n: n.encode("utf-8")), VALUES), max_size=6)
LOOKUPS = st.one_of(NAMES, NAMES.map(lambda n: n.encode("utf-8")), NAMES.map(str.swapcase))


@given(FIELDS, LOOKUPS)
def test_patched_header_lookups_match_mitmproxy(fields: list[tuple[bytes, bytes]], name: str | bytes) -> None:
    """The oracle is mitmproxy's own Headers.get_all (MultiDict's generic code, untouched); get,
    [] and `in` are mitmproxy's Mapping semantics over it (values folded with ", ")."""
    mitm_patches._faster_headers()
    h = Headers(fields)
    values = mitm_patches.ORIGINAL_HEADERS["get_all"](h, name)
    assert h.get_all(name) == values
    assert h.get(name) == (", ".join(values) if values else None)
    assert h.get(name, "d") == (", ".join(values) if values else "d")
    assert (name in h) == bool(values)
    if values:
        assert h[name] == ", ".join(values)
    else:
        try:
            h[name]
        except KeyError:
            pass
        else:
            raise AssertionError("a missing header must raise KeyError")

"""Red team 44: a real key that the scrubber's decoded views did not read, though a client's
decoding of the same bytes gives it plainly (its findings 1, 2, 3 and 8; those of streams' windows
and token lines are tested elsewhere).

1. HTML character references to C0 controls or DEL (``&#1;``, ``&#x1f;``, ``&#127;``) between a
   key's characters: ``html.unescape`` drops them, so it reads the plain key; ``&#0;`` and
   ``&#x110000;`` read as U+FFFD, which a cleaning client drops. The HTML view kept such a
   reference as it was, and the page, the streamed page and a header field went to the agent
   unchanged. Now every reference is read as HTML5 and ``html.unescape`` read it: a control or a
   noncharacter as nothing, NUL, a surrogate and anything past U+10FFFF (of any number of digits)
   as U+FFFD, a named one also without its ``;`` (``&shyt``) and however long its name
   (``&NegativeVeryThinSpace;``). The key is refused; a stream refuses a reference of eight
   digits or more (thousands of them spread a key's characters past what it keeps to decode).

Each finding has a pure test (the whole body, the body streamed, a header field), an end-to-end
test (a real sidecar whose file-keyed secret is bound to a hostile upstream that echoes it back, and
what the agent reads of the answer) and a table or property test of the general form.
"""

from __future__ import annotations

import html
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import trustme
from hypothesis import example, given, settings
from hypothesis import strategies as st

from proxy.core.scrub import _CLEAN, ScrubRefused, SniffingScrubber, first_hit, scrub_field, scrub_whole
from proxy.core.values import Finder
from tests.proxy.test_redteam import HOSTILE_NAME, dechunk, hostile, hostile_ca  # noqa: F401 (fixtures)
from tests.proxy.test_redteam37 import PH, keyed_proxy
from tests.proxy.test_redteam39 import get
from tests.support.hostile import HostileServer, Request, Wire
from tests.support.proxyproc import ProxyProcess

KEY = "rtREALa3f9c0b7e15d24a68c0ffee1234abcd"  # (the shape keyed_proxy's keys have)


def finder() -> Finder:
    return Finder.for_values([("k", KEY, PH)], runs=True)


def cleaned(text: str) -> str:
    """What a cleaning client keeps, the README's model of one: printable ASCII (what is not ASCII,
    and every control, dropped)."""
    return "".join(c for c in text if c.isascii() and c.isprintable())


def scrubbed(body: bytes, f: Finder, step: int) -> tuple[bytes, bytes]:
    """What the agent gets of ``body`` scrubbed whole and streamed ``step`` bytes a read (nothing
    where it is refused)."""
    try:
        whole = scrub_whole(body, f, lambda _: None)
    except ScrubRefused:
        whole = b""
    s = SniffingScrubber(f, lambda _: None)
    try:
        streamed = b"".join(s.feed(body[i : i + step]) for i in range(0, len(body), step)) + s.finish()
    except ScrubRefused:
        streamed = b""
    return whole, streamed


def head_finds(f: Finder, name: bytes, value: bytes) -> bool:
    """Whether the head check finds a value in a header field ``name: value``."""
    _CLEAN.clear()
    return first_hit(f, [name, value]) is not None


def refused(body: bytes, f: Finder) -> bool:
    try:
        scrub_field(body, f, lambda _: None)
    except ScrubRefused:
        return True
    return False


def body_of(raw: bytes) -> bytes:
    """The body the agent read (chunked framing undone; what came before a cut)."""
    head, _, rest = raw.partition(b"\r\n\r\n")
    return dechunk(raw) if b"transfer-encoding: chunked" in head.lower() else rest


def field_of(raw: bytes, name: bytes) -> bytes:
    """The value of the header field ``name`` the agent read (empty when there is none)."""
    head = raw.partition(b"\r\n\r\n")[0]
    line = next((ln for ln in head.split(b"\r\n") if ln.lower().startswith(name.lower() + b":")), b"")
    return line.partition(b":")[2].strip()


# -- 1. HTML references to controls ---------------------------------------------------------------

# (reference, what the agent runs on the text): html.unescape alone reads the key for the first ones.
REFS = [
    ("&#1;", html.unescape),
    ("&#x1f;", html.unescape),
    ("&#127;", html.unescape),
    ("&#0;", lambda t: cleaned(html.unescape(t))),  # U+FFFD
    ("&#x110000;", lambda t: cleaned(html.unescape(t))),  # U+FFFD
    ("&#99999999;", lambda t: cleaned(html.unescape(t))),  # U+FFFD: more digits than the old view read
    ("&#12;", lambda t: cleaned(html.unescape(t))),  # FF: html.unescape keeps it, a cleaning client drops it
    ("&shy", lambda t: cleaned(html.unescape(t))),  # a name without its ``;``, a letter after it
    ("&NegativeVeryThinSpace;", lambda t: cleaned(html.unescape(t))),  # (a zero-width space: 21 letters)
]
REF_IDS = [r for r, _ in REFS]


def spread(key: str, filler: str) -> bytes:
    return filler.join(key).encode()


@pytest.mark.parametrize(("ref", "read"), REFS, ids=REF_IDS)
def test_rt44_the_scrubber_reads_what_html_unescape_reads(ref: str, read: Callable[[str], str]) -> None:
    f = finder()
    body = b"<p>invalid api key: " + spread(KEY, ref) + b"</p>"
    assert KEY in read(body.decode())  # the client's reading
    whole, streamed = scrubbed(body, f, 9)
    assert KEY not in read(whole.decode()), "whole body: the key went to the agent"
    assert KEY not in read(streamed.decode()), "streamed body: the key went to the agent"
    assert head_finds(f, b"X-Error", spread(KEY, ref)), "a header field: the head check found nothing"


@pytest.mark.parametrize("ref", ["&#" + "9" * 3000 + ";", "&#x" + "f" * 3000 + ";", "&#12345678;"])
def test_rt44_a_stream_refuses_a_reference_with_more_digits_than_a_character_has(ref: str) -> None:
    """A reference of any length reads as U+FFFD: thousands of digits between each two of a key's
    characters put them farther apart than a stream keeps to decode (and the skeleton reads no
    reference), so a stream refuses one of eight digits or more, as it refuses eight zeros."""
    body = b"<p>" + spread(KEY, ref) + b"</p>"
    assert KEY in cleaned(html.unescape(body.decode()))
    assert scrubbed(body, finder(), 4096) == (b"", b"")


def _html_forms(code: int) -> list[str]:
    """A reference to ``code`` as pages write one: decimal, hex (either case), zero-padded."""
    return [f"&#{code};", f"&#x{code:x};", f"&#X{code:X};", f"&#0000{code};", f"&#x0000{code:x};"]


# Every code point html.unescape reads as something a cleaning client drops whole: C0 controls,
# DEL, C1 (windows-1252's characters, all of them not ASCII), noncharacters, surrogates, and
# numbers past U+10FFFF however long. (TAB, LF and CR are a visible separation, not filler: kept as
# a raw one is. Fullwidth, mathematical and letterlike letters too: another client folds them to
# letters, this one drops them; both readings are views.)
_DROPPED_CODES = st.one_of(
    st.sampled_from([*range(0x00, 0x09), 0x0B, 0x0C, *range(0x0E, 0x20), *range(0x7F, 0xA1), 0xAD, 0x200B, 0xFEFF]),
    st.sampled_from([0xFF41, 0xFF10, 0x1D41A, 0x1D7CE, 0x2119, 0x210E]),
    st.integers(0xA0, 0x10FFFF),
    st.integers(0x110000, 10**30),
)


@given(code=_DROPPED_CODES)
@example(code=0xD835)
@example(code=0xFDD0)
@example(code=0xFFFF)
@example(code=0x10FFFE)
@settings(max_examples=300, deadline=None)
def test_rt44_a_key_spread_with_references_a_client_drops_is_refused(code: int) -> None:
    """For every code point that ``html.unescape`` then a cleaning client reads as nothing, the
    key spread with a reference to it, in any of the forms pages write, is refused."""
    f = finder()
    for ref in _html_forms(code):
        body = b"<p>" + spread(KEY, ref) + b"</p>"
        assert KEY in cleaned(html.unescape(body.decode())), ref  # the client's reading
        assert refused(body, f), f"{ref}: the key went to the agent"


# -- the agent's view: a real sidecar, a hostile upstream --------------------------------------------


@pytest.fixture
def world(
    make_proxy: Callable[..., ProxyProcess],
    hostile: HostileServer,  # noqa: F811
    hostile_ca: tuple[trustme.CA, Path],  # noqa: F811
    tmp_path: Path,
) -> Iterator[tuple[ProxyProcess, Path]]:
    p, key = keyed_proxy(make_proxy, hostile_ca[1], tmp_path)

    for n, (ref, _) in enumerate(REFS):

        def html_routes(ref: str = ref, n: int = n) -> None:
            @hostile.on(f"/rt44/html/{n}/body")
            async def body(req: Request, w: Wire) -> None:  # an error page that quotes the key
                page = b"<html><body><p>invalid api key: " + spread(req.token, ref) + b"</p></body></html>"
                await w.send(b"HTTP/1.1 401 Unauthorized\r\nContent-Type: text/html\r\nContent-Length: %d\r\n\r\n%s"
                             % (len(page), page))  # fmt: skip

            @hostile.on(f"/rt44/html/{n}/stream")
            async def stream(req: Request, w: Wire) -> None:  # the same, chunked (streamed)
                page = b"<p>invalid api key: " + spread(req.token, ref) + b"</p>"
                await w.send(
                    b"HTTP/1.1 401 Unauthorized\r\nContent-Type: text/html\r\nTransfer-Encoding: chunked\r\n\r\n"
                )
                await w.send(b"%x\r\n%s\r\n0\r\n\r\n" % (len(page), page))

            @hostile.on(f"/rt44/html/{n}/head")
            async def head(req: Request, w: Wire) -> None:  # in a header field
                await w.send(b"HTTP/1.1 401 Unauthorized\r\nX-Error: " + spread(req.token, ref)
                             + b"\r\nContent-Length: 2\r\n\r\nno")  # fmt: skip

        html_routes()

    yield p, key
    p.stop()


@pytest.mark.parametrize("where", ["body", "stream", "head"])
@pytest.mark.parametrize(("ref", "read"), REFS, ids=REF_IDS)
def test_rt44_a_key_spread_with_control_references_never_reaches_the_agent(
    world: tuple[ProxyProcess, Path], ref: str, read: Callable[[str], str], where: str
) -> None:
    p, key = world
    real = key.read_text()
    raw = get(p, f"/rt44/html/{REF_IDS.index(ref)}/{where}")
    text = field_of(raw, b"X-Error") if where == "head" else body_of(raw)
    assert real not in read(text.decode("latin-1")), f"the agent read the real key: {raw[:400]!r}"

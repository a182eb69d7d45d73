"""Red team 40 (2026-12-05): heads that passed the joined head check (proxy.core.scrub.first_hit)
while one of their fields alone was refused (scrub_field), end to end: an OSC's text read across
fields in the shift view, one byte not UTF-8 turning the fold of decoded views off for the whole
head, an unended UTF-7 run not read in a head over 8 KiB; each in final, 103 and 101 heads and in
the request head check, and then remembered clean so that the field passed alone too. Each field
holding something to decode now has its own views searched too; a short decoded view is folded
whether it is UTF-8 or not (later the same day, a long one too)."""

from __future__ import annotations

import base64
import random
import urllib.parse
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import trustme

from tests.proxy.test_redteam import HOSTILE_NAME, hostile, hostile_ca  # noqa: F401 (fixtures)
from tests.proxy.test_redteam37 import PH, keyed_proxy
from tests.proxy.test_redteam39 import get, tunnel
from tests.support.hostile import HostileServer, Request, Wire
from tests.support.proxyproc import ProxyProcess


# 1. OSC opened (percent-encoded) at the end of one field swallows the next field's start in the
#    shift view of the percent view of the joined head; the key, spread with percent-encoded HZ
#    shifts (%7E{%7E}), is only readable in that view.
def osc_hz(key: str) -> list[bytes]:
    k = key.encode()
    hz = b"%7E{%7E}".join(k[i : i + 2] for i in range(0, len(k), 2))
    return [b"X-Note: x%1B]", b"X-Part: " + hz + b"%07"]


# 2. One byte that is not UTF-8 in another field (obs-text, legal) kills the "unescape then clean"
#    folded view for the whole head: the key with percent-encoded zero-width spaces between chars.
def zwsp(key: str) -> list[bytes]:
    k = key.encode()
    return [b"X-Note: \xff", b"X-Part: " + b"%E2%80%8B".join(k[i : i + 5] for i in range(0, len(k), 5))]


def fullwidth(key: str) -> list[bytes]:
    fw = "".join(chr(0xFF00 + ord(c) - 0x20) for c in key).encode()
    return [b"X-Note: \xff", b"X-Part: " + urllib.parse.quote(fw).encode()]


# 3. A head over UTF7_IMPLICIT_MAX (8 KiB) with no ended UTF-7 run: no UTF-7 view is made of it, so
#    a key in an unended run at the end of a field (read alone, refused) passes.
def utf7(key: str) -> list[bytes]:
    run = b"+" + base64.b64encode(key[3:].encode("utf-16-be")).rstrip(b"=")
    return [b"X-Pad: " + b"a" * 9000, b"X-Part: " + key[:3].encode() + run]


SHAPES: dict[str, Callable[[str], list[bytes]]] = {"osc_hz": osc_hz, "zwsp": zwsp, "fullwidth": fullwidth, "utf7": utf7}


def head(fields: list[bytes], status: bytes = b"200 OK") -> bytes:
    return b"HTTP/1.1 " + status + b"\r\n" + b"".join(f + b"\r\n" for f in fields) + b"Content-Length: 2\r\n\r\nok"


@pytest.fixture
def world(
    make_proxy: Callable[..., ProxyProcess],
    hostile: HostileServer,  # noqa: F811
    hostile_ca: tuple[trustme.CA, Path],  # noqa: F811
    tmp_path: Path,
) -> Iterator[tuple[ProxyProcess, Path]]:
    p, key = keyed_proxy(make_proxy, hostile_ca[1], tmp_path)
    for name, shape in SHAPES.items():

        def bind(name: str, shape: Callable[[str], list[bytes]]) -> None:
            @hostile.on(f"/rt40/{name}")
            async def final(req: Request, w: Wire) -> None:
                await w.send(head(shape(req.token)))

            @hostile.on(f"/rt40/{name}/103")  # the same fields in a 103 Early Hints interim head
            async def interim(req: Request, w: Wire) -> None:
                await w.send(
                    head(shape(req.token), b"103 Early Hints")[: -len(b"Content-Length: 2\r\n\r\nok")] + b"\r\n"
                )
                await w.send(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")

            @hostile.on(f"/rt40/{name}/alone")  # the key's field with nothing beside it
            async def alone(req: Request, w: Wire) -> None:
                await w.send(head(shape(req.token)[1:]))

        bind(name, shape)
    yield p, key
    p.stop()


@pytest.mark.parametrize("name", list(SHAPES))
@pytest.mark.parametrize("suffix", ["", "/103"])
def test_rt40_a_field_refused_alone_is_refused_beside_another(
    world: tuple[ProxyProcess, Path], name: str, suffix: str
) -> None:
    p, key = world
    real = key.read_text()
    part = next(f for f in SHAPES[name](real) if f.startswith(b"X-Part:"))
    raw = get(p, f"/rt40/{name}{suffix}")
    assert part not in raw, f"the agent received the key ({name}{suffix}) in {part!r}"


@pytest.mark.parametrize("name", list(SHAPES))
def test_rt40_the_field_alone_is_refused(world: tuple[ProxyProcess, Path], name: str) -> None:
    """Control: the same field with nothing beside it is refused (on a fresh proxy: no memory)."""
    p, key = world
    real = key.read_text()
    part = next(f for f in SHAPES[name](real) if f.startswith(b"X-Part:"))
    raw = get(p, f"/rt40/{name}/alone")
    assert part not in raw


@pytest.mark.parametrize("name", list(SHAPES))
def test_rt40_a_field_beside_another_is_not_remembered_clean(world: tuple[ProxyProcess, Path], name: str) -> None:
    """Clean-field memory: once it passed beside the other field, the field passes alone too."""
    p, key = world
    real = key.read_text()
    part = next(f for f in SHAPES[name](real) if f.startswith(b"X-Part:"))
    get(p, f"/rt40/{name}")
    raw = get(p, f"/rt40/{name}/alone")
    assert part not in raw, f"remembered clean: the agent received the key alone ({name})"


@pytest.mark.parametrize("name", ["osc_hz", "zwsp", "utf7"])
@pytest.mark.parametrize("beside", [True, False])
def test_rt40_request_head_a_real_value_is_refused_beside_another_field(
    world: tuple[ProxyProcess, Path],
    hostile: HostileServer,  # noqa: F811
    name: str,
    beside: bool,
) -> None:
    """The request head check (Exchange._real_value_in_head) is first_hit too: an agent that holds
    the real value sends it in a header toward the (allowed) host when another field sits beside it."""
    p, key = world
    real = key.read_text()
    seen: list[Request] = []

    @hostile.on("/rt40/req")
    async def req(r: Request, w: Wire) -> None:
        seen.append(r)
        await w.send(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")

    fields = SHAPES[name](real) if beside else SHAPES[name](real)[1:]
    s = tunnel(p)
    s.sendall(f"GET /rt40/req HTTP/1.1\r\nHost: {HOSTILE_NAME}\r\n".encode() + b"".join(f + b"\r\n" for f in fields)
              + b"Connection: close\r\n\r\n")  # fmt: skip
    buf = b""
    while chunk := s.recv(65536):
        buf += chunk
    part = fields[-1].split(b": ", 1)[1].decode("latin-1")
    assert not any(v == part for r in seen for _, v in r.headers), f"the upstream received {part!r} (beside={beside})"


@pytest.mark.parametrize("name", ["osc_hz", "zwsp", "utf7"])
def test_rt40_websocket_101_head(world: tuple[ProxyProcess, Path], hostile: HostileServer, name: str) -> None:  # noqa: F811
    from tests.support.hostile import ws_accept

    p, key = world
    real = key.read_text()
    ws_key = "dGhlIHNhbXBsZSBub25jZQ=="

    @hostile.on("/rt40/ws")
    async def ws(r: Request, w: Wire) -> None:
        fields = [b"Upgrade: websocket", b"Connection: Upgrade", b"Sec-WebSocket-Accept: " + ws_accept(ws_key).encode()]
        await w.send(
            b"HTTP/1.1 101 Switching Protocols\r\n"
            + b"".join(f + b"\r\n" for f in fields + SHAPES[name](r.token))
            + b"\r\n"
        )
        w.keep = False
        await w.reader.read(65536)

    s = tunnel(p)
    s.sendall(f"GET /rt40/ws HTTP/1.1\r\nHost: {HOSTILE_NAME}\r\nAuthorization: Bearer {PH}\r\nUpgrade: websocket\r\n"
              f"Connection: Upgrade\r\nSec-WebSocket-Version: 13\r\nSec-WebSocket-Key: {ws_key}\r\n\r\n".encode())  # fmt: skip
    s.settimeout(3)
    buf = b""
    try:
        while b"\r\n\r\n" not in buf and (chunk := s.recv(65536)):
            buf += chunk
    except TimeoutError:
        pass
    part = SHAPES[name](real)[1]
    assert part not in buf, f"the agent received the key in a 101 head: {buf[:200]!r}"


# 2b. The same root cause without a second field: the "unescape, then clean" view is dropped for the
#     whole input when any of it is not UTF-8, so one %FF (or raw 0xFF) anywhere in a field or a body
#     hides a key spread with percent-encoded zero-width spaces.
def zw_key(key: str) -> bytes:
    k = key.encode()
    return b"%E2%80%8B".join(k[i : i + 5] for i in range(0, len(k), 5))


@pytest.mark.parametrize(
    "shape",
    [
        lambda k: head([b"X-Part: %FF " + zw_key(k)]),
        lambda k: (
            b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: %d\r\n\r\n%s"
            % (len(b"q=%FF&k=" + zw_key(k)), b"q=%FF&k=" + zw_key(k))
        ),
        lambda k: (
            b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nTransfer-Encoding: chunked\r\n\r\n"
            + b"%x\r\n%s\r\n0\r\n\r\n" % (len(b"q=%FF&k=" + zw_key(k)), b"q=%FF&k=" + zw_key(k))
        ),
    ],
    ids=["one-field", "body", "chunked-body"],
)
def test_rt40_one_byte_not_utf8_does_not_hide_a_percent_zwsp_key(
    world: tuple[ProxyProcess, Path],
    hostile: HostileServer,  # noqa: F811
    shape: Callable[[str], bytes],
) -> None:
    p, key = world

    @hostile.on("/rt40/zwbody")
    async def zwbody(r: Request, w: Wire) -> None:
        await w.send(shape(r.token))

    raw = get(p, "/rt40/zwbody")
    assert zw_key(key.read_text()) not in raw, raw[:400]


def _long_bodies(key: str) -> dict[str, bytes]:
    """Bodies over 4 KiB with one byte that is not UTF-8 (a decoded view was folded only up to
    4 KiB unless it was UTF-8), text and binary (random bytes: the sparse reading of a body mostly
    not text)."""
    rng = random.Random(40)
    return {
        "text": b"q=%FF&pad=" + b"x" * 5000 + b"&k=" + zw_key(key),
        "text, the byte raw": b"q=\xff&pad=" + b"x" * 5000 + b"&k=" + zw_key(key),
        "binary": rng.randbytes(65536) + b"&k=" + zw_key(key) + b"&" + rng.randbytes(4096),
    }


@pytest.mark.parametrize("kind", ["text", "text, the byte raw", "binary"])
def test_rt40_one_byte_not_utf8_in_a_long_body_does_not_hide_a_percent_zwsp_key(kind: str) -> None:
    from proxy.core.scrub import ScrubRefused, scrub_whole
    from proxy.core.values import Finder

    key = "rtREALa5c58c0990842086f631b5c68ebd9836e"
    finder = Finder.for_values([("k", key, PH)], runs=True)
    body = _long_bodies(key)[kind]
    hits: list[str] = []
    try:
        out = scrub_whole(body, finder, hits.append)
    except ScrubRefused:
        return
    assert hits and zw_key(key) not in out


@pytest.mark.parametrize("kind", ["text", "binary"])
@pytest.mark.parametrize("chunked", [False, True], ids=["length", "chunked"])
def test_rt40_a_long_body_with_one_byte_not_utf8_end_to_end(
    world: tuple[ProxyProcess, Path],
    hostile: HostileServer,  # noqa: F811
    kind: str,
    chunked: bool,
) -> None:
    p, key = world
    body = _long_bodies(key.read_text())[kind]

    @hostile.on("/rt40/long")
    async def long(r: Request, w: Wire) -> None:
        if chunked:
            pieces = [body[i : i + 1000] for i in range(0, len(body), 1000)]
            await w.send(
                b"HTTP/1.1 200 OK\r\nContent-Type: application/octet-stream\r\nTransfer-Encoding: chunked\r\n\r\n"
                + b"".join(b"%x\r\n%s\r\n" % (len(x), x) for x in pieces)
                + b"0\r\n\r\n"
            )
        else:
            await w.send(
                b"HTTP/1.1 200 OK\r\nContent-Type: application/octet-stream\r\nContent-Length: %d\r\n\r\n%s"
                % (len(body), body)
            )

    raw = get(p, "/rt40/long")
    assert zw_key(key.read_text()) not in raw, raw[:400]

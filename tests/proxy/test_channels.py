"""Every channel back to the agent, end to end (issue: key safety in every wire form): a hostile bound
upstream reflects the real key it was sent in each way an HTTP/1.1 response can carry bytes, and the
agent must never receive it. Each channel is either scrubbed (the placeholder stands where the key
was) or refused (502 before anything was sent; a cut stream or a 1008 close after).
"""

from __future__ import annotations

import asyncio
import io
import socket
import ssl
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from tests.conftest import NONCE, needs_root
from tests.support.clients import read_body, read_head
from tests.support.leaks import encodings
from tests.support.proxyproc import ProxyProcess
from tests.support.reflector import Reflector
from tests.support.upstream import Seen

pytestmark = needs_root

PH = f"rf-PH-{NONCE}-reflector"
REAL = "rk-REAL-CANARY-" + "7f3a9c1e5b2d4068a1c3e5f7b9d1f3a5"
POLICY = f"""
apiVersion: sandgate.dev/v1alpha1
kind: EgressPolicy
metadata: {{name: channels}}
spec:
  allow: [{{host: reflector.example.com}}]
  secrets:
    - {{name: reflected, placeholder: {PH}, source: {{env: SG_TEST_REFLECTED}}, hosts: [reflector.example.com]}}
"""


@pytest.fixture(scope="module")
def reflector(upstreams: dict[str, Seen], pki: dict[str, Path]) -> Iterator[Reflector]:
    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ctx.load_cert_chain(pki["server"])
    r = Reflector(ctx)
    thread = upstreams["_thread"]  # type: ignore[index]
    thread.run(r.start("127.0.0.9", 443))  # type: ignore[attr-defined]
    yield r

    async def close() -> None:
        r.close()

    thread.run(close())  # type: ignore[attr-defined]  # on the loop the server runs on


@pytest.fixture(scope="module")
def proxy(make_proxy: Callable[..., ProxyProcess], reflector: Reflector) -> ProxyProcess:
    return make_proxy(POLICY, env={"SG_TEST_REFLECTED": REAL})


def exchange(proxy: ProxyProcess, path: str) -> tuple[int, dict[str, str], bytes, bytes]:
    """(status, headers, body, every byte the agent received) for GET path with the placeholder."""
    raw = socket.create_connection(("127.0.0.1", proxy.port), timeout=10)
    raw.sendall(b"CONNECT reflector.example.com:443 HTTP/1.1\r\nHost: reflector.example.com:443\r\n\r\n")
    assert raw.recv(4096).startswith(b"HTTP/1.1 200")
    s = ssl.create_default_context(cafile=str(proxy.ca)).wrap_socket(raw, server_hostname="reflector.example.com")
    s.sendall(f"GET {path} HTTP/1.1\r\nHost: reflector.example.com\r\nAuthorization: Bearer {PH}\r\n"
              "Accept-Encoding: gzip, br, zstd, deflate\r\nConnection: close\r\n\r\n".encode())  # fmt: skip
    received = b""
    try:
        while chunk := s.recv(65536):
            received += chunk
    except (ConnectionResetError, ssl.SSLError, TimeoutError):
        pass  # a cut stream
    s.close()
    reader = io.BytesIO(received)
    try:
        status, headers = read_head(reader)
        if status == 103:
            status, headers = read_head(reader)
    except (ValueError, IndexError):
        return 0, {}, b"", received
    try:
        body = read_body(reader, headers)
    except (ValueError, IndexError):
        body = b""  # cut short
    return status, headers, body, received


def assert_no_key(received: bytes) -> None:
    text = received.decode("latin-1")
    leaked = [form[:10] for form in encodings(REAL) if form in text]
    assert not leaked, f"real key reached the agent as {leaked}"


@pytest.mark.parametrize("encoding", ["gzip", "br", "zstd", "deflate"])
def test_compressed_bodies_over_any_chunking_are_decoded_and_scrubbed(proxy: ProxyProcess, encoding: str) -> None:
    """issue: a zstd body was cut without a reason; gzip or br whose compressed bytes span chunks
    cut a legitimate response after 0 bytes."""
    status, headers, body, received = exchange(proxy, f"/{encoding}")
    assert status == 200 and "content-encoding" not in headers
    assert body.count(PH.encode()) == 40
    assert_no_key(received)


@pytest.mark.parametrize("path", ["/compress", "/stacked"])
def test_an_encoding_that_cannot_be_scanned_is_refused_with_a_reason(proxy: ProxyProcess, path: str) -> None:
    status, headers, _, received = exchange(proxy, path)
    assert status == 502 and headers.get("x-sandgate-reason") == "limit_exceeded"
    assert b"abcd" not in received


def test_b13_a_key_split_over_two_sse_events_never_reaches_the_agent(proxy: ProxyProcess) -> None:
    _, headers, _, received = exchange(proxy, "/sse-split")
    assert headers.get("content-type") == "text/event-stream"
    assert b"Your key: " in received  # events before the value went out as they came
    assert b"[DONE]" not in received  # the stream was cut at the value
    assert_no_key(received)


def test_a_key_inside_one_sse_event_is_replaced_and_the_stream_goes_on(proxy: ProxyProcess) -> None:
    status, _, body, received = exchange(proxy, "/sse-whole")
    assert status == 200 and PH.encode() in body and b"[DONE]" in body
    assert_no_key(received)


def test_trailers_are_never_forwarded(proxy: ProxyProcess) -> None:
    status, _, body, received = exchange(proxy, "/trailers")
    assert status == 200 and body == b"no key in the body"
    assert b"x-key" not in received.lower()
    assert_no_key(received)


def test_1xx_interim_heads_are_scrubbed(proxy: ProxyProcess) -> None:
    _, _, _, received = exchange(proxy, "/early-hints")
    assert received.startswith(b"HTTP/1.1 103") and PH.encode() in received
    assert_no_key(received)


def test_the_status_line_is_ours_never_the_upstreams_reason_phrase(proxy: ProxyProcess) -> None:
    status, _, _, received = exchange(proxy, "/reason")
    assert status == 401 and received.startswith(b"HTTP/1.1 401 Unauthorized\r\n")
    assert_no_key(received)


def test_header_fields_are_scrubbed_in_every_encoding(proxy: ProxyProcess) -> None:
    status, headers, _, received = exchange(proxy, "/header")
    assert status == 200 and PH in headers["www-authenticate"]
    assert_no_key(received)


def test_a_key_across_chunks_of_a_large_body_is_replaced(proxy: ProxyProcess) -> None:
    status, _, body, received = exchange(proxy, "/big-split")
    assert status == 200 and len(body) == 140000 + len(PH) and PH.encode() in body
    assert_no_key(received)


async def websocket(proxy: ProxyProcess, path: str) -> tuple[list[object], object]:
    import aiohttp

    ctx = ssl.create_default_context(cafile=str(proxy.ca))
    got: list[object] = []
    async with (
        aiohttp.ClientSession() as session,
        session.ws_connect(
            f"wss://reflector.example.com{path}",
            proxy=proxy.url,
            ssl=ctx,
            headers={"Authorization": f"Bearer {PH}"},
            autoping=False,
        ) as ws,  # fmt: skip
    ):
        while True:
            msg = await asyncio.wait_for(ws.receive(), 10)
            if msg.type in (aiohttp.WSMsgType.CLOSE, aiohttp.WSMsgType.CLOSED, aiohttp.WSMsgType.ERROR):
                return got, ws.close_code
            got.append(msg.data if msg.type != aiohttp.WSMsgType.PING else ("ping", msg.data))


@pytest.mark.parametrize(
    ("path", "expected"),
    [("/ws-text", f"echo {PH}"), ("/ws-binary", b"\x00\x01" + PH.encode() + b"\xff"), ("/ws-fragmented", f"echo {PH}")],
    ids=["text", "binary", "fragmented"],
)
async def test_b13_websocket_messages_are_scrubbed(proxy: ProxyProcess, path: str, expected: object) -> None:
    got, _ = await websocket(proxy, path)
    assert got[:1] == [expected]
    assert_no_key(repr(got).encode())


async def test_b13_a_key_split_over_two_websocket_messages_closes_the_socket(proxy: ProxyProcess) -> None:
    got, code = await websocket(proxy, "/ws-split-messages")
    assert code == 1008
    assert_no_key(repr(got).encode())


@pytest.mark.parametrize("path", ["/ws-ping", "/ws-close"])
async def test_websocket_control_frames_are_scrubbed(proxy: ProxyProcess, path: str) -> None:
    got, _ = await websocket(proxy, path)
    assert_no_key(repr(got).encode())

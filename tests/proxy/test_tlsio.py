"""TlsSession, the data path's TLS over memory buffers: whatever way the peer's bytes are cut, every
byte of plaintext comes out once, and a close_notify is seen, also when it shares a read with data."""

from __future__ import annotations

import ssl
from pathlib import Path

import pytest

from proxy.datapath.conn import Endpoint
from proxy.datapath.tlsio import TlsSession
from sandgate.demo import make_upstream_certs


@pytest.fixture(scope="module")
def pair_contexts(tmp_path_factory: pytest.TempPathFactory) -> tuple[ssl.SSLContext, ssl.SSLContext]:
    ca, cert, key = make_upstream_certs(Path(tmp_path_factory.mktemp("tls")), ["peer.test"])
    server = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    server.load_cert_chain(cert, key)
    client = ssl.create_default_context(cafile=str(ca))
    return server, client


def connected(ctxs: tuple[ssl.SSLContext, ssl.SSLContext]) -> tuple[TlsSession, TlsSession]:
    """A server and a client session with their handshake done."""
    server = TlsSession(ctxs[0], server_side=True)
    client = TlsSession(ctxs[1], server_side=False, server_hostname="peer.test")
    to_server = client.handshake()
    while not (server.established and client.established):
        _, to_client, _ = server.receive(to_server)
        _, to_server, _ = client.receive(to_client)
    if to_server:  # (TLS 1.3: the client's Finished, already sent, or nothing)
        server.receive(to_server)
    return server, client


@pytest.mark.parametrize("cut", [1, 7, 100, 16 * 1024 + 5, None])
def test_every_byte_of_many_records_comes_out_once_whatever_the_cuts(
    pair_contexts: tuple[ssl.SSLContext, ssl.SSLContext], cut: int | None
) -> None:
    server, client = connected(pair_contexts)
    sent = b"".join(b"%06d" % i for i in range(20000))  # 120 KB: several full records
    wire = client.send(sent[:50000]) + client.send(sent[50000:])
    pieces = [wire] if cut is None else [wire[i : i + cut] for i in range(0, len(wire), cut)]
    got = b""
    for piece in pieces:
        plain, _, closed = server.receive(piece)
        got += plain
        assert not closed
    assert got == sent


def test_a_close_notify_in_the_same_bytes_as_data_is_seen(pair_contexts: tuple[ssl.SSLContext, ssl.SSLContext]) -> None:
    server, client = connected(pair_contexts)
    plain, _, closed = server.receive(client.send(b"last words") + client.close())
    assert plain == b"last words" and closed


def test_a_close_notify_alone_is_seen(pair_contexts: tuple[ssl.SSLContext, ssl.SSLContext]) -> None:
    server, client = connected(pair_contexts)
    assert server.receive(client.send(b"hello")) == (b"hello", b"", False)
    plain, _, closed = server.receive(client.close())
    assert plain == b"" and closed


def test_garbage_after_the_handshake_is_an_error(pair_contexts: tuple[ssl.SSLContext, ssl.SSLContext]) -> None:
    server, _ = connected(pair_contexts)
    with pytest.raises(ssl.SSLError):
        server.receive(b"\x17\x03\x03\x00\x20" + b"\x00" * 32)  # an application-data record that does not decrypt


class _Wire:
    """What an endpoint writes, write by write (the one transport method a flush uses)."""

    def __init__(self) -> None:
        self.writes: list[bytes] = []

    def write(self, data: bytes) -> None:
        self.writes.append(bytes(data))

    def is_closing(self) -> bool:
        return False

    def set_write_buffer_limits(self, high: int | None = None, low: int | None = None) -> None:
        pass


@pytest.mark.parametrize("sizes", [[40_000], [65_536 + 300], [300, 65_536], [16_384 * 3, 1, 16_384 * 2 + 7]])
def test_a_large_write_reaches_the_peer_record_by_record(
    pair_contexts: tuple[ssl.SSLContext, ssl.SSLContext], sizes: list[int]
) -> None:
    """An answer held whole (to be scrubbed) goes out as it is encrypted: each socket write holds
    whole records the peer can read before the next arrives, and together they are every byte once,
    in order."""
    ep = Endpoint()
    wire = _Wire()
    ep.connection_made(wire)  # type: ignore[arg-type]
    ep.begin_tls(pair_contexts[0], server_side=True)
    client = TlsSession(pair_contexts[1], server_side=False, server_hostname="peer.test")
    to_server = client.handshake()
    while not client.established:
        ep.data_received(to_server)
        _, to_server, _ = client.receive(b"".join(wire.writes))
        wire.writes.clear()
    if to_server:
        ep.data_received(to_server)
    client.receive(b"".join(wire.writes))  # (TLS 1.3's session tickets)
    wire.writes.clear()
    pieces = [bytes([65 + i]) * n for i, n in enumerate(sizes)]
    for piece in pieces:
        ep.send(piece)  # (outside a socket callback: each is flushed at once)
    got = []
    for write in wire.writes:
        plain, _, closed = client.receive(write)
        assert plain and not closed  # readable on its own, before the next write
        got.append(plain)
    assert b"".join(got) == b"".join(pieces)
    assert len(wire.writes) >= sum(-(-n // 16_384) if n > 32_768 else 1 for n in sizes)

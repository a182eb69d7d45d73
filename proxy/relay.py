"""The upstream relay: how a proxy inside a sealed sandbox reaches the world.

``sandgate run`` puts CMD and the proxy in a network namespace (or a gVisor sandbox) whose only
link is a veth to the host. Nothing is forwarded or NATed on the host; instead the proxy sends
every upstream connection through this relay, which listens on the host end of the veth and
speaks two HTTP/1.1 requests:

- ``GET /resolve?name=HOST`` -> ``200 {"addresses": [...]}`` (the host's resolver; the sandbox
  has none), ``404`` when the name does not resolve;
- ``CONNECT IP:PORT`` -> ``200`` then a byte tunnel, only to an IP literal (the proxy resolved
  and checked it first: the relay never resolves a name for a tunnel), only to a port the policy
  allows, and only to an address the proxy's own address rules permit (``private_address``);
- ``CONNECT HOST:PORT`` for the few exact destinations the proxy itself needs (its Vault server,
  from ``VAULT_ADDR``): the proxy's Vault client reaches them with ``HTTPS_PROXY`` set to the relay.

It accepts connections only from the sandbox's address. Inside the sandbox, capture drops every
packet CMD sends except to the proxy, so only the proxy can reach the relay; the relay's own rules
are the second wall if CMD ever got root in there.

This module holds the server (run on the host by ``sandgate run``) and the proxy's resolver client.
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import json
import logging
import socket
import urllib.parse
from collections.abc import Iterable

from proxy import jsonstrict
from proxy.netcheck import AddressPolicy

log = logging.getLogger("sandgate.relay")

MAX_HEAD = 8192
HEAD_TIMEOUT = 10.0
DIAL_TIMEOUT = 10.0


class RelayError(OSError):
    """The relay refused or could not answer; the message says why (never a secret: none pass here)."""


async def resolve_via_relay(relay: tuple[str, int], name: str, timeout: float = 10.0) -> list[str]:
    """Ask the relay for ``name``'s addresses. Raises :class:`RelayError` (an ``OSError``)."""
    async with asyncio.timeout(timeout):
        reader, writer = await asyncio.open_connection(*relay)
        try:
            query = urllib.parse.urlencode({"name": name})
            writer.write(f"GET /resolve?{query} HTTP/1.1\r\nHost: relay\r\nConnection: close\r\n\r\n".encode())
            await writer.drain()
            raw = b""
            while len(raw) <= 65536 and (chunk := await reader.read(65536)):  # the relay closes after answering
                raw += chunk
        finally:
            writer.close()
    head, _, body = raw.partition(b"\r\n\r\n")
    status = head.split(b" ", 2)[1] if head.count(b" ") >= 1 else b""
    if status != b"200":
        raise RelayError(
            f"relay could not resolve {name}: {head.splitlines()[0].decode(errors='replace') if head else 'no answer'}"
        )
    try:
        addresses = jsonstrict.loads(body)["addresses"]
    except (jsonstrict.NotJson, KeyError, TypeError) as e:
        raise RelayError(f"relay answered nonsense for {name}") from e
    return [str(ipaddress.ip_address(a)) for a in addresses]


class Relay:
    """The host side. ``allow_from``: the only peer address accepted; ``ports``: the ports tunnels may
    go to; ``addresses``: the same private-address rules as the proxy (``--allow-private``)."""

    def __init__(
        self,
        allow_from: str,
        ports: Iterable[int],
        addresses: AddressPolicy,
        exact: Iterable[tuple[str, int]] = (),
    ) -> None:
        self.allow_from = ipaddress.ip_address(allow_from)
        self.ports = frozenset(ports)
        self.exact = frozenset(exact)  # named destinations the proxy itself needs (its Vault), any address
        self.addresses = addresses
        self.server: asyncio.Server | None = None
        self._handlers: set[asyncio.Task[None]] = set()
        self.tunnels = 0
        self.refused = 0

    async def start(self, host: str, port: int = 0) -> tuple[str, int]:
        self.server = await asyncio.start_server(self._handle, host, port, limit=MAX_HEAD)
        sockname = self.server.sockets[0].getsockname()
        return str(sockname[0]), int(sockname[1])

    async def close(self) -> None:
        """Stop listening and end every open tunnel (a sandbox being torn down keeps none)."""
        if self.server is not None:
            self.server.close()
        for task in list(self._handlers):
            task.cancel()
        await asyncio.gather(*self._handlers, return_exceptions=True)
        if self.server is not None:
            with contextlib.suppress(Exception):
                await self.server.wait_closed()

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._handlers.add(task)
        peer = writer.get_extra_info("peername")
        try:
            if peer is None or ipaddress.ip_address(peer[0]) != self.allow_from:
                self.refused += 1
                return
            try:
                async with asyncio.timeout(HEAD_TIMEOUT):
                    head = await reader.readuntil(b"\r\n\r\n")
            except (TimeoutError, asyncio.IncompleteReadError, asyncio.LimitOverrunError):
                return
            method, _, rest = head.split(b"\r\n", 1)[0].decode("latin-1").partition(" ")
            target = rest.rsplit(" ", 1)[0]
            if method == "GET" and target.startswith("/resolve?"):
                await self._resolve(target, writer)
            elif method == "CONNECT":
                await self._connect(target, reader, writer)
            else:
                await _answer(writer, 405, "only CONNECT and GET /resolve")
        except (ConnectionError, OSError):
            pass
        finally:
            self._handlers.discard(task)
            writer.close()
            with contextlib.suppress(Exception):
                await writer.wait_closed()

    async def _resolve(self, target: str, writer: asyncio.StreamWriter) -> None:
        name = urllib.parse.parse_qs(urllib.parse.urlsplit(target).query).get("name", [""])[0]
        if not name or len(name) > 253:
            await _answer(writer, 400, "bad name")
            return
        try:
            infos = await asyncio.get_running_loop().getaddrinfo(name, 443, type=socket.SOCK_STREAM)
        except OSError:
            await _answer(writer, 404, "does not resolve")
            return
        addresses = list(dict.fromkeys(str(ai[4][0]).split("%", 1)[0] for ai in infos))
        await _answer(writer, 200, "OK", json.dumps({"addresses": addresses}).encode(), "application/json")

    async def _connect(self, target: str, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        host, sep, port_s = target.rpartition(":")
        host = host[1:-1] if host.startswith("[") and host.endswith("]") else host
        if sep and port_s.isdigit() and (host, int(port_s)) in self.exact:
            await self._tunnel(host, int(port_s), reader, writer)
            return
        try:
            ip = ipaddress.ip_address(host)
            port = int(port_s)
        except ValueError:
            self.refused += 1
            await _answer(writer, 400, "CONNECT needs IP:PORT")
            return
        if not sep or port not in self.ports or not self.addresses.permitted(ip):
            self.refused += 1
            log.warning("relay refused CONNECT %s", target)
            await _answer(writer, 403, "destination not permitted")
            return
        await self._tunnel(str(ip), port, reader, writer)

    async def _tunnel(self, host: str, port: int, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            async with asyncio.timeout(DIAL_TIMEOUT):
                up_reader, up_writer = await asyncio.open_connection(host, port)
        except (OSError, TimeoutError) as e:
            await _answer(writer, 502, f"connect failed: {type(e).__name__}")
            return
        self.tunnels += 1
        writer.write(b"HTTP/1.1 200 Connection established\r\n\r\n")
        await writer.drain()
        try:
            await asyncio.gather(_pipe(reader, up_writer), _pipe(up_reader, writer))
        finally:
            up_writer.close()


async def _pipe(src: asyncio.StreamReader, dst: asyncio.StreamWriter) -> None:
    try:
        while chunk := await src.read(65536):
            dst.write(chunk)
            await dst.drain()
        if dst.can_write_eof():
            dst.write_eof()
    except (ConnectionError, OSError):
        dst.close()


async def _answer(
    writer: asyncio.StreamWriter, status: int, reason: str, body: bytes = b"", ctype: str = "text/plain"
) -> None:
    body = body or reason.encode()
    writer.write(
        f"HTTP/1.1 {status} {reason}\r\nContent-Type: {ctype}\r\nContent-Length: {len(body)}\r\n"
        f"Connection: close\r\n\r\n".encode()
        + body
    )
    await writer.drain()

"""The floor: the least an intercepting, key-swapping HTTPS forwarder must do, for bench/run.py only.

    FLOOR_PLACEHOLDER=... FLOOR_KEY=... python bench/floor.py --port P --dir D --upstream-ca CA --allow HOST

Never part of the product. asyncio streams, stdlib ``ssl``, no uvloop, no policy beyond one host
list, no scrubbing, no metrics, no limits. It answers ``CONNECT host:port`` with 200, does TLS toward
the client with a leaf for that host (signed by a CA minted at start, written to ``D/ca.pem``), and
keeps ONE verified TLS connection upstream per client connection, opened at its first request and
kept alive across its requests. Each request head has ``Authorization: Bearer <placeholder>``
swapped for the real key; bodies (Content-Length, chunked, or until close) are relayed in both
directions as they arrive. A CONNECT to a host not in ``--allow`` gets its TLS handshake and a 403
inside it, as a sidecar that must show the agent why it was refused does. Prints ``floor ready``.
"""

from __future__ import annotations

import argparse
import asyncio
import datetime
import os
import ssl
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

CHUNK = 65536
_ERRORS = (OSError, EOFError, ValueError, ssl.SSLError, asyncio.IncompleteReadError, asyncio.LimitOverrunError)


class Certs:
    """An EC P-256 CA made at start, and one server context per host (one leaf key for all, as
    intercepting proxies do: minting is a signature, not a key generation)."""

    def __init__(self, d: Path) -> None:
        now = datetime.datetime.now(datetime.UTC)
        self.dir, self.key = d, ec.generate_private_key(ec.SECP256R1())
        self.name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "bench floor CA")])
        self.ca = self._builder(self.name, self.key, now).add_extension(
            x509.BasicConstraints(ca=True, path_length=0), critical=True
        )
        self.ca_cert = self.ca.sign(self.key, hashes.SHA256())
        (d / "ca.pem").write_bytes(self.ca_cert.public_bytes(serialization.Encoding.PEM))
        self.leaf_key = ec.generate_private_key(ec.SECP256R1())
        (d / "leaf.key").write_bytes(
            self.leaf_key.private_bytes(
                serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
            )
        )
        self.contexts: dict[str, ssl.SSLContext] = {}

    def _builder(
        self, subject: x509.Name, key: ec.EllipticCurvePrivateKey, now: datetime.datetime
    ) -> x509.CertificateBuilder:
        return (
            x509.CertificateBuilder().subject_name(subject).issuer_name(self.name).public_key(key.public_key())
            .serial_number(x509.random_serial_number()).not_valid_before(now - datetime.timedelta(hours=1))
            .not_valid_after(now + datetime.timedelta(days=2))
        )  # fmt: skip

    def context(self, host: str) -> ssl.SSLContext:
        ctx = self.contexts.get(host)
        if ctx is None:
            subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, host)])
            leaf = self._builder(subject, self.leaf_key, datetime.datetime.now(datetime.UTC))
            leaf = leaf.add_extension(x509.SubjectAlternativeName([x509.DNSName(host)]), critical=False)
            path = self.dir / f"leaf-{len(self.contexts)}.pem"
            path.write_bytes(leaf.sign(self.key, hashes.SHA256()).public_bytes(serialization.Encoding.PEM))
            ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
            ctx.load_cert_chain(path, self.dir / "leaf.key")
            ctx.set_alpn_protocols(["http/1.1"])
            self.contexts[host] = ctx
        return ctx


def parse_head(head: bytes, swap: tuple[bytes, bytes] | None) -> tuple[bytes, int | None, bool, bool]:
    """(head with the key swapped in, Content-Length, chunked, connection close)."""
    lines = head.split(b"\r\n")
    length, chunked, close = None, False, False
    for i, line in enumerate(lines[1:], 1):
        name, _, value = line.partition(b":")
        name = name.strip().lower()
        if name == b"content-length":
            length = int(value)
        elif name == b"transfer-encoding":
            chunked = b"chunked" in value.lower()
        elif name == b"connection":
            close = b"close" in value.lower()
        elif name == b"authorization" and swap is not None and value.strip() == swap[0]:
            lines[i] = b"Authorization: " + swap[1]
    return (b"\r\n".join(lines) if swap else head), length, chunked, close


async def copy(src: asyncio.StreamReader, dst: asyncio.StreamWriter, n: int, prefix: bytes = b"") -> None:
    """Relay ``n`` bytes as they arrive; ``prefix`` goes out with the first piece (one TLS record)."""
    while n > 0:
        data = await src.read(min(n, CHUNK))
        if not data:
            raise EOFError
        dst.write(prefix + data if prefix else data)
        prefix, n = b"", n - len(data)
        await dst.drain()
    if prefix:
        dst.write(prefix)


async def relay_body(src: asyncio.StreamReader, dst: asyncio.StreamWriter, length: int | None, chunked: bool) -> None:
    if chunked:
        while True:
            line = await src.readuntil(b"\r\n")
            size = int(line.split(b";", 1)[0], 16)
            if size == 0:
                while line != b"\r\n":  # trailers, then the empty line
                    dst.write(line)
                    line = await src.readuntil(b"\r\n")
                dst.write(line)
                break
            await copy(src, dst, size + 2, prefix=line)
    elif length:
        await copy(src, dst, length)
    await dst.drain()


class Floor:
    def __init__(self, certs: Certs, upstream: ssl.SSLContext, allow: set[str], swap: tuple[bytes, bytes]) -> None:
        self.certs, self.upstream, self.allow, self.swap = certs, upstream, allow, swap

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        up: tuple[asyncio.StreamReader, asyncio.StreamWriter] | None = None
        try:
            method, target, _ = (await reader.readuntil(b"\r\n\r\n")).split(b" ", 2)
            host, _, port = target.decode("ascii").rpartition(":")
            if method != b"CONNECT" or not port.isdigit():
                writer.write(b"HTTP/1.1 405 Method Not Allowed\r\nContent-Length: 0\r\nConnection: close\r\n\r\n")
                return
            writer.write(b"HTTP/1.1 200 Connection established\r\n\r\n")
            await writer.start_tls(self.certs.context(host))
            if host not in self.allow:
                await reader.readuntil(b"\r\n\r\n")
                writer.write(b"HTTP/1.1 403 Forbidden\r\nContent-Length: 0\r\nConnection: close\r\n\r\n")
                return
            while True:
                try:
                    head = await reader.readuntil(b"\r\n\r\n")
                except asyncio.IncompleteReadError:
                    return  # the client closed between requests
                head, length, chunked, close = parse_head(head, self.swap)
                if up is None:
                    up = await asyncio.open_connection(host, int(port), ssl=self.upstream, server_hostname=host)
                up_reader, up_writer = up
                up_writer.write(head)
                await relay_body(reader, up_writer, length, chunked)
                resp = await up_reader.readuntil(b"\r\n\r\n")
                _, length, chunked, up_close = parse_head(resp, None)
                status = int(resp[9:12])
                if head.startswith(b"HEAD ") or status in (204, 304) or 100 <= status < 200:
                    writer.write(resp)
                elif chunked:
                    writer.write(resp)  # now: a stream's headers must not wait for its first event
                    await relay_body(up_reader, writer, None, True)
                elif length is not None:
                    await copy(up_reader, writer, length, prefix=resp)
                else:  # delimited by the upstream closing
                    writer.write(resp)
                    while data := await up_reader.read(CHUNK):
                        writer.write(data)
                        await writer.drain()
                    return
                await writer.drain()
                if close or up_close:
                    return
        except _ERRORS:
            pass
        finally:
            for w in (writer, up[1] if up else None):
                if w is not None:
                    w.close()


async def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--host", default="127.0.0.1")
    ap.add_argument("--port", type=int, required=True)
    ap.add_argument("--dir", type=Path, required=True, help="where the CA certificate (ca.pem) and leaf files go")
    ap.add_argument("--upstream-ca", required=True, help="CA to verify upstream servers with")
    ap.add_argument("--allow", action="append", default=[], help="a host CONNECT may reach; others get a 403")
    args = ap.parse_args()
    upstream = ssl.create_default_context(cafile=args.upstream_ca)
    upstream.set_alpn_protocols(["http/1.1"])
    swap = (b"Bearer " + os.environ["FLOOR_PLACEHOLDER"].encode(), b"Bearer " + os.environ["FLOOR_KEY"].encode())
    floor = Floor(Certs(args.dir), upstream, set(args.allow), swap)
    server = await asyncio.start_server(floor.handle, args.host, args.port, limit=CHUNK)
    print("floor ready", flush=True)
    async with server:
        await server.serve_forever()


if __name__ == "__main__":
    asyncio.run(main())

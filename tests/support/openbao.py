"""A TCP pass-through in front of OpenBao that a test can make refuse, stall or forward (Vault
faults, E01/E02), and the dev server itself (``sandgate.devbao``)."""

from __future__ import annotations

import asyncio
import contextlib
import socket
import ssl
import threading

from sandgate.devbao import DevBao

# The server itself is product code (the demo runs it too).
OpenBao = DevBao


class FaultProxy:
    """127.0.0.1:<port> -> target. ``mode``: "pass", "refuse" (accept and close), "stall" (accept,
    never answer), "trickle" (forward, but hand Vault's bytes back one every 0.2 s: every read of
    the client gets a byte before its timeout, so only a total deadline ends the call). TLS passes
    through untouched (the client verifies the real server), unless ``tls`` is given: then the
    proxy ends the client's TLS with ``tls[0]`` (a server context) and speaks TLS to the target with
    ``tls[1]``, so that a trickle is one TLS record a byte (through a pass-through, a record has to
    arrive whole before the client's TLS can hand over any of it, which a per-read timeout ends)."""

    def __init__(self, target: tuple[str, int], tls: tuple[ssl.SSLContext, ssl.SSLContext] | None = None) -> None:
        self.target = target
        self._tls = tls
        self._mode = "pass"
        self._open: set[asyncio.StreamWriter] = set()
        self._sock = socket.socket()
        self._sock.bind(("127.0.0.1", 0))
        self._sock.listen(64)
        self.port = self._sock.getsockname()[1]
        self._loop = asyncio.new_event_loop()
        threading.Thread(target=self._run, daemon=True).start()

    @property
    def mode(self) -> str:
        return self._mode

    @mode.setter
    def mode(self, value: str) -> None:
        """Changing the mode also cuts every connection already open (kept-alive ones included)."""
        self._mode = value
        self.cut()

    def recover(self) -> None:
        """Forward new connections again, leaving those already open as they are (a trickle goes on
        trickling: whatever the client holds, it must let go of itself)."""
        self._mode = "pass"

    def cut(self) -> None:
        """Close every connection open now."""

        def cut() -> None:
            for w in list(self._open):
                w.close()
            self._open.clear()

        self._loop.call_soon_threadsafe(cut)

    def _run(self) -> None:
        asyncio.set_event_loop(self._loop)
        with contextlib.suppress(asyncio.CancelledError):
            self._loop.run_until_complete(self._serve())

    async def _serve(self) -> None:
        server = await asyncio.start_server(self._handle, sock=self._sock)
        async with server:
            await server.serve_forever()

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        if self.mode == "refuse":
            writer.close()
            return
        if self.mode == "stall":
            await asyncio.sleep(3600)
            return
        trickle = self.mode == "trickle"
        if self._tls is not None:
            await writer.start_tls(self._tls[0])
        up_r, up_w = await asyncio.open_connection(*self.target, ssl=self._tls[1] if self._tls else None)
        self._open.update((writer, up_w))

        async def pipe(r: asyncio.StreamReader, w: asyncio.StreamWriter, slow: bool = False) -> None:
            try:
                while data := await r.read(65536):
                    for piece in [data[i : i + 1] for i in range(len(data))] if slow else [data]:
                        w.write(piece)
                        await w.drain()
                        if slow:
                            await asyncio.sleep(0.2)
            except (OSError, ssl.SSLError):
                pass
            finally:
                w.close()

        await asyncio.gather(pipe(reader, up_w), pipe(up_r, writer, trickle))

    def close(self) -> None:
        async def stop() -> None:
            for task in asyncio.all_tasks():
                if task is not asyncio.current_task():
                    task.cancel()

        asyncio.run_coroutine_threadsafe(stop(), self._loop).result(5)
        self._sock.close()

"""Runs of a real value through the running proxy: a truncated echo, or half a value, never reaches
the agent (see proxy.core.values.runs_of).

A real ``sandgate proxy`` in the first red team's world: its hostile upstream is a host the key is
bound to, so the key reaches it, and it answers with parts of what it was sent. The agent must
never read RUN (16) characters in a row of the key, in any case, whatever the channel; ordinary
answers that only share a key's public look go through unchanged.
"""

from __future__ import annotations

import json

import pytest

from proxy.core.values import run_length
from tests.conftest import needs_root
from tests.proxy import test_redteam as world
from tests.proxy.core.test_runs import longest_run
from tests.proxy.test_redteam import HOST, _respond, dechunk, fetch, ws_agent_reads, ws_handshake
from tests.proxy.test_redteam4 import records_for
from tests.support.hostile import HostileServer, Request, Wire, ws_frame
from tests.support.proxyproc import ProxyProcess

pytestmark = needs_root

hostile_ca, hostile, rt = world.hostile_ca, world.hostile, world.rt

K = run_length(HOST.real)


def agent_body(raw: bytes) -> bytes:
    head, _, rest = raw.partition(b"\r\n\r\n")
    return dechunk(raw) if b"transfer-encoding: chunked" in head.lower() else rest


@pytest.mark.parametrize("chunked", [False, True], ids=["content-length", "chunked"])
@pytest.mark.parametrize("case", ["as-is", "lower", "upper"])
def test_a_truncated_echo_of_the_key_is_refused(
    rt: ProxyProcess, hostile: HostileServer, chunked: bool, case: str
) -> None:
    """An error that quotes the first 30 characters of the key it was given (as some APIs do)."""
    path = f"/runs/truncated-{case}-{chunked}"

    @hostile.on(path)
    async def _(req: Request, w: Wire) -> None:
        quoted = req.token[:30]
        quoted = {"as-is": quoted, "lower": quoted.lower(), "upper": quoted.upper()}[case]
        body = json.dumps({"error": {"message": f"Incorrect API key provided: {quoted}...", "code": "invalid_api_key"}})
        await w.send(_respond("Content-Type: application/json\r\n", body.encode(), chunked=chunked))

    raw = fetch(rt, path)
    assert longest_run(agent_body(raw), HOST.real) < K
    assert raw == b"" or raw.startswith(b"HTTP/1.1 502") or b"0\r\n\r\n" not in raw  # refused or cut
    assert any(r["reason"] == "secret_value_inbound" for r in records_for(rt, path))


def test_each_half_of_the_key_in_its_own_answer_never_reaches_the_agent_whole(
    rt: ProxyProcess, hostile: HostileServer
) -> None:
    """Two requests, each answered with one half: the agent joins them. One half is always a run."""
    for cut in (5, 16, 22, 29, 40):
        paths = [f"/runs/half-{cut}-{i}" for i in (0, 1)]
        for i, path in enumerate(paths):

            @hostile.on(path)
            async def _(req: Request, w: Wire, i: int = i, cut: int = cut) -> None:
                half = req.token[:cut] if i == 0 else req.token[cut:]
                await w.send(_respond("Content-Type: text/plain\r\n", b"part: " + half.encode()))

        got = [agent_body(fetch(rt, path)) for path in paths]
        assert HOST.real[:cut].encode() not in got[0] or HOST.real[cut:].encode() not in got[1], cut


@pytest.mark.parametrize("size", [2, 5])
def test_a_run_streamed_token_by_token_is_refused(rt: ProxyProcess, hostile: HostileServer, size: int) -> None:
    path = f"/runs/sse-{size}"

    @hostile.on(path)
    async def _(req: Request, w: Wire) -> None:
        text = "Sure, your key starts with " + req.token[2:24] + " and I cannot say more."
        await w.send(b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nTransfer-Encoding: chunked\r\n\r\n")
        for i in range(0, len(text), size):
            doc = {"choices": [{"index": 0, "delta": {"content": text[i : i + size]}}]}
            event = b"data: " + json.dumps(doc).encode() + b"\n\n"
            await w.send(b"%x\r\n%s\r\n" % (len(event), event), pause=0.002)
        await w.send(b"0\r\n\r\n")

    raw = fetch(rt, path)
    texts = "".join(
        json.loads(line[6:])["choices"][0]["delta"]["content"]
        for line in dechunk(raw).split(b"\n")
        if line.startswith(b"data: {")
    )
    assert longest_run(texts.encode(), HOST.real) < K
    assert any(r["reason"] == "secret_value_inbound" for r in records_for(rt, path))


def test_a_run_over_websocket_messages_closes_the_socket(rt: ProxyProcess, hostile: HostileServer) -> None:
    path = "/runs/ws"

    @hostile.on(path)
    async def _(req: Request, w: Wire) -> None:
        await w.send(ws_handshake(req))
        run = req.token[3:27]
        for i in range(0, len(run), 4):
            await w.send(ws_frame(0x1, run[i : i + 4].encode()), pause=0.02)
        await w.send(ws_frame(0x1, b"done"), pause=0.3)
        w.keep = False

    head, frames = ws_agent_reads(rt, path)
    assert head.startswith(b"HTTP/1.1 101")
    text = b"".join(payload for _, op, payload in frames if op in (0x1, 0x0))
    assert longest_run(text, HOST.real) < K
    assert any(op == 0x8 and payload[:2] == b"\x03\xf0" for _, op, payload in frames)  # 1008


def test_answers_that_only_look_like_keys_go_through_unchanged(rt: ProxyProcess, hostile: HostileServer) -> None:
    """The key's public look and a few of its characters are no run: the answer is untouched."""
    path = "/runs/ordinary"
    body = (
        b"Keys look like rtREAL... (13 characters, then 32 hex digits); yours ends in "
        + HOST.real[-4:].encode()
        + b". Another key of the same kind: rtREAL"
        + bytes(reversed(HOST.real[13:].encode()))
        + b"."
    )

    @hostile.on(path)
    async def _(req: Request, w: Wire) -> None:
        await w.send(_respond("Content-Type: text/plain\r\n", body))

    raw = fetch(rt, path)
    assert raw.startswith(b"HTTP/1.1 200") and agent_body(raw) == body


@pytest.mark.xfail(strict=True, raises=AssertionError, reason="framings read only as bytes: pieces shorter than a run")
def test_a_value_in_pieces_shorter_than_a_run_in_a_framing_not_read(rt: ProxyProcess, hostile: HostileServer) -> None:
    """The limit of runs, kept in view: JSON values back to back (Go's ``json.Decoder`` loop, Python's
    ``raw_decode`` loop; red team 12's ``concatenated-json-values``), the key cut in pieces of 6
    characters, one a value. Cut in two, a half is a run and the answer is refused (that test now
    passes); in pieces this short, no byte stream holds a run, and no reader here joins the values."""
    path = "/runs/concatenated-short"

    @hostile.on(path)
    async def _(req: Request, w: Wire) -> None:
        t = req.token
        body = "".join(json.dumps({"text": t[i : i + 6]}) for i in range(0, len(t), 6)).encode()
        await w.send(_respond("Content-Type: application/json\r\n", body))

    body = agent_body(fetch(rt, path)).decode()
    decoder, pos, text = json.JSONDecoder(), 0, ""
    while pos < len(body):
        doc, pos = decoder.raw_decode(body, pos)
        text += doc["text"]
    assert HOST.real not in text

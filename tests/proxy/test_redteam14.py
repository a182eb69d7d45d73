"""Red team, fourteenth pass: the runs invariant (no 16 characters in a row of a real key, past its
public prefix, in any case, reach the agent from a bound host), a day after runs were added
(proxy.core.values.runs_of).

End-to-end tests run a real ``sandgate proxy`` in the first red team's world (its hostile HTTPS
upstream receives the real key and answers with whatever it likes); pure tests drive the finder and
scrubbers directly with realistic random ``sk-proj-`` keys. A break is
``xfail(strict=True, raises=AssertionError)``; what held is a plain test.

Fixed on merging (2026-12-04): ``paths-flooded-between-short-deltas`` (all three shapes): a path
forgotten for room though not idle leaves its last bytes behind, by path, and begins with them when
it comes back, so it holds and refuses as it would have (PathStitcher._tails; the whole-key shape
leaked before runs existed too). ``public-prefix-gamed-by-the-key`` and
``ordinary-jwt-answer-with-a-jwt-shaped-key`` (a list of vendors' prefixes instead of a pattern; a
JWT's header and claims are its public prefix), each now a passing test. Later that day:
``zero-width-interleaved-body`` -- a body with a byte above 0x7F is also read as a cleaning client
reads it, what is not ASCII dropped (proxy.core.fold; tests/proxy/core/test_fold.py).

Breaks (as found):

- ``paths-flooded-between-short-deltas`` (e2e, SSE and WebSocket; the worst: the WHOLE key): the
  key streamed as OpenAI chat deltas (or Realtime ``response.output_text.delta`` messages) of 2-3
  characters, each followed by an event/message with 70 throwaway members (an SDK ignores unknown
  members). Each one makes more than MAX_PATHS (64) paths, so ``PathStitcher._forget_one`` forgets
  the content path: ``SegmentedScrubber.idle()`` asks the hold-back with ``end=True`` (a run's
  piece counts only from PART_HOLD = 6 characters), so a path whose text ends in 2-5 characters of
  a piece is "idle" and is dropped with no rest remembered (``loose_ends`` uses the same
  PART_HOLD). PART_HOLD's premise ("what follows still holds a piece") needs the path's history;
  the path comes back as a new stream with none, and no 2-3 character text is ever a piece. The
  stitched text is the whole key (2-char deltas) or all 32 characters past ``rtREALhostile``
  (3-char deltas), 150 of 150 random keys in a pure trial.
  (Checked when merging: the whole-key shape, 2-character deltas from the first character, leaked
  before runs existed too -- main at ae85a35, pure EventScrubber with the same events -- so the
  forgetting was open for whole values already; making ``idle()`` count pieces from one character
  closes both in a pure trial but refuses a TGI stream with a path per token under 256 secrets,
  so it was not taken.)
  Fix: when a path is forgotten, remember its last (piece length - 1) characters by path (a bounded
  LRU, refused when full) and seed the stream when the path comes back; or make ``idle()`` /
  ``loose_ends`` use part_from=1 for pieces (rests of every begun piece), so a begun piece blocks
  forgetting or is remembered.
- ``base64-of-a-truncated-key`` (e2e): an error that quotes the key in base64 less its last
  character (``{"key_b64": b64(key[:-1])}``). Only the whole value's base64 is a form, and runs are
  looked for as text only: 44 of the 45 characters reach the agent (``base64.b64decode``); the last
  is one guess in 16. Same for any truncation, and for hex (next).
- ``hex-halves-in-two-answers`` (e2e): each of two answers holds one half of the key in hex.
  "One half is always a run" does not hold in hex: runs are not searched in hex; the agent
  ``bytes.fromhex`` both and joins them: the whole key.
- ``zero-width-interleaved-body`` (e2e): a whole ``text/plain`` body with the key's characters
  separated by U+200B (zero-width space). Token streams' texts are folded (format characters
  dropped) but whole bodies are not; a client that drops format characters (as the stitcher
  itself assumes one does) or a human copying from a rendered page reads the key.
- ``public-prefix-gamed-by-the-key`` (pure): ``_PUBLIC`` is a pattern, not a list of vendors'
  prefixes, so the key's own random characters can extend its "public prefix" up to 16 characters:
  ``sk-proj-ab-cdef-...`` (random part beginning ``ab-cdef-``) has a public prefix of 16, and the
  16-character run ``key[8:24]``, past the real ``sk-proj-``, passes (8 characters past the
  computed prefix, shorter than a 9-character piece). A random-base64url key with no vendor prefix
  can lose up to 16 characters. The hostile upstream knows the key, so it knows when this works.
  Fix: a list of vendors' prefixes (or: only the first word and at most two more that are letters
  only), never a pattern the random part can extend.
- ``ordinary-jwt-answer-with-a-jwt-shaped-key`` (pure, false refusal): a key that is a JWT
  (Supabase's anon / service_role keys) begins with the header every HS256 JWT shares
  (``eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCJ9``); its run pieces are made of it, so any answer holding
  another JWT (an auth endpoint's ``access_token``) is refused. Fix: treat a JWT's header (through
  its first ``.``) as public, or take runs of the signature/random part only.

Fixes for the first three: search runs in hex and base64 too (the pieces' hex and their base64 at
the three alignments, as for whole values: ~50 pieces x 8 forms, within the automaton's budget);
read whole bodies folded (format characters dropped, NFKC) as token streams' texts are.

Held (passing tests): a truncated echo in JSON ``\\u`` escapes, chunked with the escapes cut across
TCP writes; a run in HTML references, percent-encoding, quoted-printable, UTF-16, CSS escapes and mixed
case, in bodies past 256 KiB fed in random chunk sizes (pure fuzz, 800 cases); a run streamed
through OpenAI chat deltas cut at random (pure fuzz, 300 cases); a whole key cut across TCP writes
is replaced by the placeholder (not refused); an ordinary LLM answer with code, hex digests and
base64 passes unchanged.
"""

from __future__ import annotations

import base64
import binascii
import html
import json
import quopri
import random
import string
import urllib.parse

import pytest

from proxy.core.scrub import BodyScrubber, EventScrubber, ScrubRefused, scrub_whole
from proxy.core.values import Finder, public_prefix, run_length
from tests.conftest import needs_root
from tests.proxy import test_redteam as world
from tests.proxy.core.test_runs import longest_run
from tests.proxy.test_redteam import HOST, _respond, dechunk, fetch, ws_agent_reads, ws_handshake
from tests.support.hostile import HostileServer, Request, Wire, ws_frame
from tests.support.proxyproc import ProxyProcess

hostile_ca, hostile, rt = world.hostile_ca, world.hostile, world.rt

K = run_length(HOST.real)
A = string.ascii_letters + string.digits + "-_"


def agent_body(raw: bytes) -> bytes:
    head, _, rest = raw.partition(b"\r\n\r\n")
    return dechunk(raw) if b"transfer-encoding: chunked" in head.lower() else rest


def _run16(out: bytes, secret: str) -> bool:
    """Whether ``out`` holds 16 characters in a row of ``secret`` (no public prefix taken off), any case."""
    low, sec = out.lower(), secret.lower().encode()
    return any(sec[i : i + 16] in low for i in range(len(sec) - 15))


def _key(rng: random.Random, prefix: str = "sk-proj-", n: int = 150) -> str:
    return prefix + "".join(rng.choice(A) for _ in range(n))


# ---------------------------------------------------------------------------------- breaks, e2e


@needs_root
@pytest.mark.xfail(
    strict=True,
    raises=AssertionError,
    reason="runs are not searched in base64; only the whole value's base64 is a form",
)
def test_base64_of_a_truncated_key(rt: ProxyProcess, hostile: HostileServer) -> None:
    path = "/rt14/b64-truncated"

    @hostile.on(path)
    async def _(req: Request, w: Wire) -> None:
        body = json.dumps({"error": "invalid_api_key", "key_b64": base64.b64encode(req.token[:-1].encode()).decode()})
        await w.send(_respond("Content-Type: application/json\r\n", body.encode()))

    raw = fetch(rt, path)
    body = agent_body(raw)
    got = base64.b64decode(json.loads(body)["key_b64"]) if raw.startswith(b"HTTP/1.1 200") else b""
    assert longest_run(got, HOST.real) < K


@needs_root
@pytest.mark.xfail(
    strict=True, raises=AssertionError, reason="runs are not searched in hex: neither half of a hex-split key is found"
)
def test_hex_halves_in_two_answers(rt: ProxyProcess, hostile: HostileServer) -> None:
    paths = ["/rt14/hex-half-0", "/rt14/hex-half-1"]
    for i, path in enumerate(paths):

        @hostile.on(path)
        async def _(req: Request, w: Wire, i: int = i) -> None:
            half = req.token[: len(req.token) // 2] if i == 0 else req.token[len(req.token) // 2 :]
            body = json.dumps({"request_id": binascii.hexlify(half.encode()).decode()})
            await w.send(_respond("Content-Type: application/json\r\n", body.encode()))

    joined = b""
    for path in paths:
        raw = fetch(rt, path)
        if raw.startswith(b"HTTP/1.1 200"):
            joined += bytes.fromhex(json.loads(agent_body(raw))["request_id"])
    assert longest_run(joined, HOST.real) < K


@needs_root
def test_zero_width_interleaved_body(rt: ProxyProcess, hostile: HostileServer) -> None:
    path = "/rt14/zwsp"

    @hostile.on(path)
    async def _(req: Request, w: Wire) -> None:
        body = ("Your key is: " + "\u200b".join(req.token) + "\n").encode()
        await w.send(_respond("Content-Type: text/plain; charset=utf-8\r\n", body))

    raw = fetch(rt, path)
    text = agent_body(raw).decode("utf-8", "replace") if raw.startswith(b"HTTP/1.1 200") else ""
    cleaned = text.replace("\u200b", "")  # a client dropping format characters (or a copy from a page)
    assert longest_run(cleaned.encode(), HOST.real) < K


@needs_root
@pytest.mark.parametrize("size, start", [(2, 0), (3, 13)], ids=["2-whole-key", "3-past-rtREALhostile"])
def test_run_in_short_deltas_with_paths_flooded_between(
    rt: ProxyProcess, hostile: HostileServer, size: int, start: int
) -> None:
    path = f"/rt14/flood-{size}"

    @hostile.on(path)
    async def _(req: Request, w: Wire) -> None:
        text = req.token[start:]
        await w.send(b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nTransfer-Encoding: chunked\r\n\r\n")
        for k in range(0, len(text), size):
            docs = [{"choices": [{"index": 0, "delta": {"content": text[k : k + size]}}]}]
            # 70 throwaway paths (an SDK ignores unknown members): the content path is forgotten
            docs.append({"choices": [{"index": 0, "delta": {}}], "meta": {f"m{k}_{j}": "ok" for j in range(70)}})
            events = b"".join(b"data: " + json.dumps(d).encode() + b"\n\n" for d in docs)
            await w.send(b"%x\r\n%s\r\n" % (len(events), events), pause=0.002)
        await w.send(b"0\r\n\r\n")

    raw = fetch(rt, path)
    texts = "".join(
        json.loads(line[6:])["choices"][0]["delta"].get("content") or ""
        for line in dechunk(raw).split(b"\n")
        if line.startswith(b"data: {")
    )
    assert longest_run(texts.encode(), HOST.real) < K


@needs_root
def test_run_in_short_websocket_deltas_with_paths_flooded_between(rt: ProxyProcess, hostile: HostileServer) -> None:
    """The same through WebSocket messages (the Realtime API's ``response.output_text.delta``)."""
    path = "/rt14/ws-flood"

    @hostile.on(path)
    async def _(req: Request, w: Wire) -> None:
        await w.send(ws_handshake(req))
        text = req.token
        for k in range(0, len(text), 2):
            delta = {"type": "response.output_text.delta", "item_id": "it", "delta": text[k : k + 2]}
            noise = {"type": "rate_limits.updated", "meta": {f"m{k}_{j}": "ok" for j in range(70)}}
            await w.send(
                ws_frame(0x1, json.dumps(delta).encode()) + ws_frame(0x1, json.dumps(noise).encode()), pause=0.002
            )
        await w.send(ws_frame(0x1, b'{"type": "response.done"}'), pause=0.3)
        w.keep = False

    head, frames = ws_agent_reads(rt, path)
    assert head.startswith(b"HTTP/1.1 101")
    text = ""
    for _, op, payload in frames:
        if op == 0x1:
            doc = json.loads(payload)
            if doc.get("type") == "response.output_text.delta":
                text += doc["delta"]
    assert longest_run(text.encode(), HOST.real) < K


# ---------------------------------------------------------------------------------- break, pure


def test_public_prefix_gamed_by_the_key() -> None:
    rng = random.Random(14)
    real = "sk-proj-ab-cdef-" + "".join(rng.choice(A) for _ in range(140))
    assert public_prefix(real) == 8  # (a list of vendors' prefixes: the random part cannot lengthen it)
    f = Finder.for_values([("k", real, "PH")], runs=True)
    body = ("Incorrect API key provided: " + real[:24] + "...").encode()  # 16 characters past sk-proj-
    try:
        out = scrub_whole(body, f, lambda s: None)
    except ScrubRefused:
        out = b""
    assert not _run16(out, real[8:])


def _jwt(payload: dict[str, object], rng: random.Random) -> str:
    def b64u(b: bytes) -> str:
        return base64.urlsafe_b64encode(b).rstrip(b"=").decode()

    head = b64u(json.dumps({"alg": "HS256", "typ": "JWT"}, separators=(",", ":")).encode())
    body = b64u(json.dumps(payload, separators=(",", ":")).encode())
    return f"{head}.{body}.{b64u(rng.randbytes(32))}"


def test_ordinary_jwt_answer_with_a_jwt_shaped_key() -> None:
    """False refusal (lower severity): a key that is a JWT (Supabase's anon and service_role keys,
    many API keys) begins with the header every HS256 JWT has; its runs are pieces of that header,
    so any answer from the bound host holding another JWT (an auth endpoint's ``access_token``) is
    refused."""
    rng = random.Random(7)
    key = _jwt({"iss": "supabase", "ref": "abcdefghijklmnopqrst", "role": "service_role", "iat": 1700000000}, rng)
    f = Finder.for_values([("k", key, "PH")], runs=True)
    other = _jwt({"aud": "authenticated", "exp": 1733300000, "sub": "9c1b", "role": "authenticated"}, rng)
    body = json.dumps({"access_token": other, "token_type": "bearer", "expires_in": 3600}).encode()
    try:
        out = scrub_whole(body, f, lambda _: None)
    except ScrubRefused:
        out = b""
    assert out == body


# ---------------------------------------------------------------------------------- held, e2e


@needs_root
def test_truncated_echo_in_json_escapes_cut_across_writes_is_refused(rt: ProxyProcess, hostile: HostileServer) -> None:
    path = "/rt14/json-u-cut"

    @hostile.on(path)
    async def _(req: Request, w: Wire) -> None:
        quoted = "".join(f"\\u{ord(c):04x}" for c in req.token[:30])
        body = ('{"error": {"message": "Incorrect API key provided: ' + quoted + '..."}}').encode()
        await w.send(
            b"HTTP/1.1 401 Unauthorized\r\nContent-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n"
        )
        for i in range(0, len(body), 7):  # escapes cut in the middle, one TCP write each
            piece = body[i : i + 7]
            await w.send(b"%x\r\n%s\r\n" % (len(piece), piece), pause=0.002)
        await w.send(b"0\r\n\r\n")

    raw = fetch(rt, path)
    body = agent_body(raw)
    decoded = body.decode("latin-1").encode().decode("unicode_escape", "replace").encode("utf-8", "replace")
    assert longest_run(decoded, HOST.real) < K


@needs_root
def test_whole_key_cut_across_writes_is_replaced(rt: ProxyProcess, hostile: HostileServer) -> None:
    path = "/rt14/whole-cut"

    @hostile.on(path)
    async def _(req: Request, w: Wire) -> None:
        body = json.dumps({"echo": req.token, "note": "ok"}).encode()
        await w.send(b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n")
        for i in range(0, len(body), 5):
            piece = body[i : i + 5]
            await w.send(b"%x\r\n%s\r\n" % (len(piece), piece), pause=0.002)
        await w.send(b"0\r\n\r\n")

    raw = fetch(rt, path)
    assert raw.startswith(b"HTTP/1.1 200")
    doc = json.loads(agent_body(raw))
    assert doc == {"echo": HOST.placeholder, "note": "ok"}


@needs_root
def test_ordinary_llm_answer_passes_unchanged(rt: ProxyProcess, hostile: HostileServer) -> None:
    path = "/rt14/ordinary"
    answer = (
        "Here is how to hash a file:\n\n```python\nimport hashlib\nprint(hashlib.sha256(b'abc').hexdigest())\n```\n"
        "Output: ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad\n"
        "Base64 of 'hello world': aGVsbG8gd29ybGQ= ; URL: https://example.com/a%20b?q=1&r=2\n"
        "Keys look like rtREAL followed by 32 hex digits, e.g. rtREAL0123456789abcdef0123456789abcdef.\n"
        'JSON: {"a": "\\u00e9t\\u00e9"} &amp; HTML &lt;b&gt;.\n'
    )
    body = json.dumps({"choices": [{"index": 0, "message": {"role": "assistant", "content": answer}}]}).encode()

    @hostile.on(path)
    async def _(req: Request, w: Wire) -> None:
        await w.send(_respond("Content-Type: application/json\r\n", body))

    raw = fetch(rt, path)
    assert raw.startswith(b"HTTP/1.1 200") and agent_body(raw) == body


@needs_root
@pytest.mark.parametrize("where", ["header", "interim-head", "trailer"])
def test_run_in_heads_and_trailers_never_reaches_the_agent(
    rt: ProxyProcess, hostile: HostileServer, where: str
) -> None:
    path = f"/rt14/head-{where}"

    @hostile.on(path)
    async def _(req: Request, w: Wire) -> None:
        run = req.token[3:30].lower()
        if where == "header":
            await w.send(
                b"HTTP/1.1 401 Unauthorized\r\nX-Debug-Key: " + run.encode() + b"\r\nContent-Length: 2\r\n\r\nno"
            )
        elif where == "interim-head":
            await w.send(b"HTTP/1.1 103 Early Hints\r\nLink: </k/" + run.encode() + b">; rel=preload\r\n\r\n")
            await w.send(_respond("Content-Type: text/plain\r\n", b"ok"), pause=0.01)
        else:
            await w.send(
                b"HTTP/1.1 200 OK\r\nTrailer: X-Echo\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nok\r\n0\r\nX-Echo: "
                + run.encode()
                + b"\r\n\r\n"
            )

    raw = fetch(rt, path)
    assert longest_run(raw, HOST.real) < K


# ---------------------------------------------------------------------------------- held, pure fuzz

_ENCS = {
    "lower": (lambda r: r.lower().encode(), lambda b: b),
    "mixed": (lambda r: "".join(c.upper() if i % 2 else c.lower() for i, c in enumerate(r)).encode(), lambda b: b),
    "json-u": (
        lambda r: "".join(f"\\u{ord(c):04x}" if i % 2 else c for i, c in enumerate(r)).encode(),
        lambda b: b.decode("latin-1").encode().decode("unicode_escape", "replace").encode("utf-8", "replace"),
    ),
    "percent": (
        lambda r: "".join(f"%{ord(c):02x}" if i % 3 == 0 else c for i, c in enumerate(r)).encode(),
        urllib.parse.unquote_to_bytes,
    ),
    "html": (
        lambda r: "".join(f"&#x{ord(c):x};" if i % 2 else c for i, c in enumerate(r)).encode(),
        lambda b: html.unescape(b.decode("utf-8", "replace")).encode(),
    ),
    "utf16": (lambda r: r.encode("utf-16-le"), lambda b: b.replace(b"\0", b"")),
    "qp": (lambda r: "".join(f"={ord(c):02X}" if i % 2 else c for i, c in enumerate(r)).encode(), quopri.decodestring),
}


@pytest.mark.parametrize("seed", [1, 2])
def test_runs_in_views_of_long_bodies_in_random_chunks(seed: int) -> None:
    rng = random.Random(seed)
    real = _key(rng)
    f = Finder.for_values([("k", real, "PH")], runs=True)
    secret = real[8:]
    for _ in range(400):
        name = rng.choice(list(_ENCS))
        enc, dec = _ENCS[name]
        n = rng.randint(16, 22)
        p = rng.randint(0, len(secret) - n)
        pre = b"" if name == "utf16" else b"x" * rng.choice([0, 10, 300_000])
        body = pre + b"Answer: " + enc(secret[p : p + n]) + b" done."
        s = BodyScrubber(f, lambda _: None)
        try:
            out, i = b"", 0
            while i < len(body):
                step = rng.choice([1, 2, 3, 7, 64, 4096, 70_000])
                out += s.feed(body[i : i + step])
                i += step
            out += s.finish()
        except ScrubRefused:
            continue
        assert not _run16(dec(out), real[8:]), name


def test_runs_in_chat_deltas_cut_at_random() -> None:
    rng = random.Random(3)
    real = _key(rng)
    f = Finder.for_values([("k", real, "PH")], runs=True)
    secret = real[8:]
    for _ in range(300):
        n = rng.randint(16, 24)
        p = rng.randint(0, len(secret) - n)
        run = secret[p : p + n]
        if rng.random() < 0.3:
            run = run.lower()
        text = "Hello " + run + " bye"
        cuts = sorted(rng.sample(range(1, len(text)), rng.randint(1, 8)))
        pieces = [text[a:b] for a, b in zip([0, *cuts], [*cuts, len(text)], strict=True)]
        body = (
            b"".join(
                b"data: " + json.dumps({"choices": [{"index": 0, "delta": {"content": d}}]}).encode() + b"\n\n"
                for d in pieces
            )
            + b"data: [DONE]\n\n"
        )
        es = EventScrubber(f, lambda _: None)
        try:
            out, step = b"", rng.randint(1, 50)
            for i in range(0, len(body), step):
                out += es.feed(body[i : i + step])
            out += es.finish()
        except ScrubRefused:
            continue
        stitched = "".join(
            json.loads(ev[6:])["choices"][0]["delta"].get("content") or ""
            for ev in out.split(b"\n\n")
            if ev.startswith(b"data: {")
        )
        assert not _run16(stitched.encode(), real[8:])

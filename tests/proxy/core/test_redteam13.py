"""Red team, thirteenth pass: the pure token-stream scrubber (:class:`EventScrubber`), attacked
from outside on today's additions -- texts a flag marks followed apart, Unicode folding, outputs
joined in index order, base64 pieces decoded one by one, constant leaves -- and their combinations.
A refusal (``ScrubRefused``) holds the line; a break is ``xfail(strict=True, raises=AssertionError)``:
the bytes let out, read as the named real client reads them, hold the key.

All nine families below were fixed on branch fix13 (their marks removed; more forms and
differential properties in ``test_stitch_aliases.py``): truthy flags followed apart, positions that
are no natural number refused, folded texts on every path and in index order, short and
whitespace-broken base64 pieces read, decoded outputs in index order. The accumulators were checked
against the SDKs: google-genai's ``response.text`` skips ``isinstance(part.thought, bool) and
part.thought`` after pydantic's lax validation (``model_validate``); the Anthropic SDK's
``MessageStream`` indexes ``content[event.index]`` on events built by ``construct``;
huggingface_hub's ``Token.special`` is a plain dataclass field.

Breaks (as found):

- ``index-alias-in-one-output`` (seven shapes): an output's position written another way that a
  Python client resolves to the same list entry -- a negative index (``content[-1]``, the last
  block) or ``true`` (``content[True]`` is ``content[1]``). The stitcher takes ``-1`` for an output
  of its own (before 0) and ``true`` for no position at all (a bool is no output field), so the
  halves of one output's text live on different streams, with another output's text between them on
  the plain path. The Anthropic SDK's ``MessageStream`` (``content[event.index]``), the openai SDK's
  ``ChatCompletionStreamState`` (``choices[choice.index]``; ``accumulate_delta``'s
  ``tool_calls[index]``) and ``ResponseStreamState`` (``output[event.output_index]``) build events
  without validation (``construct``) and join the halves in one text; the Chat Completions audio
  shape too (``audio.data`` appended, or decoded piece by piece).
- ``index-alias-out-of-order`` (two shapes): the same aliases with the second half first, on the
  later block: the block is joined after the first one in index order, but the stitcher places
  ``-1`` before 0 and ``true`` nowhere, so the neighbours are never asked.
- ``flag-truthy-not-true`` (nine shapes): a flag that is truthy but not the JSON ``true`` --
  ``"thought": 1``, ``"true"``, ``"yes"``, ``"1"``, ``1.0`` (google-genai's pydantic ``Part`` reads
  them as ``True`` in lax mode; ``response.text`` skips the part), ``"false"`` (the JavaScript
  ``if (part.thought)`` of Google's thinking samples), TGI ``"special": 1`` / ``"true"`` / ``"false"``
  (LangChain's ``if not token.special``). Only ``v is True`` flags a path, so the part between the
  halves is not followed apart.
- ``fold-one-output-index-order``: the later block's text fullwidth (NFKC folds it to ASCII), the
  earlier block's ASCII, the later first: the folded path (``<nfkd>``) is an own path only, no
  indexed one, so index order never sees the folded text. A client that cleans the final text
  (``get_final_text()`` then NFKC, a RAG cleaner) reads the key.
- ``base64-outputs-index-order``: Chat Completions audio of choice 1 (the second half's base64)
  before choice 0's (the first half's): the ``<b64>`` paths are no positions, so the decoded pieces
  are never checked in index order. A client that joins outputs' decoded bytes by index (as the
  index-order check presumes of text) reads the key; weaker: the known audio clients keep choices
  apart.

- ``base64-pieces-not-read`` (four shapes): Chat Completions audio pieces a client decodes one by
  one -- all short and unpadded (12, 15, 10 characters: none is a piece to ``_pieces``, and their
  joined text is misaligned after 20 bytes), or with whitespace in them (a trailing newline, a space,
  a CRLF: ``_BASE64_TEXT`` admits none). atob / ``Buffer.from`` (forgiving) and Python's
  ``b64decode`` (not validating) decode each and the bytes joined hold the key.
- ``fold-on-one-output-other-between`` (four shapes): block 0's text partly in a form that folds
  (fullwidth half, a zero-width-space delta, every other character fullwidth), block 1's deltas
  between: the ``<nfkd>`` path is the own path only (which joins all blocks), never the indexed one.
  ``get_final_text()`` then a cleaner (NFKC, format characters dropped).
- ``flag-then-fold`` (two shapes): a ``"thought": true`` part between the halves, one half
  fullwidth: flagged-apart texts are not folded, the folded ones keep the thought between.
  google-genai's ``response.text`` then a cleaner.

Held: the JSON ``true`` flags (``thought``, ``special``); indexes with gaps, huge, fractional
``1.0``, and ``"1"`` for ``1``; a folded half on the same output or in index order as it came;
base64 pieces interleaved with another output's on one output; a base64 piece or a text repeated
300 times, then changed; the same ``item_id`` moved to another ``output_index``; the AI SDK's UI
stream by part ``id``; a zero-width delta between halves on one output with nothing else between;
a soft hyphen after every character; thought parts between the halves on 80 distinct paths (paths
forgotten); more than 1,024 blocks with the halves on blocks 0 and 1 (refused)."""

from __future__ import annotations

import base64
import json
from typing import Any

import pytest

from proxy.core.scrub import EventScrubber, ScrubRefused
from proxy.core.values import Finder

VALUE = "sk-REAL-CANARY-9f8e7d6c5b4a"
PH = "sk-sandgate-openai-ph"
FINDER = Finder.for_values([("openai", VALUE, PH)])
A, B = VALUE[:13], VALUE[13:]
RAW = VALUE.encode()


def run(events: list[bytes]) -> bytes:
    """What the agent gets of ``events``; raises ScrubRefused as the stream would be cut."""
    s = EventScrubber(FINDER, lambda _: None)
    return b"".join(s.feed(e) for e in events) + s.finish()


def leaks(events: list[bytes], read: Any = None) -> bool:
    """Whether what goes out, read as a client reads it (``read``: of the output), holds the key;
    False when refused."""
    try:
        out = run(events)
    except ScrubRefused:
        return False
    return read(out) if read is not None else True


def sse(*docs: dict[str, Any]) -> list[bytes]:
    return [f"event: {d.get('type', 'x')}\ndata: {json.dumps(d)}\n\n".encode() for d in docs]


def data(*docs: dict[str, Any]) -> list[bytes]:
    return [b"data: " + json.dumps(d).encode() + b"\n\n" for d in docs]


def docs_of(out: bytes) -> list[Any]:
    """The JSON of each ``data:`` line let out."""
    found = []
    for line in out.split(b"\n"):
        if line.startswith(b"data:"):
            body = line[5:].strip()
            if body and body != b"[DONE]":
                found.append(json.loads(body))
    return found


# -- the clients, written out as their accumulators index (Python lists: -1 and True included) ----


def anthropic_final_text(out: bytes) -> str:
    """The Anthropic SDK's ``MessageStream``: ``content.append`` on a block's start,
    ``content[event.index].text += delta.text`` on a delta (events built with ``construct``:
    the index as sent); ``get_final_text()`` joins the text blocks."""
    content: list[dict[str, Any]] = []
    for d in docs_of(out):
        if d["type"] == "content_block_start":
            content.append(dict(d["content_block"]))
        elif d["type"] == "content_block_delta":
            content[d["index"]]["text"] += d["delta"]["text"]
    return "".join(b["text"] for b in content)


def chat_snapshot(out: bytes) -> list[dict[str, Any]]:
    """The openai SDK's ``ChatCompletionStreamState``: ``choices[choice.index]`` (appended on
    IndexError), ``accumulate_delta`` (strings appended; a list's entries by their ``index``)."""

    def accumulate(acc: dict[str, Any], delta: dict[str, Any]) -> dict[str, Any]:
        for k, v in delta.items():
            if k not in acc or k in ("index", "type"):
                acc[k] = v
            elif isinstance(v, str):
                acc[k] += v
            elif isinstance(v, dict):
                accumulate(acc[k], v)
            elif isinstance(v, list):
                for entry in v:
                    try:
                        acc[k][entry["index"]] = accumulate(acc[k][entry["index"]], entry)
                    except IndexError:
                        acc[k].insert(entry["index"], entry)
        return acc

    choices: list[dict[str, Any]] = []
    for d in docs_of(out):
        for c in d["choices"]:
            try:
                choices[c["index"]] = accumulate(choices[c["index"]], c["delta"])
            except IndexError:
                choices.append(json.loads(json.dumps(c["delta"])))
    return choices


def responses_output_text(out: bytes) -> str:
    """The openai SDK's ``ResponseStreamState``: ``output.append`` on ``output_item.added``,
    ``output[event.output_index].content[event.content_index].text += delta``; ``output_text``."""
    output: list[dict[str, Any]] = []
    for d in docs_of(out):
        if d["type"] == "response.output_item.added":
            output.append({"content": [{"text": ""}]})
        elif d["type"] == "response.output_text.delta":
            output[d["output_index"]]["content"][d["content_index"]]["text"] += d["delta"]
    return "".join(c["text"] for o in output for c in o["content"])


def has_key(text: str) -> bool:
    return VALUE in text


# -- shapes --------------------------------------------------------------------------------------

MESSAGE_START = {"type": "message_start", "message": {"id": "m", "type": "message", "role": "assistant", "content": []}}


def _start(i: int) -> dict[str, Any]:
    return {"type": "content_block_start", "index": i, "content_block": {"type": "text", "text": ""}}


def _delta(i: Any, text: str) -> dict[str, Any]:
    return {"type": "content_block_delta", "index": i, "delta": {"type": "text_delta", "text": text}}


def anthropic(*middle: dict[str, Any]) -> list[bytes]:
    return sse(MESSAGE_START, _start(0), _start(1), *middle, {"type": "message_stop"})


def _chunk(index: Any, delta: dict[str, Any]) -> dict[str, Any]:
    return {"id": "c", "object": "chat.completion.chunk", "choices": [{"index": index, "delta": delta}]}


def _tool(index: Any, args: str, first: bool = False) -> dict[str, Any]:
    call: dict[str, Any] = {"index": index, "function": {"arguments": args}}
    if first:
        call.update(id=f"call_{index}", type="function", function={"name": "f", "arguments": args})
    return _chunk(0, {"tool_calls": [call]})


def _out_delta(i: Any, item: str, text: str) -> dict[str, Any]:
    return {"type": "response.output_text.delta", "item_id": item, "output_index": i, "content_index": 0, "delta": text}


def _added(i: int, item: str) -> dict[str, Any]:
    return {"type": "response.output_item.added", "output_index": i, "item": {"id": item, "type": "message"}}


B64_1, B64_2 = base64.b64encode(RAW[:15]).decode(), base64.b64encode(RAW[15:]).decode()
FILLER = "AAAA" * 5


def _audio_joined(out: bytes) -> bool:
    """Either reader of choice 1's ``audio.data``: the appended string decoded, or each piece."""
    choices = chat_snapshot(out)
    pieces = [d["choices"][0]["delta"]["audio"]["data"] for d in docs_of(out)]
    return RAW in base64.b64decode(choices[1]["audio"]["data"]) or RAW in b"".join(map(base64.b64decode, pieces))


def _args(out: bytes) -> bool:
    return any(VALUE in c["function"]["arguments"] for c in chat_snapshot(out)[0]["tool_calls"])


ALIAS_IN_ONE_OUTPUT = {
    "anthropic-negative-index": (anthropic(_delta(1, A), _delta(0, "x"), _delta(-1, B)), anthropic_final_text),
    "anthropic-true-index": (anthropic(_delta(1, A), _delta(0, "x"), _delta(True, B)), anthropic_final_text),
    "chat-negative-choice": (
        data(
            _chunk(0, {"content": "hi"}),
            _chunk(1, {"content": A}),
            _chunk(0, {"content": "x"}),
            _chunk(-1, {"content": B}),
        ),
        lambda out: chat_snapshot(out)[1]["content"],
    ),
    "chat-true-choice": (
        data(
            _chunk(0, {"content": "hi"}),
            _chunk(1, {"content": A}),
            _chunk(0, {"content": "x"}),
            _chunk(True, {"content": B}),
        ),
        lambda out: chat_snapshot(out)[1]["content"],
    ),
    "chat-negative-tool-call": (
        data(_tool(0, "", True), _tool(1, "", True), _tool(1, '{"k":"' + A), _tool(0, '{"q":1}'), _tool(-1, B + '"}')),
        lambda out: VALUE if _args(out) else "",
    ),
    "responses-negative-output": (
        sse(
            _added(0, "i0"), _added(1, "i1"), _out_delta(1, "i1", A), _out_delta(0, "i0", "x"), _out_delta(-1, "i1", B)
        ),
        responses_output_text,
    ),
    "chat-audio-negative-choice": (
        data(
            _chunk(0, {"audio": {"data": FILLER}}),
            _chunk(1, {"audio": {"data": B64_1}}),
            _chunk(0, {"audio": {"data": FILLER}}),
            _chunk(-1, {"audio": {"data": B64_2}}),
        ),
        lambda out: VALUE if _audio_joined(out) else "",
    ),
}


@pytest.mark.parametrize("shape", ALIAS_IN_ONE_OUTPUT.values(), ids=ALIAS_IN_ONE_OUTPUT.keys())
def test_index_alias_in_one_output(shape: tuple[list[bytes], Any]) -> None:
    """One output's text, its second half sent under ``-1`` or ``true`` for its position and
    another output's text between: a Python accumulator (Anthropic ``MessageStream``, openai
    ``ChatCompletionStreamState`` / ``ResponseStreamState``) indexes its list with it and joins
    the halves."""
    events, read = shape
    assert not leaks(events, lambda out: has_key(read(out)))


ALIAS_OUT_OF_ORDER = {
    "anthropic-negative-index": anthropic(_delta(-1, B), _delta(0, A)),
    "anthropic-true-index": anthropic(_delta(True, B), _delta(0, A)),
}


@pytest.mark.parametrize("events", ALIAS_OUT_OF_ORDER.values(), ids=ALIAS_OUT_OF_ORDER.keys())
def test_index_alias_out_of_order(events: list[bytes]) -> None:
    """Block 1's text (the second half, under ``-1`` or ``true``) before block 0's (the first):
    ``get_final_text()`` joins block 0 then block 1."""
    assert not leaks(events, lambda out: has_key(anthropic_final_text(out)))


def test_plain_index_out_of_order_held() -> None:
    """The control: the same with index 1 is refused."""
    assert not leaks(anthropic(_delta(1, B), _delta(0, A)))


# -- flags a client reads as true ------------------------------------------------------------------


def gemini(*parts: dict[str, Any]) -> list[bytes]:
    return data(*({"candidates": [{"content": {"role": "model", "parts": [p]}, "index": 0}]} for p in parts))


def gemini_text(out: bytes, skip: Any) -> str:
    """``response.text`` of each chunk joined, thought parts skipped (``skip`` of the flag)."""
    return "".join(
        p["text"] for d in docs_of(out) for p in d["candidates"][0]["content"]["parts"] if not skip(p.get("thought"))
    )


def _pydantic_true(v: Any) -> bool:  # (pydantic's lax bool: what google-genai's Part.thought holds)
    return v is True or v in (1, 1.0) or (isinstance(v, str) and v.lower() in ("1", "true", "yes", "on", "t", "y"))


def tgi(*tokens: tuple[str, Any]) -> list[bytes]:
    return data(
        *({"token": {"id": 1, "text": t, "logprob": 0.0, "special": s}, "generated_text": None} for t, s in tokens)
    )


def tgi_text(out: bytes) -> str:
    """LangChain's TGI client: ``if not token.special`` appends."""
    return "".join(d["token"]["text"] for d in docs_of(out) if not d["token"]["special"])


FLAGS: dict[str, tuple[list[bytes], Any]] = {
    **{
        f"gemini-thought-{name}": (
            gemini({"text": A}, {"text": "junk", "thought": flag}, {"text": B}),
            lambda out: gemini_text(out, _pydantic_true),
        )
        for name, flag in (("1", 1), ("string-true", "true"), ("yes", "yes"), ("string-1", "1"), ("float", 1.0))
    },
    "gemini-thought-string-false-js": (
        gemini({"text": A}, {"text": "junk", "thought": "false"}, {"text": B}),
        lambda out: gemini_text(out, bool),  # (JavaScript's ``if (part.thought)``)
    ),
    "tgi-special-1": (tgi((A, False), ("</s>", 1), (B, False)), tgi_text),
    "tgi-special-string-true": (tgi((A, False), ("</s>", "true"), (B, False)), tgi_text),
    "tgi-special-string-false": (tgi((A, False), ("</s>", "false"), (B, False)), tgi_text),
}


@pytest.mark.parametrize("shape", FLAGS.values(), ids=FLAGS.keys())
def test_flag_truthy_not_true(shape: tuple[list[bytes], Any]) -> None:
    """A flagged part between the halves, its flag truthy to the client but not ``true``."""
    events, read = shape
    assert not leaks(events, lambda out: has_key(read(out)))


@pytest.mark.parametrize(
    "events",
    [
        gemini({"text": A}, {"text": "junk", "thought": True}, {"text": B}),
        tgi((A, False), ("</s>", True), (B, False)),
    ],
    ids=["gemini-thought-true", "tgi-special-true"],
)
def test_flag_true_held(events: list[bytes]) -> None:
    assert not leaks(events)


# -- folding and index order -----------------------------------------------------------------------


def _fullwidth(text: str) -> str:
    return "".join(chr(ord(c) + 0xFEE0) if 0x21 <= ord(c) <= 0x7E else c for c in text)


def test_fold_one_output_index_order() -> None:
    """Block 1's text fullwidth (the second half) before block 0's ASCII (the first):
    ``get_final_text()`` then NFKC (a text cleaner) reads the key."""
    import unicodedata

    events = anthropic(_delta(1, _fullwidth(B)), _delta(0, A))
    assert not leaks(events, lambda out: has_key(unicodedata.normalize("NFKC", anthropic_final_text(out))))


def _cleaned(text: str) -> str:
    """What a text cleaner reads (the stitcher's own ``_fold``): NFKC, format characters dropped."""
    import unicodedata

    return "".join(c for c in unicodedata.normalize("NFKC", text) if unicodedata.category(c) != "Cf")


def _mixed(text: str, sep: str) -> list[dict[str, Any]]:
    """Every other character fullwidth, each its own delta on block 0, block 1 speaking between."""
    out = []
    for i, c in enumerate(text):
        out += [_delta(0, _fullwidth(c) if i % 2 else c), _delta(1, sep)]
    return out


FOLD_ON_OUTPUT = {
    "fullwidth-second-half": anthropic(_delta(0, A), _delta(1, "x"), _delta(0, _fullwidth(B))),
    "fullwidth-first-half": anthropic(_delta(0, _fullwidth(A)), _delta(1, "x"), _delta(0, B)),
    "zero-width-delta-between": anthropic(_delta(0, A), _delta(0, "\u200b"), _delta(1, "x"), _delta(0, B)),
    "every-other-char-fullwidth": anthropic(*_mixed(VALUE, "y")),
}


@pytest.mark.parametrize("events", FOLD_ON_OUTPUT.values(), ids=FOLD_ON_OUTPUT.keys())
def test_fold_on_one_output_other_between(events: list[bytes]) -> None:
    """Block 0's text, part of it in a form that folds (fullwidth, a zero-width space), block 1's
    text between its deltas: the ``<nfkd>`` path is the leaf's own path, which joins every block's
    deltas, never the indexed one; the indexed path has the raw forms. ``get_final_text()`` then a
    cleaner (NFKC, format characters dropped) reads the key."""
    assert not leaks(events, lambda out: has_key(_cleaned(anthropic_final_text(out))))


FLAG_AND_FOLD = {
    "fullwidth-after": gemini({"text": A}, {"text": "junk", "thought": True}, {"text": _fullwidth(B)}),
    "fullwidth-before": gemini({"text": _fullwidth(A)}, {"text": "junk", "thought": True}, {"text": B}),
}


@pytest.mark.parametrize("events", FLAG_AND_FOLD.values(), ids=FLAG_AND_FOLD.keys())
def test_flag_then_fold(events: list[bytes]) -> None:
    """A thought part (``"thought": true``) between the halves, one half fullwidth: the texts no
    flag marks are followed apart raw, the folded texts on the own path only (with the thought
    between). google-genai's ``response.text`` (thoughts skipped), then a cleaner, reads the key."""
    assert not leaks(events, lambda out: has_key(_cleaned(gemini_text(out, _pydantic_true))))


@pytest.mark.parametrize(
    "events",
    [anthropic(_delta(0, A), _delta(1, _fullwidth(B))), anthropic(_delta(0, A), _delta(0, _fullwidth(B)))],
    ids=["other-output-in-order", "same-output"],
)
def test_fold_held(events: list[bytes]) -> None:
    assert not leaks(events)


# -- base64 pieces ---------------------------------------------------------------------------------


def _audio(i: Any, piece: str) -> dict[str, Any]:
    return _chunk(i, {"audio": {"data": piece}})


def test_base64_outputs_index_order() -> None:
    """Choice 1's audio piece (the second half) before choice 0's (the first); a client that joins
    the choices' decoded bytes in index order reads the key."""
    b1, b2 = base64.b64encode(RAW[:14]).decode(), base64.b64encode(RAW[14:]).decode()
    events = data(_audio(1, b2), _audio(0, b1))

    def read(out: bytes) -> bool:
        by = {
            d["choices"][0]["index"]: base64.b64decode(d["choices"][0]["delta"]["audio"]["data"]) for d in docs_of(out)
        }
        return RAW in b"".join(by[k] for k in sorted(by))

    assert not leaks(events, read)


def _pieces_read(out: bytes) -> bool:
    """Each piece of choice 0's ``audio.data`` decoded as it comes, the bytes appended: atob and
    Node's ``Buffer.from`` (forgiving: ASCII whitespace skipped, padding optional), Python's
    ``b64decode`` (not validating: what is no base64 skipped)."""
    pieces = [d["choices"][0]["delta"]["audio"]["data"] for d in docs_of(out)]
    got = b""
    for p in pieces:
        p = "".join(p.split())
        got += base64.b64decode(p + "=" * (-len(p) % 4))
    return RAW in got


def _nopad(b: bytes) -> str:
    return base64.b64encode(b).decode().rstrip("=")


_P1, _P2 = base64.b64encode(RAW[:14]).decode(), base64.b64encode(RAW[14:]).decode()
PIECES = {
    "short-unpadded-12-15-10": [_nopad(RAW[:9]), _nopad(RAW[9:20]), _nopad(RAW[20:])],
    "trailing-newline": [_P1 + "\n", _P2 + "\n"],
    "space-inside": [_P1[:8] + " " + _P1[8:], _P2[:8] + " " + _P2[8:]],
    "crlf-inside-first": [_P1[:10] + "\r\n" + _P1[10:], _P2],
}


@pytest.mark.parametrize("pieces", PIECES.values(), ids=PIECES.keys())
def test_base64_pieces_not_read(pieces: list[str]) -> None:
    """Chat Completions audio pieces a client decodes one by one and appends: pieces all shorter
    than PIECE_MIN and unpadded (12, 15, 10 characters: 9, 11, 7 bytes; the joined text is base64 of
    the first 20 bytes only, then misaligned), or with whitespace in them (no piece to
    ``_BASE64_TEXT``; atob skips ASCII whitespace, ``b64decode`` what is no base64). The first
    half's piece padded, so the joined text is no base64 of the key either."""
    assert not leaks(data(*(_audio(0, p) for p in pieces)), _pieces_read)


def test_base64_interleaved_on_one_output_held() -> None:
    b1, b2 = base64.b64encode(RAW[:14]).decode(), base64.b64encode(RAW[14:]).decode()
    other = base64.b64encode(b"z" * 14).decode()
    assert not leaks(data(_audio(0, b1), _audio(1, other), _audio(0, b2)))


@pytest.mark.parametrize(
    "events",
    [
        data(*[_audio(0, base64.b64encode(RAW[:15]).decode())] * 300, _audio(0, base64.b64encode(RAW[15:]).decode())),
        data(*[_chunk(0, {"content": A})] * 300, _chunk(0, {"content": B})),
    ],
    ids=["base64-piece", "text"],
)
def test_constant_leaf_changes_after_300_repeats_held(events: list[bytes]) -> None:
    """The same leaf 300 times, then the rest: the last repeat and the change hold the key."""
    assert not leaks(events)


# -- positions that hold -------------------------------------------------------------------------


@pytest.mark.parametrize(
    "index",
    [5, 10**30, "1", 1.0],
    ids=["gap", "huge", "string", "float-integral"],
)
def test_index_forms_out_of_order_held(index: Any) -> None:
    assert not leaks(anthropic(_delta(index, B), _delta(0, A)))


def test_item_moved_to_other_output_index_held() -> None:
    assert not leaks(sse(_out_delta(1, "i1", A), _out_delta(0, "i0", "x"), _out_delta(7, "i1", B)))


def test_ui_stream_by_part_id_held() -> None:
    ui = [{"type": "text-delta", "id": "a", "delta": A}, {"type": "text-delta", "id": "b", "delta": "x"}]
    assert not leaks(sse(*ui, {"type": "text-delta", "id": "a", "delta": B}))


def test_zero_width_delta_alone_held() -> None:
    assert not leaks(anthropic(_delta(0, A), _delta(0, "\u200b"), _delta(0, B)))


def test_soft_hyphen_every_character_held() -> None:
    assert not leaks(anthropic(*(_delta(0, c + "\u00ad") for c in VALUE)))


def test_thought_parts_on_many_paths_held() -> None:
    """80 thought parts between the halves, each chunk with a member of its own (paths forgotten)."""
    thoughts = [
        {"candidates": [{"content": {"parts": [{"text": "x", "thought": True}]}}], f"k{i}": "v"} for i in range(80)
    ]
    events = gemini({"text": A}) + data(*thoughts) + gemini({"text": B})
    assert not leaks(events)


@pytest.mark.parametrize("first", ["a-first", "b-first"])
def test_more_than_1024_blocks_held(first: str) -> None:
    halves = [_delta(0, A), _delta(1, B)]
    if first == "b-first":
        halves.reverse()
    middle = [_delta(i, "x") for i in range(2, 1100)]
    events = sse(MESSAGE_START, *(_start(i) for i in range(1100)), halves[0], *middle, halves[1])
    assert not leaks(events)

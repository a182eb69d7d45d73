"""The token-stream stitcher against the forms a client reads another way than the stitcher did
(red team 13): flags truthy but not ``true``, output positions that are no natural number. Each
table goes past the forms the red team named; each property checks the stitcher against a model
of the clients (what they skip, how a Python list resolves an index)."""

from __future__ import annotations

import base64
import itertools
import json
import unicodedata
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from proxy.core.scrub import EventScrubber, ScrubRefused
from proxy.core.values import Finder

VALUE = "sk-REAL-CANARY-9f8e7d6c5b4a"
PH = "sk-sandgate-openai-ph"
FINDER = Finder.for_values([("openai", VALUE, PH)])
A, B = VALUE[:13], VALUE[13:]


def run(events: list[bytes]) -> bytes:
    """What the agent gets of ``events``; raises ScrubRefused as the stream would be cut."""
    s = EventScrubber(FINDER, lambda _: None)
    return b"".join(s.feed(e) for e in events) + s.finish()


def refused(events: list[bytes]) -> bool:
    try:
        run(events)
    except ScrubRefused:
        return True
    return False


def data(*docs: str) -> list[bytes]:
    """Events of JSON written out (``1e0``, ``-0`` as they are: json.dumps would not write them)."""
    return [b"data: " + d.encode() + b"\n\n" for d in docs]


def js(value: Any) -> str:
    return json.dumps(value)


# -- flags truthy to some client -----------------------------------------------------------------


def gemini(text: str, flag: str | None = None) -> str:
    part = '{"text": ' + js(text) + (', "thought": ' + flag if flag is not None else "") + "}"
    return '{"candidates": [{"content": {"role": "model", "parts": [' + part + ']}, "index": 0}]}'


def tgi(text: str, flag: str, name: str = "special") -> str:
    return '{"token": {"id": 7, "text": ' + js(text) + ', "logprob": -0.1, "' + name + '": ' + flag + "}}"


# JSON a client reads as true: JavaScript (``if (part.thought)``: every string not empty, every
# number not 0, every object and array), Python (``if token.special``) and pydantic's lax bool
# (``"yes"``, ``"on"``, ``"t"``, any case). None of them JSON ``true``.
TRUTHY = ["1", "1.0", "1e0", "2", "-1", "0.5", "1e300", "-0.1", '"true"', '"True"', '"TRUE"', '"yes"', '"YES"',
          '"on"', '"t"', '"y"', '"1"', '"false"', '"False"', '"0"', '"no"', '"off"', '"f"', '"n"', '" "', '"0.0"',
          "{}", "[]", "[0]", '{"a": false}', "[false]"]  # fmt: skip
FALSY = ["false", "0", "0.0", "-0", "-0.0", "0e5", '""', "null"]


@pytest.mark.parametrize("flag", TRUTHY)
@pytest.mark.parametrize("shape", ["gemini", "tgi"])
def test_truthy_flag_between_halves_refused(shape: str, flag: str) -> None:
    """A part flagged by a value some client reads as true, between the halves: a client that
    skips it (google-genai's ``response.text``, Google's JavaScript samples, LangChain's TGI
    client) joins the halves."""
    if shape == "gemini":
        events = data(gemini(A), gemini("junk", flag), gemini(B))
    else:
        events = data(tgi(A, "false"), tgi("</s>", flag), tgi(B, "false"))
    assert refused(events)


@pytest.mark.parametrize("flag", FALSY)
@pytest.mark.parametrize("shape", ["gemini", "tgi"])
def test_falsy_flag_between_halves_flows(shape: str, flag: str) -> None:
    """A value false to every client flags nothing: the part is read between the halves by all."""
    if shape == "gemini":
        events = data(gemini(A), gemini("junk", flag), gemini(B))
    else:
        events = data(tgi(A, "false"), tgi("</s>", flag), tgi(B, "false"))
    assert run(events) == b"".join(events)


@pytest.mark.parametrize("flag", ["true", "1", "1.0"])
def test_any_member_one_flags(flag: str) -> None:
    """A member of a name no client is known to skip by still flags when it is ``true`` or ``1``
    (a bool to pydantic, truthy to JavaScript): a client of its own may skip it."""
    events = data(tgi(A, "false", "hidden"), tgi("</s>", flag, "hidden"), tgi(B, "false", "hidden"))
    assert refused(events)


def test_output_field_one_is_no_flag() -> None:
    """``"index": 1`` is a position, not a flag: an ordinary second block's deltas flow."""
    events = data(*(json.dumps({"type": "content_block_delta", "index": 1, "delta": {"text": t}}) for t in (A, "x")))
    assert run(events) == b"".join(events)


def _js_truthy(v: Any) -> bool:
    return not (v is None or v is False or (isinstance(v, int | float) and v == 0) or v == "")


def _pydantic_lax(v: Any) -> bool:
    if isinstance(v, bool):
        return v
    if isinstance(v, int | float):
        return v == 1
    return isinstance(v, str) and v.lower() in ("1", "true", "yes", "on", "t", "y")


_JSON = st.recursive(
    st.none() | st.booleans() | st.integers(-3, 3) | st.floats(allow_nan=False, allow_infinity=False)
    | st.sampled_from(["", "0", "1", "true", "false", "yes", "no", "TRUE", "x"]) | st.text(max_size=4),
    lambda inner: st.lists(inner, max_size=2) | st.dictionaries(st.sampled_from("ab"), inner, max_size=2),
    max_leaves=3,
)  # fmt: skip


@settings(max_examples=150, deadline=None)
@given(flag=_JSON, shape=st.sampled_from(["gemini", "tgi"]))
def test_flag_differential(flag: Any, shape: str) -> None:
    """Differential: refused exactly when some client -- JavaScript's truthiness, Python's, or
    pydantic's lax bool -- skips the flagged part between the halves."""
    f = json.dumps(flag)
    if shape == "gemini":
        events = data(gemini(A), gemini("junk", f), gemini(B))
    else:
        events = data(tgi(A, "false"), tgi("</s>", f), tgi(B, "false"))
    skipped = _js_truthy(flag) or bool(flag) or _pydantic_lax(flag)
    assert refused(events) == skipped


# -- output positions that are no natural number --------------------------------------------------


def delta(index: str, text: str) -> str:
    return (
        '{"type": "content_block_delta", "index": '
        + index
        + ', "delta": {"type": "text_delta", "text": '
        + js(text)
        + "}}"
    )


def anthropic(*middle: str) -> list[bytes]:
    start = '{"type": "content_block_start", "index": %d, "content_block": {"type": "text", "text": ""}}'
    return data('{"type": "message_start", "message": {"content": []}}', start % 0, start % 1, *middle)


# What no natural number is, as JSON: negative (a Python list's end), a bool (``True`` is 1),
# negative written as a float or huge (past 64 digits the reader takes any integer as -1).
NOT_NATURAL = ["-1", "-2", "true", "false", "-1.0", "-1e0", "-" + "9" * 30, "-" + "9" * 80, "9" * 80]
INDEX_KEYS = ["index", "output_index", "content_index", "summary_index", "contentBlockIndex"]


@pytest.mark.parametrize("index", NOT_NATURAL)
@pytest.mark.parametrize("key", INDEX_KEYS)
def test_index_not_natural_refused(key: str, index: str) -> None:
    """Any positional output field that is no natural number: refused as soon as it comes, alone
    and with nothing else in the stream (no real API sends one; a Python client's list reads it as
    another output's position)."""
    assert refused(data('{"' + key + '": ' + index + ', "delta": {"text": "x"}}'))


@pytest.mark.parametrize("index", ["-1", "true", "false", "-1.0"])
def test_index_not_natural_nested_refused(index: str) -> None:
    """A tool call's ``index`` inside a chunk (``accumulate_delta``'s ``tool_calls[index]``)."""
    chunk = (
        '{"choices": [{"index": 0, "delta": {"tool_calls": [{"index": '
        + index
        + ', "function": {"arguments": "x"}}]}}]}'
    )
    assert refused(data(chunk))


@pytest.mark.parametrize("value", ["-1", "true", "false"])
@pytest.mark.parametrize("key", ["id", "type", "item_id", "event"])
def test_other_output_fields_not_refused(key: str, value: str) -> None:
    """Only positions must be natural numbers: an ``id`` of -1 or ``true`` is a name."""
    events = data('{"' + key + '": ' + value + ', "delta": {"text": "x"}}')
    assert run(events) == b"".join(events)


# Natural numbers written otherwise, each read as the same position by Python (``content[1]``
# after ``json.loads``: 1e0 and 1.0 are floats a list refuses, so by JavaScript's array) and by the
# stitcher: the halves on one output, another's text between, refused.
ALIASES_OF_1 = ["1", "1.0", "1e0", "10e-1", "0.1e1", '"1"']
ALIASES_OF_0 = ["0", "-0", "-0.0", "0e0", "0.0", '"0"']


@pytest.mark.parametrize("alias", ALIASES_OF_1)
def test_natural_alias_same_output(alias: str) -> None:
    assert refused(anthropic(delta("1", A), delta("0", "x"), delta(alias, B)))


@pytest.mark.parametrize("alias", ALIASES_OF_0)
def test_zero_alias_same_output(alias: str) -> None:
    assert refused(anthropic(delta("0", A), delta("1", "x"), delta(alias, B)))


@pytest.mark.parametrize("alias", ALIASES_OF_1)
def test_natural_alias_index_order(alias: str) -> None:
    """Block 1's text (second half) first, under an alias of 1, then block 0's: index order."""
    assert refused(anthropic(delta(alias, B), delta("0", A)))


def _python_client(out: bytes) -> list[str] | None:
    """The Anthropic SDK's ``MessageStream`` on what went out: blocks appended on their start,
    ``content[event.index].text += delta.text`` as the index came (no validation: ``construct``);
    None when the client fails (an index its list has not, or no int)."""
    content: list[dict[str, str]] = []
    try:
        for line in out.split(b"\n"):
            if not line.startswith(b"data: "):
                continue
            d = json.loads(line[6:])
            if d.get("type") == "content_block_start":
                content.append({"text": d["content_block"]["text"]})
            elif d.get("type") == "content_block_delta":
                content[d["index"]]["text"] += d["delta"]["text"]
    except (IndexError, TypeError):
        return None
    return [b["text"] for b in content]


_INDEXES = st.sampled_from(["0", "1", "2", "-1", "-2", "-3", "true", "false", "1.0", "-0", "-1.0"])
_TEXTS = st.sampled_from([A, B, VALUE[:6], VALUE[6:13], VALUE[13:20], VALUE[20:], "x", ""])


@settings(max_examples=300, deadline=None)
@given(st.lists(st.tuples(_INDEXES, _TEXTS), min_size=1, max_size=6))
def test_index_differential(deltas: list[tuple[str, str]]) -> None:
    """Differential: whatever three blocks' deltas under whatever index forms, what the stitcher
    lets out never gives the Python client (a list indexed by what was sent) the key, in any block
    or in their text joined."""
    start = '{"type": "content_block_start", "index": %d, "content_block": {"type": "text", "text": ""}}'
    events = data(*(start % i for i in range(3)), *(delta(i, t) for i, t in deltas))
    try:
        out = run(events)
    except ScrubRefused:
        return
    blocks = _python_client(out)
    assert blocks is None or VALUE not in "".join(blocks)
    not_natural = any((i.startswith("-") and float(i) < 0) or i in ("true", "false") for i, _ in deltas)
    assert not not_natural  # (let out: every index was a natural number)


# -- folded texts on every path -------------------------------------------------------------------


def _cleaned(text: str) -> str:
    """What a text cleaner reads: NFKC, format characters dropped."""
    return "".join(c for c in unicodedata.normalize("NFKC", text) if unicodedata.category(c) != "Cf")


def fullwidth(text: str) -> str:
    return "".join(chr(ord(c) + 0xFEE0) if 0x21 <= ord(c) <= 0x7E else c for c in text)


def bold(text: str) -> str:
    """Mathematical bold letters and digits (NFKC: ASCII); the rest as it is."""
    out = []
    for c in text:
        if "a" <= c <= "z":
            out.append(chr(0x1D41A + ord(c) - ord("a")))
        elif "A" <= c <= "Z":
            out.append(chr(0x1D400 + ord(c) - ord("A")))
        elif "0" <= c <= "9":
            out.append(chr(0x1D7CE + ord(c) - ord("0")))
        else:
            out.append(c)
    return "".join(out)


def sprinkled(text: str, mark: str) -> str:
    return mark.join(text)


# Forms a cleaner folds the red team did not name: bold letters, circled... and format characters
# between every two characters (a word joiner, a byte order mark, a soft hyphen, left-to-right marks).
FORMS = {
    "bold": bold,
    "fullwidth": fullwidth,
    "word-joiner": lambda t: sprinkled(t, "\u2060"),
    "bom": lambda t: sprinkled(t, "\ufeff"),
    "soft-hyphen": lambda t: sprinkled(t, "\u00ad"),
    "lrm": lambda t: sprinkled(t, "\u200e"),
}


def chunk(index: int, content: str) -> str:
    return json.dumps(
        {"id": "c", "object": "chat.completion.chunk", "choices": [{"index": index, "delta": {"content": content}}]}
    )


def out_delta(i: int, item: str, text: str) -> str:
    return json.dumps(
        {"type": "response.output_text.delta", "item_id": item, "output_index": i, "content_index": 0, "delta": text}
    )


@pytest.mark.parametrize("form", FORMS.values(), ids=FORMS.keys())
@pytest.mark.parametrize("shape", ["anthropic", "chat-choices", "responses", "ui-part-id"])
@pytest.mark.parametrize("folded", ["first", "second"])
def test_folded_half_on_one_output_other_between(shape: str, folded: str, form: Any) -> None:
    """One output's halves, one of them in a form a cleaner folds, another output's text between:
    a client that keeps outputs apart (``content[index]``, ``choices[index]``,
    ``output[output_index]``, the AI SDK's parts by ``id``: a tagged path), then cleans, reads the key."""
    a, b = (form(A), B) if folded == "first" else (A, form(B))
    if shape == "anthropic":
        events = anthropic(delta("0", a), delta("1", "x"), delta("0", b))
    elif shape == "chat-choices":
        events = data(chunk(0, a), chunk(1, "x"), chunk(0, b))
    elif shape == "responses":
        events = data(out_delta(0, "i0", a), out_delta(1, "i1", "x"), out_delta(0, "i0", b))
    else:
        ui = '{"type": "text-delta", "id": "%s", "delta": %s}'
        events = data(ui % ("p", js(a)), ui % ("q", '"x"'), ui % ("p", js(b)))
    assert refused(events)


@pytest.mark.parametrize("form", FORMS.values(), ids=FORMS.keys())
@pytest.mark.parametrize("folded", ["earlier-block", "later-block"])
def test_folded_half_index_order(folded: str, form: Any) -> None:
    """Block 1's text (the second half) before block 0's (the first), either folded:
    ``get_final_text()`` joins them in index order, a cleaner folds them."""
    a, b = (form(A), B) if folded == "earlier-block" else (A, form(B))
    assert refused(anthropic(delta("1", b), delta("0", a)))


@pytest.mark.parametrize("form", FORMS.values(), ids=FORMS.keys())
@pytest.mark.parametrize("shape", ["gemini", "tgi"])
@pytest.mark.parametrize("folded", ["before", "after"])
def test_flagged_between_folded_half(shape: str, folded: str, form: Any) -> None:
    """A flagged part between the halves, one half folded: a client that skips flagged texts,
    then cleans, reads the key (google-genai's ``response.text``; LangChain's TGI client)."""
    a, b = (form(A), B) if folded == "before" else (A, form(B))
    if shape == "gemini":
        events = data(gemini(a), gemini("junk", "true"), gemini(b))
    else:
        events = data(tgi(a, "false"), tgi("</s>", "true"), tgi(b, "false"))
    assert refused(events)


def _final_cleaned(out: bytes) -> list[str]:
    """The Anthropic SDK's blocks in index order, each cleaned, and their text joined, cleaned."""
    blocks = _python_client(out) or []
    return [*map(_cleaned, blocks), _cleaned("".join(blocks))]


_FORM = st.sampled_from([*FORMS.values(), lambda t: t])


@settings(max_examples=150, deadline=None)
@given(
    cuts=st.lists(st.integers(1, len(VALUE) - 1), min_size=1, max_size=3, unique=True),
    forms=st.lists(_FORM, min_size=4, max_size=4),
    blocks=st.lists(st.integers(0, 2), min_size=4, max_size=4),
    order=st.permutations(range(8)),
)
def test_fold_differential(cuts: list[int], forms: list[Any], blocks: list[int], order: list[int]) -> None:
    """Differential: the value cut in pieces, each in some form a cleaner folds, on blocks 0-2 (a
    later piece on the same block or a later one) with ``x`` deltas between, sent in any order:
    what the stitcher lets out never gives the Anthropic client the key, in a block or in the
    final text, after a cleaner."""
    bounds = [0, *sorted(cuts), len(VALUE)]
    pieces = [VALUE[i:j] for i, j in itertools.pairwise(bounds)]
    where = sorted(blocks[: len(pieces)])  # (pieces in index order: a lower piece on a lower block)
    items = [delta(str(w), f(p)) for w, f, p in zip(where, forms, pieces, strict=False)]
    items += [delta(str(i % 3), "x") for i in range(8 - len(items))]
    start = '{"type": "content_block_start", "index": %d, "content_block": {"type": "text", "text": ""}}'
    events = data(*(start % i for i in range(3)), *(items[i] for i in order if i < len(items)))
    try:
        out = run(events)
    except ScrubRefused:
        return
    assert not any(VALUE in t for t in _final_cleaned(out))


# -- base64 pieces a client decodes one by one ------------------------------------------------------

RAW = VALUE.encode()


def audio(index: int, piece: str) -> str:
    return json.dumps({"id": "c", "choices": [{"index": index, "delta": {"audio": {"data": piece}}}]})


_URLSAFE = str.maketrans("-_", "+/")  # (Node reads both alphabets, mixed)


def _atob_joined(out: bytes, index: int = 0) -> bytes:
    """A client that decodes each piece of choice ``index``'s ``audio.data`` as Node's
    ``Buffer.from`` does (ASCII whitespace skipped, padding optional, either alphabet, a lone
    last character dropped) and appends the bytes."""
    got = b""
    for line in out.split(b"\n"):
        if line.startswith(b"data: "):
            choice = json.loads(line[6:])["choices"][0]
            if choice["index"] == index:
                p = "".join(choice["delta"]["audio"]["data"].split()).rstrip("=").translate(_URLSAFE)
                p = p[: len(p) - len(p) % 4] if len(p) % 4 == 1 else p
                got += base64.b64decode(p + "=" * (-len(p) % 4))
    return got


def _split(raw: bytes, sizes: list[int]) -> list[bytes]:
    out, i = [], 0
    while i < len(raw):
        n = sizes[len(out) % len(sizes)]
        out.append(raw[i : i + n])
        i += n
    return out


def _unpadded(b: bytes) -> str:
    return base64.b64encode(b).decode().rstrip("=")


def _padded(b: bytes) -> str:
    return base64.b64encode(b).decode()


PIECE_SHAPES = {
    "a-byte-each": [_unpadded(b) for b in _split(RAW, [1])],
    "two-bytes-each": [_unpadded(b) for b in _split(RAW, [2])],
    "four-bytes-each": [_unpadded(b) for b in _split(RAW, [4])],
    "mixed-5-7-2": [_unpadded(b) for b in _split(RAW, [5, 7, 2])],
    "urlsafe-a-byte-each": [base64.urlsafe_b64encode(b).decode().rstrip("=") for b in _split(RAW, [1])],
    "lf-after-each-short": [_unpadded(b) + "\n" for b in _split(RAW, [4])],
    "crlf-inside-each": [(lambda t: t[:2] + "\r\n" + t[2:])(_unpadded(b)) for b in _split(RAW, [5])],
    "padded-with-tab": [(lambda t: t[:3] + "\t" + t[3:])(_padded(b)) for b in _split(RAW, [4])],
    "tab-in-each-after-a-piece": [_padded(RAW[:4])]
    + [(lambda t: t[:3] + "\t" + t[3:])(_unpadded(b)) for b in _split(RAW[4:], [3])],
    "blanks-between": [t for b in _split(RAW, [2]) for t in (_unpadded(b), "", "\n", " ")],
    "one-char-between": [t for b in _split(RAW, [3]) for t in (_unpadded(b), "Q")],
}


@pytest.mark.parametrize("pieces", PIECE_SHAPES.values(), ids=PIECE_SHAPES.keys())
def test_base64_pieces_refused(pieces: list[str]) -> None:
    """The key in pieces a client decodes one by one: short and unpadded (each decoded apart, the
    joined text is misaligned), line-wrapped, padded with whitespace in them, blanks and lone
    characters (decoded to nothing by a lenient reader) between."""
    events = data(*(audio(0, p) for p in pieces))
    assert RAW in _atob_joined(b"".join(events))  # (the shape holds the key, read so)
    assert refused(events)


@pytest.mark.parametrize(("cut", "encode"), [(8, _padded), (19, _padded), (13, _unpadded), (14, _unpadded)])
def test_base64_outputs_index_order(cut: int, encode: Any) -> None:
    """Two choices' pieces, the later choice's first, each a piece (padded, or PIECE_MIN long):
    joined by index, each decoded, they hold the key. (Not covered: a first piece short and
    unpadded alone on its choice -- no piece to the stitcher; see the report.)"""
    halves = [RAW[:cut], RAW[cut:]]
    assert refused(data(*(audio(i, encode(halves[i])) for i in (1, 0))))


def test_prose_with_spaces_is_no_piece() -> None:
    """Words with spaces between are no piece (every word of prose would be one): such a stream
    opens no decoded path and flows."""
    s = EventScrubber(FINDER, lambda _: None)
    events = data(*(chunk(0, t) for t in ["Here is a short poem about the sea", " and", " the", " sky", " above"]))
    assert b"".join(s.feed(e) for e in events) + s.finish() == b"".join(events)
    stitcher = next(v for v in (getattr(s, a, None) for a in dir(s)) if type(v).__name__ == "PathStitcher")
    assert not any(p.endswith("<b64>") for p in stitcher._paths)


_ENCODINGS = st.sampled_from(["unpadded", "padded", "unpadded-lf", "padded-lf", "crlf", "padded-space", "urlsafe"])


def _encode(b: bytes, how: str, at: int) -> str:
    t = _padded(b) if how.startswith("padded") else _unpadded(b)
    if how == "urlsafe":
        t = base64.urlsafe_b64encode(b).decode().rstrip("=")
    if how.endswith("-lf"):
        t += "\n"
    elif how == "crlf":
        t = t[: at % (len(t) + 1)] + "\r\n" + t[at % (len(t) + 1) :]
    elif how == "padded-space" and t.endswith("="):  # (spaces in an unpadded piece: not read)
        t = t[: at % len(t)] + " " + t[at % len(t) :]
    return t


@settings(max_examples=200, deadline=None)
@given(
    prefix=st.binary(max_size=5),
    sizes=st.lists(st.integers(1, 11), min_size=1, max_size=6),
    hows=st.lists(st.tuples(_ENCODINGS, st.integers(0, 30)), min_size=1, max_size=6),
    other=st.booleans(),
)
def test_base64_pieces_differential(prefix: bytes, sizes: list[int], hows: list[tuple[str, int]], other: bool) -> None:
    """Differential: the key after some bytes, cut in pieces of any sizes, each encoded some way
    atob reads (padded or not, url-safe, line breaks, spaces in a padded one), another choice's
    pieces between or not: what the stitcher lets out never gives the piece-by-piece client the key.
    (Not here: spaces in an unpadded piece -- see the module's report: every word would be one.)"""
    pieces = [_encode(b, *hows[i % len(hows)]) for i, b in enumerate(_split(prefix + RAW, sizes))]
    docs = []
    for p in pieces:
        docs.append(audio(0, p))
        if other:
            docs.append(audio(1, "AAAA"))
    events = data(*docs)
    assert RAW in _atob_joined(b"".join(events))
    assert refused(events)


# -- a value across three outputs or more, in index order -------------------------------------------


@pytest.mark.parametrize("k", [3, 4, 5])
def test_value_across_outputs_any_order(k: int) -> None:
    """The value cut in ``k`` pieces, block ``i`` the ``i``-th, the deltas sent in every order:
    ``get_final_text()`` joins the blocks in index order. Neighbours checked in pairs never see it
    whole: the beginning that runs through a middle block's whole text is carried on to the next."""
    cuts = [len(VALUE) * i // k for i in range(k + 1)]
    pieces = [VALUE[cuts[i] : cuts[i + 1]] for i in range(k)]
    start = '{"type": "content_block_start", "index": %d, "content_block": {"type": "text", "text": ""}}'
    for order in itertools.permutations(range(k)):
        events = data(*(start % i for i in range(k)), *(delta(str(i), pieces[i]) for i in order))
        assert refused(events), order


def test_base64_across_three_choices_reverse_order() -> None:
    thirds = [RAW[:9], RAW[9:18], RAW[18:]]
    assert refused(data(*(audio(i, _padded(thirds[i])) for i in (2, 1, 0))))


def test_three_blocks_unrelated_text_flows() -> None:
    """Three blocks of ordinary text in any order: nothing carried, nothing held past the end."""
    start = '{"type": "content_block_start", "index": %d, "content_block": {"type": "text", "text": ""}}'
    events = data(
        *(start % i for i in range(3)), delta("2", "sk"), delta("1", "-"), delta("0", "the s"), delta("1", "x")
    )
    assert run(events) == b"".join(events)


@pytest.mark.parametrize(
    "first",
    [
        "Sure thing\nhere is the plan",
        "Here is the answer you asked for",
        "okay\nso\nthis is it\n",
        " internationalization",
    ],
)
def test_prose_lines_are_no_piece(first: str) -> None:
    """Prose with line breaks and spaces, or one long word with a space before it, opens no decoded
    path (lines of base64 have no spaces; a padded piece is no prose)."""
    s = EventScrubber(FINDER, lambda _: None)
    events = data(*(chunk(0, t) for t in [first, " and", " the", " sky"]))
    assert b"".join(s.feed(e) for e in events) + s.finish() == b"".join(events)
    stitcher = next(v for v in (getattr(s, a, None) for a in dir(s)) if type(v).__name__ == "PathStitcher")
    assert not any(p.endswith("<b64>") for p in stitcher._paths)

"""Every channel back to the agent: scrubbed or refused (SECURITY-CASES B12, B13).

A response from a host a secret is bound to may echo a real value. Each way bytes reach the agent
has a scrubber here, streaming and pure (bytes in, bytes out, :class:`ScrubRefused` when a value is
there in a form that cannot be replaced in place):

- :class:`BodyScrubber`: a response body (already decoded, see :mod:`proxy.core.decode`). It
  holds back only a tail that could still begin a value, so a match split across chunks is found
  and nothing else waits.
- :class:`EventScrubber`: token streams -- ``text/event-stream`` (SSE) and line-delimited JSON
  (``application/x-ndjson`` and kin). Only complete events (lines) go out. Each is scrubbed as
  bytes, then the text it carries (the ``data:`` payload, or each JSON string leaf by its path: the
  way a client stitches a token stream together) is checked as one stream per path across events:
  an event whose text ends with what could begin a value is held until the next event on that path
  says otherwise; a value split across events is refused. Across paths too: a text is checked
  against what other paths' texts ended with since (an SDK's snapshot grown by deltas on another
  path, see :class:`PathStitcher`). A part line (``0:"..."``: a short type code, a colon, a JSON
  value, the Vercel AI SDK's data stream) is read as a JSON line, its code an output of its own. A text that is base64 is also decoded on its own, and the
  bytes stitched as a client that decodes each piece and appends them (audio deltas).
- :class:`SegmentedScrubber`: WebSocket messages, text and binary alike, as one stream across
  fragments and consecutive messages: in-message values are replaced, a value split across two
  messages is refused. :class:`MessageScrubber`: the same, and the binary messages again as a
  stream of their own (a file's pieces with text messages between).
- :func:`scrub_field`: one header name or value, a status reason, a control frame payload.

**Side views.** A value can also arrive in an encoding that is not a fixed form: JSON escapes of
printable ASCII (``\\u0073k-...``, ``\\/``) and the escapes of other string literals (``\\x73``,
``\\u{73}``, ``\\U00000073``, ``\\N{...}``, octal, CSS's ``\\73``, JavaScript's ``%u0073``),
percent-encoding of any subset of its characters (once or twice), quoted-printable (``=73``, soft
line breaks), HTML character references (``&#115;``, ``&#x73;``, ``&lowbar;``), UTF-16 or UTF-32
(NUL bytes between its characters), UTF-7 with characters in runs, EBCDIC, the shift sequences
of ISO-2022 and HZ, base64 wrapped at fixed line lengths (MIME; indented lines too), any mix of
upper and lower case, and up to two of these stacked (percent-encoding under JSON escapes).
:func:`views` gives the decoded copies of some bytes; a value found only in one of them cannot be
replaced in place, so the stream is refused. Once a stream has shown an escape it holds back
enough bytes (:func:`_view_window`) that no escaped value can be half sent before it is seen
whole; an escape longer than that allows (padded with zeros) is refused. Case changes nothing's
length: there the hold-back is that of the lowercased bytes.

What no byte scrubber can follow is out of reach: a value split between two fields of one document
and put together by the agent, a value the upstream encrypts, reverses or compresses without
saying so. Scrubbing is defence in depth on top of the binding rule (a real value is only ever
sent to the hosts it is bound to, in its slot).
"""

from __future__ import annotations

import binascii
import bisect
import functools
import html.entities
import itertools
import json
import re
import unicodedata
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any

from proxy.core.anyof import any_byte_of, any_of
from proxy.core.finder import Finder, Hit
from proxy.core.fold import (
    CONTESTED_TEXT,
    LETTERLIKE,
    STRIPPED_ASCII,
    TRANSLITERATED,
    contested_readings,
    fold_compatible,
    fold_views,
    holds_contested,
    transliterate_text,
)
from proxy.core.mojibake import LAYERS, escaped_garbled, repaired, unescape_garbled, without_controls
from proxy.core.tries import trie
from proxy.core.values import HZ_SHIFT_BYTES, PART_HOLD

__all__ = [
    "FIELD_SEPARATOR",
    "BodyScrubber",
    "EventScrubber",
    "MessageScrubber",
    "PathStitcher",
    "ScrubRefused",
    "SegmentedScrubber",
    "SniffingScrubber",
    "behind_past_bound",
    "declared_charset_views",
    "fields_clean",
    "first_hit",
    "held_bound",
    "json_message",
    "json_still_undecided",
    "json_undecided",
    "message_texts",
    "payload_texts",
    "scrub_field",
    "scrub_whole",
    "readings",
    "skeleton",
    "skeleton_views",
    "views",
]

OnHit = Callable[[str], None]
MAX_EVENT = 1 << 20  # an event (or line) must fit here to be checked whole; a larger one is refused
MAX_PATHS = 64  # string paths of a token stream followed at once (see PathStitcher._forget_one)
MAX_RESTS = 4096  # rests of values begun on forgotten paths a token stream remembers (the same)
ORDER_OUTPUTS = 1024  # positional outputs a token stream follows, all groups (see PathStitcher._place)
MIN_HOLD = 3  # at a segment's end, a held tail shorter than this goes out (see SegmentedScrubber)
# What a stream may hold back toward the agent. Bytes that could begin a real value are held until
# what follows shows whether they do: a read's worth of them may be held whole (its end is a value's
# beginning in some view), but bytes still held from earlier reads, messages or events are bounded
# by HELD_MIN or four view windows (:func:`held_bound`); a legitimate encoding of a value fits in
# one window. Whole messages or events held behind one that holds are bounded by BEHIND_MAX bytes
# and, for WebSocket messages, BEHIND_MESSAGES_MAX of them. Past either, the stream is refused: an
# upstream that sends a value's first characters and then filler (or other messages) for ever would
# otherwise be buffered without limit, and its hold searched again on every read.
HELD_MIN = 1 << 14
# Held bytes from which small reads wait unchecked until they add enough to check (see _set_aside).
ASIDE_FROM = 64
BEHIND_MAX = 1 << 22
BEHIND_MESSAGES_MAX = 1024
_SPREAD = "a real value spread with filler"
_HELD_PAST = "a stream that held back more than the scrubber's bound of bytes that could begin a real value"
# Backslash escapes a value could hide behind: JSON's printable ASCII (``\u0073``) and ``\/``, the
# same characters as other string literals write them (``\x73`` in JavaScript, C and Python,
# ``\u{73}`` in JavaScript and Rust, ``\U00000073`` and ``\N{LATIN SMALL LETTER S}`` in Python,
# octal ``\163`` or ``\60`` in C, Python and shells); a NUL (UTF-16 text in a JSON string:
# removed); and a line break inside a base64 run (a PEM or MIME blob in a JSON string: removed, with
# the indentation after it, as the wrapped-base64 view removes a raw one). A plain ``\n`` between
# words is not one: the base64 run before it is asked for first. JSON's escape of a character that
# is not ASCII (``json.dumps`` writes every one so) is read as a cleaning client reads the
# character: a fullwidth letter or digit (``\uff53``) as its ASCII one, any other dropped (a
# zero-width space ``\u200b`` between a value's characters hides nothing). Dropped by a constant
# substitution, in C: a Python call for each (a Chinese text escaped: one every 6 bytes) cost 8x.
_WIDE_ESCAPE = re.compile(rb"\\u(?!00[0-7])[0-9a-fA-F]{4}")
# (fullwidth letters, digits and ``+ - . / = _``, what keys and base64 are made of; not CJK text's
# fullwidth commas, colons and brackets, which would cost a call each)
_FULLWIDTH_ESCAPE = re.compile(rb"\\u[fF][fF](0[bBdDeEfF]|1[0-9dD]|2[1-9a-fA-F]|3[0-9aAfF]|4[1-9a-fA-F]|5[0-9aA])")
# Mathematical letters and digits (U+1D400-1D7FF), which JSON writes as a surrogate pair whose high
# half is always D835 (``\\ud835\\udc2c``, bold ``s``): read as the ASCII they fold to (NFKC), as
# fullwidth ones are; the block's other characters (arrows, a hole's code point) dropped (red team
# 44: both halves were dropped, and a value written so went out).
_MATH_ESCAPE = re.compile(rb"\\u[dD]835\\u([dD][c-fC-F][0-9a-fA-F]{2})")
_MATH_ASCII = {
    low: (folded.encode() if len(folded) == 1 and folded.isascii() and folded.isalnum() else b"")
    for low in range(0xDC00, 0xE000)
    for folded in (unicodedata.normalize("NFKC", chr(0x1D400 + low - 0xDC00)),)
}
# The letterlike symbols that fold to a letter (proxy.core.fold.LETTERLIKE: the mathematical
# alphabets' holes, italic ``\\u210e`` among them), escaped.
_LETTERLIKE_ESCAPE = re.compile(rb"\\u21([0-4][0-9a-fA-F])")  # (a literal prefix: re's fast scan)
_LETTERLIKE_ASCII = {cp & 0xFF: letter.encode() for cp, letter in LETTERLIKE.items()}
_LETTER_ESCAPES = (_FULLWIDTH_ESCAPE, _MATH_ESCAPE, _LETTERLIKE_ESCAPE)
# Any of the three, in one pass: each searched alone tried its expression at every ``\\u`` of the
# text (64 KiB of escaped Chinese: ~30,000), three times over, in each of the three places below.
_ANY_LETTER_ESCAPE = re.compile(b"|".join(x.pattern for x in _LETTER_ESCAPES))


# JSON escapes of the characters a client that strips accents reads as ASCII (proxy.core.fold's
# STRIPPED_ASCII: ``\u015b`` is ``s``), by the first three of their four hex digits (a literal prefix,
# ``\u``: re's fast scan); read so in a view of their own (:func:`_unescape_stripped`).
def _bmp_escapes(codes: Iterable[int]) -> re.Pattern[bytes]:
    """JSON's escapes of the characters of ``codes`` up to U+FFFF, by the first three of their four
    hex digits (group 1: all four)."""
    heads = {b"%03x" % (cp >> 4) for cp in codes if cp <= 0xFFFF}
    return re.compile(rb"\\u((?i:" + trie(heads) + rb")[0-9a-fA-F])")  # (a trie: proxy.core.tries)


_STRIPPED_ESCAPE = _bmp_escapes(STRIPPED_ASCII)


# Those beyond U+FFFF (squared capitals ``U+1F130``, segmented digits ``U+1FBF0``), as JSON writes
# them: a surrogate pair, by its high half (one of three).
def _pair_escapes(codes: Iterable[int]) -> re.Pattern[bytes]:
    """JSON's escapes of the characters of ``codes`` beyond U+FFFF, by their high halves."""
    highs = sorted({b"%04x" % (0xD800 + ((cp - 0x10000) >> 10)) for cp in codes if cp > 0xFFFF})
    return re.compile(rb"\\u((?i:" + b"|".join(highs) + rb"))\\u([dD][c-fC-F][0-9a-fA-F]{2})")


def _paired(table: dict[int, bytes]) -> Callable[[re.Match[bytes]], bytes]:
    """A pair's character as ``table`` reads it (the escapes as they were where it has none)."""

    def pair(m: re.Match[bytes]) -> bytes:
        return table.get(0x10000 + ((int(m.group(1), 16) - 0xD800) << 10) + int(m.group(2), 16) - 0xDC00, m.group(0))

    return pair


_STRIPPED_PAIR = _pair_escapes(STRIPPED_ASCII)


# The last bytes asked whether they hold an escape of a character that is not ASCII, and the
# answer: the three decodings below that read some ask it of the same bytes, and a search of 64 KiB
# of JSON for each of their escapes cost ~60 us where there are none. (The bytes themselves are
# kept, not their id: one that a freed body's bytes left to new ones would answer for them.)
_WIDE_ASKED: list[tuple[bytes, bool]] = [(b"", False)]


def _wide_escaped(data: bytes) -> bool:
    asked, answer = _WIDE_ASKED[0]
    if asked is data:
        return answer
    answer = data.find(b"\\") >= 0 and data.find(b"\\u") >= 0 and _WIDE_ESCAPE.search(data) is not None
    _WIDE_ASKED[0] = (data, answer)
    return answer


def _stripped_escapes(data: bytes) -> bool:
    return _wide_escaped(data) and (
        _STRIPPED_ESCAPE.search(data) is not None or _STRIPPED_PAIR.search(data) is not None
    )


def _unescape_stripped(data: bytes) -> bytes:
    """The JSON (and other backslash) escapes unescaped as a client that then strips accents reads
    them: an escaped accented letter (``\\u015b``), circled or superscript one, or a pair for one
    beyond U+FFFF, as its ASCII letter (the unescaped view drops them, as a cleaning client drops
    the characters; red team 47)."""

    def one(m: re.Match[bytes]) -> bytes:
        return STRIPPED_ASCII.get(int(m.group(1), 16), m.group(0))

    if _STRIPPED_PAIR.search(data) is not None:
        data = _STRIPPED_PAIR.sub(_paired(STRIPPED_ASCII), data)
    return _unescape(_STRIPPED_ESCAPE.sub(one, data))


# JSON escapes of the Latin letters a transliterating client reads (proxy.core.fold's
# TRANSLITERATED: ``\u0127`` is ``h``), in a view of their own that strips accents too.
_TRANSLITERATED_CODES = {ord(utf8.decode()): ascii_ for utf8, ascii_ in TRANSLITERATED.items()}
_TRANSLITERATED_ESCAPE = _bmp_escapes(_TRANSLITERATED_CODES)
_TRANSLITERATED_PAIR = _pair_escapes(_TRANSLITERATED_CODES)


def _transliterated_escapes(data: bytes) -> bool:
    return _wide_escaped(data) and (
        _TRANSLITERATED_ESCAPE.search(data) is not None or _TRANSLITERATED_PAIR.search(data) is not None
    )


def _unescape_transliterated(data: bytes) -> bytes:
    """The escapes unescaped as a transliterating client reads them (see _unescape_stripped)."""
    if _TRANSLITERATED_PAIR.search(data) is not None:
        data = _TRANSLITERATED_PAIR.sub(_paired(_TRANSLITERATED_CODES), data)
    data = _TRANSLITERATED_ESCAPE.sub(lambda m: _TRANSLITERATED_CODES.get(int(m.group(1), 16), m.group(0)), data)
    return _unescape_stripped(data)


def _escaped_letters(data: bytes) -> bool:
    """Whether ``data`` holds a JSON escape that _read_escaped_letters reads as a letter."""
    return _wide_escaped(data) and _ANY_LETTER_ESCAPE.search(data) is not None


def _unescape_dropped(data: bytes) -> bytes:
    """The escapes unescaped as a client that then drops what is not ASCII, without folding it,
    reads them: an escaped fullwidth, mathematical or letterlike letter is dropped (the unescaped
    view reads it as its letter: a value such letters are filler between went out)."""
    return _BACKSLASH_UNESCAPES.sub(_backslash_escape, _WIDE_ESCAPE.sub(b"", data))


def _read_escaped_letters(data: bytes) -> bytes:
    """JSON escapes of fullwidth and mathematical letters and digits as the ASCII they fold to."""
    if _ANY_LETTER_ESCAPE.search(data) is None:
        return data
    if _FULLWIDTH_ESCAPE.search(data) is not None:
        data = _FULLWIDTH_ESCAPE.sub(lambda m: bytes([int(m.group(1), 16) + 0x20]), data)
    if _MATH_ESCAPE.search(data) is not None:
        data = _MATH_ESCAPE.sub(lambda m: _MATH_ASCII[int(m.group(1), 16)], data)
    if _LETTERLIKE_ESCAPE.search(data) is not None:
        data = _LETTERLIKE_ESCAPE.sub(lambda m: _LETTERLIKE_ASCII.get(int(m.group(1), 16), m.group(0)), data)
    return data


_ESCAPES = (
    rb"\\(?:u00([2-7][0-9a-fA-F])|x([2-9a-fA-F][0-9a-fA-F])|u\{0*([0-9a-fA-F]{1,6})\}|U(000[0-9a-fA-F]{5}|0010[0-9a-fA-F]{4})"
    rb"|([0-7]{1,3})|N\{([A-Za-z0-9 -]{1,40})\}|(/)|u0000"
    rb"|(?<=[A-Za-z0-9+/=_-]{16}\\)(?:r\\n|n|r|u000[aAdD])(?:[ \t]|\\t)*(?=[A-Za-z0-9+/_-])"
    # ESC, SO and SI (JSON's and JavaScript's ``\u001b``, ``\x1b``): the control bytes, which the
    # shift view of this view then drops with their sequences (a log's colours, in JSON: red team
    # 20); octal ``\033`` is read by the octal escape. (Not bash's ``\e``: JavaScript reads it as
    # ``e``, which a value written with identity escapes needs.)
    rb"|(?:u00|x)(1[bB]|0[eEfF]))"
)
_BACKSLASH_ESCAPES = re.compile(_ESCAPES)
# Once the view is made, JSON's ``\"`` and ``\\`` are read too (a value with a quote in it, under
# a JWT or beside an escape: red team 9), though neither alone opens it (the quoted-pair view reads
# them: every JSON text with a quote in a string would pay for a second view).
_BACKSLASH_UNESCAPES = re.compile(_ESCAPES.replace(rb"|(/)|", rb'|([/"\\])|'))
# CSS escapes (``\72 ``, ``\000072``: one to six hex digits, a blank after them eaten): a view of
# their own, as ``\72`` is also octal elsewhere.
_CSS_ESCAPES = re.compile(rb"\\0{0,4}([2-7][0-9a-fA-F])(?![0-9a-fA-F])(?:\r\n|[ \t\r\n\f])?")
# An escape of one character is at most this long (``\N{LATIN CAPITAL LETTER A}``); a numeric one
# padded with more zeros than any client needs (``&#x0000000072;``, ``\u{00000000072}``), or an
# HTML reference with more digits than any character has (``&#99999999;``, which reads as U+FFFD),
# is refused (:data:`_OVERLONG`): escapes of unbounded length could outrun any window a stream keeps.
ESCAPE_MAX = 32
_OVERLONG = (re.compile(rb"&#(?:[xX][0-9a-fA-F]{8}|[0-9]{8})"), re.compile(rb"\\u\{0{8}"))  # (literal starts: fast)
_PERCENT = re.compile(rb"%(?:u([0-9a-fA-F]{4})|([0-9a-fA-F]{2}))")  # (``%u0072``, ``%u200B``: JavaScript's escape())
# Quoted-printable (MIME): any byte as ``=HH``; a soft line break (``=`` at a line's end) is nothing.
# (A soft break with blanks before its line end, which RFC 2045 says a decoder deletes, or a lone
# CR: email.quoprimime and npm's quoted-printable read both: red team 20.)
_QUOTED_PRINTABLE = re.compile(rb"=(?:([0-9a-fA-F]{2})|[ \t]*(?:\r\n|\r|\n))")
# HTML character references, read as HTML5 and ``html.unescape`` read them (red team 44): a numeric
# one of any number of digits; a named one, and where no name is the whole of it, the longest of the
# names a ``;`` may be left off (``&shy``, ``&amp``: 6 letters at most) that begins it, the rest kept
# (``&shyt`` is a soft hyphen and ``t``).
_HTML_REF = re.compile(rb"&(?:#[xX]([0-9a-fA-F]+);?|#([0-9]+);?|([A-Za-z][A-Za-z0-9]{1,31};?))")
# Named references (HTML5): to printable ASCII, and to any other character as its UTF-8 (which the
# cleaning client's view reads: ``&ZeroWidthSpace;``, ``&shy;`` between a value's characters).
_HTML_NAMED = {name.encode(): char.encode("utf-8") for name, char in html.entities.html5.items()}
_HTML_LEGACY_MAX = max(len(name) for name in _HTML_NAMED if not name.endswith(b";"))
_HTML_LEGACY_STARTS = frozenset(name[:2] for name in _HTML_NAMED if not name.endswith(b";"))
# A UTF-7 run (a declared ``charset=utf-7``): ``+``, modified base64 of UTF-16BE, an optional ``-``.
# A value written in one run is a form (:func:`proxy.core.values.forms`); this view is for a value
# whose characters are split between direct ones and runs, each ended by ``-`` (as it must be
# before a letter or digit). Asked for only where such a run is: a base64 body has ``+``
# everywhere (and no ``-``), and decoding it as UTF-7 would cost ~20x its search.
_UTF7_RUN = re.compile(rb"\+[A-Za-z0-9+/]*-?")
_UTF7_ENDED_RUN = re.compile(rb"\+[A-Za-z0-9+/]{3,}+-")
# A decoder also ends a run at any other byte outside base64, or at the end (``...4+AGE`` is
# ``...4a``): in inputs up to UTF7_IMPLICIT_MAX bytes (heads, token texts, small bodies), such a run
# opens the view too; past it, only an ended run does (the cost above). (Red team 8.) A body whose
# Content-Type declares UTF-7 is also read whole as UTF-7 where the check knows it (a request body
# held whole: :func:`declared_charset_views`): the declaration is the cheap gate a view lacks.
_UTF7_IMPLICIT_RUN = re.compile(rb"\+[A-Za-z0-9+/]{3,}+(?![A-Za-z0-9+/-])")
UTF7_IMPLICIT_MAX = 8192
# The shift sequences of stateful charsets, which their decoders drop: ISO-2022 escapes
# (``ESC ( B``, ``ESC $ B``), HZ's ``~{``, ``~}`` and ``~`` at a line's end; and a terminal's control
# sequences, which it acts on and never shows, and which agents' harnesses strip from command output
# (strip-ansi): CSI (``ESC [ 1;32 m``, ``ESC [ K``) and OSC (a title, a hyperlink: ``ESC ] ... BEL``).
# And ISO-2022-KR's (and -CN's) SO and SI (``\x0e``, ``\x0f``: shift to the double-byte set and
# back), which Python's decoders drop with or without the designator before them: a key with an
# empty SO SI pair every few characters reads whole to ``str(body, "iso2022_kr")`` (requests'
# ``.text`` under ``charset=iso-2022-kr``; red team 15). Every SO and SI is dropped (one between
# them and a letter reads a double-byte character there, not the letter: the view finds more).
_ESC_SHIFT = rb"\x1b(?:\[[0-?]*[ -/]*[@-~]|\][^\x07\x1b]{0,512}(?:\x07|\x1b\\)|\$?[()*+]?[@-Z])"
_HZ_SHIFT = HZ_SHIFT_BYTES
_SHIFTS = re.compile(_ESC_SHIFT + b"|" + _HZ_SHIFT)
# Each alternative alone begins with a literal, which re finds by its fast scan (~1 ns a byte,
# where it tries _SHIFTS at every byte: ~9): see _unshift.
_SHIFTS_APART = (re.compile(_ESC_SHIFT), re.compile(_HZ_SHIFT))
# A line break inside base64 wrapped at a line length (16 or more), and the indentation after it
# (a YAML block scalar, a folded header): LF, CRLF or a lone CR. The break is what each pattern
# starts with, so the search jumps from one line break to the next (instead of trying 16 characters
# at every byte: 15-30x slower on text), and what is cheapest to refute is asked first: the byte
# before the break, the whole line, then what follows (~10-20 ns per line break).
_B64 = rb"[A-Za-z0-9+/=_-]"
_WRAPPED_LF = re.compile(rb"\n(?<=" + _B64 + rb"\n)(?<=" + _B64 + rb"{16}\n)[ \t]*(?=[A-Za-z0-9+/_-])")
_WRAPPED_CR = re.compile(rb"\r(?<=" + _B64 + rb"\r)(?<=" + _B64 + rb"{16}\r)\n?[ \t]*(?=[A-Za-z0-9+/_-])")


# RFC 9110's quoted-pair (``\`` before any byte: a quoted-string, a cookie value as http.cookies and
# Django read it) and JavaScript's identity escapes (``"\k" === "k"``): every backslash dropped, the
# byte after it kept. Stacked over the backslash escapes above, it reads a literal that mixes both
# (``\u0052\E``). Made wherever a backslash is (any character can be escaped so: no narrower gate
# holds), by one bytes.replace (~12 us per 64 KiB of JSON full of ``\n``; reading ``\\`` as one
# backslash would take a two-byte search, ~40-60 us more): a value that holds a backslash is also
# searched for without it (:func:`proxy.core.values.forms`). (Red team 9.)
def _unquote_pairs(data: bytes) -> bytes:
    return data.replace(b"\\", b"")


# Base64 in a MIME part declared ``Content-Transfer-Encoding: base64``: its readers skip every byte
# outside the alphabet (the email parser's ``binascii.a2b_base64``; Django's MultiPartParser splits
# on whitespace and joins), so base64 broken into lines of any length, or by spaces, reads whole.
# The view deletes every such byte (but FIELD_SEPARATOR): a value's base64 forms are then found at
# whatever alignment the breaks left. Made only where a part declares it, found from its ``64``
# (memchr for the ``4``, a few tries, then one literal search): an undeclared text broken so is a
# JSON field a server might ``b64decode``, a gap (see README). In a stream, the declaration must be
# within the bytes a scrubber keeps (:func:`_view_window`): a part longer than that is read as it
# comes, not as base64 (a stated limit). (Red team 9.)
_B64_ALPHABET = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/-_"
_NOT_B64 = bytes(b for b in range(256) if b not in _B64_ALPHABET and b != 1)  # (0x01: FIELD_SEPARATOR)
_BASE64_WORD = re.compile(rb"64(?<=[Bb][Aa][Ss][Ee]64)")
# The declaration, with any blanks around its colon (the email parser strips them all), line
# breaks among them too (a folded field): 29 blanks and more before ``base64`` were not read (red
# team 44). (Read back from the ``base64``: :func:`_declares_base64`.)
_BASE64_AFTER_COLON = re.compile(rb":(?<=[Gg]:)[ \t\r\n]*\"?[Bb][Aa][Ss][Ee]64")
_MIME_BLANKS = b" \t\r\n"
_FIELD_NAME = b"content-transfer-encoding"
_TRIES = 4  # candidates of each anchor a gate checks by memchr before one regex search
_TRY_FROM = 8192  # (in fewer bytes the search alone costs less)


def _tried(data: bytes, anchors: tuple[tuple[bytes, Callable[[int], bool]], ...], rest: Callable[[int], bool]) -> bool:
    """Whether what ``anchors`` look for is in ``data``: each is a byte that what is looked for
    holds (one most text holds few of) and the check at an occurrence of it. The first _TRIES
    occurrences are checked one by one by memchr, each anchor in turn: when one byte has no more,
    nothing held. Past them, ``rest``: a search (from the first anchor's next occurrence) that
    begins with a literal (re's own scan, ~0.3 ns a byte; one that begins with a class costs ~10x).
    (A try costs ~0.5 us: more of them, or any in fewer than _TRY_FROM bytes, would cost more than
    the search they might save.)"""
    at = [data.find(byte) for byte, _ in anchors]
    if len(data) < _TRY_FROM:
        return min(at) >= 0 and rest(at[0])
    for _ in range(_TRIES):
        for n, (byte, check) in enumerate(anchors):
            i = at[n]
            if i < 0:
                return False
            if check(i):
                return True
            at[n] = data.find(byte, i + 1)
    return min(at) >= 0 and rest(at[0])


def _mime_base64(data: bytes) -> bool:
    """Whether a MIME part header declares base64 (``Content-Transfer-Encoding: base64``)."""
    if data.find(b"\n") < 0:
        return False  # (a header ends in a line break)
    if len(data) < _TRY_FROM and data.find(b"64") < 0:
        return False  # (in few bytes, one find: _tried's set-up costs more than its answer here)
    return _tried(
        data,
        ((b"4", lambda i: _declares_base64(data, i - 5)),
         (b":", lambda i: _BASE64_AFTER_COLON.match(data, i) is not None)),
        lambda i: any(_declares_base64(data, m.start() - 4) for m in _BASE64_WORD.finditer(data, max(0, i - 1))),
    )  # fmt: skip


def _declares_base64(data: bytes, at: int) -> bool:
    """Whether ``data`` holds ``base64`` (any case) at ``at`` as a declaration's value: the field's
    name, blanks, a colon, blanks, perhaps a quote, before it."""
    if at < len(_FIELD_NAME) + 1 or data[at : at + 6].lower() != b"base64":
        return False
    end = _blanks_before(data, at - 1 if data[at - 1] == 0x22 else at)
    if end < 1 or data[end - 1] != 0x3A:  # ``:``
        return False
    end = _blanks_before(data, end - 1)
    return end >= len(_FIELD_NAME) and data[end - len(_FIELD_NAME) : end].lower() == _FIELD_NAME


def _blanks_before(data: bytes, end: int) -> int:
    """Where the run of blanks (line breaks among them) that ends at ``end`` begins."""
    size = 64
    while True:
        lo = max(0, end - size)
        kept = len(data[lo:end].rstrip(_MIME_BLANKS))
        if kept or lo == 0:
            return lo + kept
        size *= 8


def _b64_only(data: bytes) -> bytes:
    return data.translate(None, _NOT_B64)


# ``=`` inside base64 (``c2st=SWsy=endF``): Python's b64decode, not validating (its default), skips
# every ``=`` that does not complete a quad, so a value's base64 with them between its quartets or
# inside one decodes whole (red team 47). Read with every run of ``=`` between two characters of
# the alphabet dropped. (A literal first byte: re's fast scan.)
_INNER_PADDING = re.compile(rb"=(?<=[A-Za-z0-9+/_-]=)=*(?=[A-Za-z0-9+/_-])")


def _inner_padding(data: bytes) -> bool:
    return data.find(b"=") >= 0 and _INNER_PADDING.search(data) is not None


def _drop_inner_padding(data: bytes) -> bytes:
    return _INNER_PADDING.sub(b"", data)


# RFC 2047 encoded-words (``=?utf-8?b?c2st?=``, ``=?utf-8?q?=73k?=``), in a header or a MIME part's:
# each decoded, and the blanks between two of them dropped (a reader joins adjacent words: a value
# split over two reads whole, as ``email.header`` reads it). An encoded-word cut by the end of the
# bytes is decoded as far as it goes (cut anywhere: in its text, or between its closing ``?`` and
# ``=``), and the start of one (``=``, ``=?utf-8?``) dropped there: a stream that stops between two
# words holds the first (its view ends with a value's start). A view of some bytes must read at
# least what a view of any beginning of them reads: a stream releases what it has checked.
_END = rb"(?:\Z|(?=\x01))"  # the end of the bytes, or of a field (first_hit: as it is alone)
_ENCODED_WORD = re.compile(
    rb"=\?[^?\s\x01]{1,40}\?([bBqQ])\?([^?\s\x01]*)(?:\?=|\??" + _END + rb")(?:[ \t\r\n]+(?==\?|=?" + _END + rb"))?"
    rb"|[ \t\r\n]*=(?:\?[^?\s\x01]{0,40}(?:\?[bBqQ]?)?)?" + _END
)
_WORD_OPEN = re.compile(rb"=\?")
_WORD_ANCHOR = re.compile(rb"=[?\x01]")
_Q_HEX = re.compile(rb"=([0-9a-fA-F]{2})")


def _encoded_words(data: bytes) -> bool:
    if len(data) < _TRY_FROM:
        return data.find(b"=?") >= 0  # (what _tried answers in so few bytes, without its set-up)
    return _tried(
        data,
        # (i >= 1: compiled, a slice whose end is before its start raises where Python gives b"")
        ((b"=", lambda i: data[i + 1 : i + 2] == b"?"), (b"?", lambda i: i >= 1 and data[i - 1 : i] == b"=")),
        lambda i: _WORD_OPEN.search(data, i) is not None,
    )


def _encoded_word(m: re.Match[bytes]) -> bytes:
    kind, text = m.group(1), m.group(2)
    if kind is None:
        return b""  # (an encoded-word's start, cut by the end)
    if kind in b"qQ":
        return _Q_HEX.sub(lambda h: bytes([int(h.group(1), 16)]), text.replace(b"_", b" "))
    text = text.rstrip(b"=")
    text = text[: len(text) - 1] if len(text) % 4 == 1 else text
    try:
        return binascii.a2b_base64(text + b"=" * (-len(text) % 4))
    except binascii.Error:
        return m.group(0)


def _decode_words(data: bytes) -> bytes:
    """_ENCODED_WORD.sub, asked only where a match can be: its expression may begin at any blank, so
    re tries it at every byte (~35 ns a byte: 2.4 ms for 64 KiB of binary, which holds a ``=?``
    somewhere). Every match holds a ``=`` followed by ``?``, FIELD_SEPARATOR or the end, and begins
    there or at the first of the blanks (``[ \t\r\n]``) right before it: those are tried in order,
    the earliest match taken and the search going on after it, as sub does."""
    n = len(data)
    starts = [m.start() for m in _WORD_ANCHOR.finditer(data)]
    if data.endswith(b"="):
        starts.append(n - 1)
    if not starts:
        return data
    if len(starts) * 64 > n:
        return _ENCODED_WORD.sub(_encoded_word, data)  # (many: re's own scan costs less)
    out: list[bytes] = []
    pos = 0
    for at in starts:
        if at < pos:
            continue
        blank = at
        while blank > pos and data[blank - 1] in b" \t\r\n":
            blank -= 1
        m = (_ENCODED_WORD.match(data, blank) if blank < at else None) or _ENCODED_WORD.match(data, at)
        if m is not None:
            out += (data[pos : m.start()], _encoded_word(m))
            pos = m.end()
    if not out:
        return data
    out.append(data[pos:])
    return b"".join(out)


_FIELD_MAX = 8192  # (a longer input with no line break and no FIELD_SEPARATOR holds no header)
# RFC 2231 parameter continuations (``filename*0="sk-"; filename*1="REAL"``, ``name*1*=%52...``):
# what lies between two pieces dropped, so the pieces read as the one value a reader joins (the
# email parser's ``get_filename``, aiohttp's). In the order written: pieces numbered out of order
# are joined in order by ``email`` (a gap). The joint cut by the end of the bytes is dropped too,
# as is a closing quote there (a stream stopped after a piece holds it). Looked for in header fields
# (a head's, joined by FIELD_SEPARATOR, or one) and in text with lines (a multipart body's part
# headers): not in a long one-line text (a JSON body: no reader takes parameters from it).
_TOKEN = rb"[!#$&+.^_`|~0-9A-Za-z-]"
_CONTINUATION = re.compile(
    rb"\"?[ \t]*;[ \t\r\n]*" + _TOKEN + rb"{1,40}\*[1-9][0-9]{0,2}\*?=[ \t]*\"?"
    rb"|\"?[ \t]*(?:;[ \t\r\n]*(?:" + _TOKEN + rb"{1,40}(?:\*(?:[0-9]{1,3}(?:\*?(?:=[ \t]*)?)?)?)?)?)?" + _END
)
_CONTINUED = re.compile(rb"\*(?<=" + _TOKEN + rb"\*)[0-9]{1,3}\*?=")
_STAR_DIGIT = re.compile(rb"\*[0-9]")
_CONTINUED_AFTER = re.compile(rb";[ \t\r\n]*" + _TOKEN + rb"{1,40}\*[0-9]{1,3}\*?=")


def _continuations(data: bytes) -> bool:
    if data.find(b"\n") < 0 and data.find(b"\x01") < 0 and len(data) > _FIELD_MAX:
        return False  # (no header here: not a head's fields, not one field, no line)
    if data.find(b"*") < 0:
        return False  # (every continuation is numbered after a ``*``)
    return _tried(
        data,
        ((b"*", lambda i: _CONTINUED.match(data, i) is not None),
         (b";", lambda i: _CONTINUED_AFTER.match(data, i) is not None)),
        lambda i: any(_CONTINUED.match(data, m.start()) for m in _STAR_DIGIT.finditer(data, i)),
    )  # fmt: skip


def _join_continuations(data: bytes) -> bytes:
    return _CONTINUATION.sub(b"", data)


# JSON under base64url in a JWT (or any JWS): its header and payload (``eyJ...``: ``{"`` encoded, as
# every JWT library writes it). A value escaped inside it (``"rt\u0052EAL..."``) is in none of the
# base64 forms (they are of the value itself): each such run is decoded in this view, whose JSON
# the backslash views then read (VIEW_DEPTH). A run of base64 that begins inside another (a blob
# where ``eyJ`` happens to occur) is not one. Made where a token is, a dot then ``eyJ`` (its
# payload): found from the dot and the ``J`` by memchr (a base64 text holds no dot: from its ``J``
# alone, the gate cost ~28 us per 64 KiB of base64). Not read so: JSON under base64 outside such a token,
# or that begins otherwise (``{ "``, ``{\n``: ``eyA``, ``ewo``): gaps, see README.
_JWT_RUN = re.compile(rb"eyJ[A-Za-z0-9+/_-]*")
_JWT_PAYLOAD = re.compile(rb"\.eyJ")
_URLSAFE = bytes.maketrans(b"-_", b"+/")


def _jwt_start(data: bytes, i: int) -> bool:
    """Whether a base64 run that begins with ``eyJ`` begins at ``i`` (not inside another run)."""
    return data[i : i + 3] == b"eyJ" and (i == 0 or data[i - 1 : i] not in _B64_ALPHABET)


def _json_in_base64(data: bytes) -> bool:
    if len(data) < _TRY_FROM:
        return data.find(b".eyJ") >= 0  # (what _tried answers in so few bytes, without its set-up)
    return _tried(
        data,
        # (i >= 3: see _encoded_words)
        ((b".", lambda i: data[i + 1 : i + 4] == b"eyJ"), (b"J", lambda i: i >= 3 and data[i - 3 : i + 1] == b".eyJ")),
        lambda i: _JWT_PAYLOAD.search(data, i) is not None,
    )


def _jwt_run(m: re.Match[bytes]) -> bytes:
    if not _jwt_start(m.string, m.start()):
        return m.group(0)
    run = m.group(0).translate(_URLSAFE)
    run = run[: len(run) - 1] if len(run) % 4 == 1 else run
    try:
        return binascii.a2b_base64(run + b"=" * (-len(run) % 4))
    except binascii.Error:
        return m.group(0)


def _decode_json_in_base64(data: bytes) -> bytes:
    return _JWT_RUN.sub(_jwt_run, data)


_PARTIAL_ESCAPE = re.compile(
    rb"(?:\\(?:u(?:0(?:0(?:[2-7]|0[0aAdDeEfF]?|1[bB]?)?)?|\{[0-9a-fA-F]{0,6})?|x[2-9a-fA-F]?|U[0-9a-fA-F]{0,7}|[0-7]{1,3}"
    rb"|N(?:\{[A-Za-z0-9 -]{0,40})?|r\\?)?"
    rb"|%(?:u[0-9a-fA-F]{0,3}|[0-9a-fA-F])?|=[0-9a-fA-F\r]?|&#?[xX]?[0-9a-zA-Z]{0,32}"
    rb"|\x1b(?:\[[0-?]{0,40}[ -/]{0,4})?)\Z"
)  # cut by the chunk
_PARTIAL_MAX = 64  # the tail asked whether it ends inside an escape (longer than any escape)


_RUN = "a run of a real value's characters (part of one: a truncated or split value)"


class ScrubRefused(Exception):
    """A real value is in the stream in a form that cannot be replaced in place (split across
    events or messages, escaped): the stream must end here. ``secret`` names it."""

    def __init__(self, secret: str, detail: str) -> None:
        super().__init__(detail)
        self.secret = secret
        self.detail = detail


def _unescape(data: bytes) -> bytes:
    if data.find(b"\\u") >= 0 and _WIDE_ESCAPE.search(data) is not None:
        data = _WIDE_ESCAPE.sub(b"", _read_escaped_letters(data))
    return _BACKSLASH_UNESCAPES.sub(_backslash_escape, data)


def _backslash_escape(m: re.Match[bytes]) -> bytes:
    u00, x, braces, long, octal, name, slash, control = m.groups()
    code = u00 or x or control
    if code is not None:
        return bytes([int(code, 16)])
    if braces is not None or long is not None:
        # (Any character, as UTF-8: a control or one that is not ASCII is filler that the views
        # read without, as a client that decodes then cleans does; red team 47.)
        return _utf8(int(braces or long, 16))
    if octal is not None:
        # (Controls too: kept as escapes, ``\\0`` then a decoded ``\\x32`` read as ``\\02``, one
        # octal escape, and the value's digit went with it: red team 47. And bytes above 0x7F, as
        # ``\\x`` reads them: git's quoted file names and a logged ``bytes`` write UTF-8 so, which
        # the fold views of this view read; red team 48.)
        n = int(octal, 8)
        return bytes([n]) if n < 0x100 else m.group(0)
    if name is not None:
        try:
            char = unicodedata.lookup(name.decode())
        except KeyError:
            return m.group(0)
        return char.encode("utf-8", "surrogatepass")
    return slash if slash is not None else b""


def _utf8(code: int) -> bytes:
    """The character ``code`` as UTF-8 (a surrogate as its three bytes; past U+10FFFF, U+FFFD)."""
    return chr(code).encode("utf-8", "surrogatepass") if code <= 0x10FFFF else "\ufffd".encode()


def _css_unescape(data: bytes) -> bytes:
    return _CSS_ESCAPES.sub(lambda m: bytes([int(m.group(1), 16)]), data)


def _shifted(data: bytes) -> bool:
    return (
        ((data.find(b"\x1b") >= 0 or data.find(b"~") >= 0) and _SHIFTS.search(data) is not None)
        or data.find(b"\x0e") >= 0
        or data.find(b"\x0f") >= 0
    )


def _unshift(data: bytes) -> bytes:
    """_SHIFTS.sub, from the matches of its two alternatives each found apart (at any position only
    one of them can match: one begins with ESC, the other with ``~``, so the earliest match of
    either at or after where the last one ended is the one sub takes next); then SO and SI dropped,
    and the shifts that joining made (``ESC SO ( B``) dropped too."""
    out = _unshift_sequences(data)
    if out.find(b"\x0e") >= 0 or out.find(b"\x0f") >= 0:
        out = _unshift_sequences(out.replace(b"\x0e", b"").replace(b"\x0f", b""))
    return out


def _unshift_sequences(data: bytes) -> bytes:
    esc_re, hz_re = _SHIFTS_APART
    esc, hz = esc_re.search(data), hz_re.search(data)
    if esc is None and hz is None:
        return data
    if esc is None or hz is None:  # (one kind only: re's own loop, ~10x the Python one's speed)
        return (hz_re if esc is None else esc_re).sub(b"", data)
    out: list[bytes] = []
    pos = 0
    while esc is not None or hz is not None:
        m = esc if hz is None or (esc is not None and esc.start() < hz.start()) else hz
        assert m is not None
        out.append(data[pos : m.start()])
        pos = m.end()
        if esc is not None and esc.start() < pos:
            esc = esc_re.search(data, pos)
        if hz is not None and hz.start() < pos:
            hz = hz_re.search(data, pos)
    out.append(data[pos:])
    return b"".join(out)


def _percent_decode(data: bytes) -> bytes:
    return _PERCENT.sub(lambda m: _utf8(int(m.group(1), 16)) if m.group(1) else bytes([int(m.group(2), 16)]), data)


def _qp_decode(data: bytes) -> bytes:
    return _QUOTED_PRINTABLE.sub(lambda m: bytes([int(m.group(1), 16)]) if m.group(1) else b"", data)


def _utf7_runs(data: bytes) -> bool:
    """Whether ``data`` holds a UTF-7 run to read: one ended by ``-`` (any input), or by any other
    byte or the end (inputs up to UTF7_IMPLICIT_MAX)."""
    if data.find(b"-") >= 0 and _UTF7_ENDED_RUN.search(data) is not None:
        return True
    return len(data) <= UTF7_IMPLICIT_MAX and _UTF7_IMPLICIT_RUN.search(data) is not None


def _utf7_decode(data: bytes) -> bytes:
    """Each UTF-7 run decoded (to UTF-8); the bytes around them as they are."""
    return _UTF7_RUN.sub(lambda m: m.group(0).decode("utf-7", "replace").encode("utf-8", "replace"), data)


# A Content-Type's charset parameter naming UTF-7 (``charset=utf-7``, ``"UTF7"``, ``x-utf-7``).
_UTF7_CHARSET = re.compile(r"""charset\s*=\s*["']?(?:x-)?utf-?7(?![0-9a-z-])""", re.IGNORECASE)


def declared_charset_views(body: bytes, content_type: str) -> list[bytes]:
    """``body`` read whole as the charset ``content_type`` declares, where the views read it only in
    part: UTF-7, every run ended however a decoder ends it (past UTF7_IMPLICIT_MAX bytes the views
    read only ended runs, at no cost to undeclared bodies). Lowercased too. Empty for any other."""
    if body.find(b"+") < 0 or _UTF7_CHARSET.search(content_type) is None:
        return []
    text = body.decode("utf-7", "replace").encode("utf-8", "replace")
    return [text, text.lower()]


def _html_ref(m: re.Match[bytes]) -> bytes:
    ref = m.group(0)
    read = _HTML_READ.get(ref)
    if read is None:
        read = _read_html_ref(m)
        if len(ref) <= ESCAPE_MAX:
            if len(_HTML_READ) >= HTML_READ_MAX:
                _HTML_READ.clear()
            _HTML_READ[ref] = read
    return read


# References read, by their bytes: a page repeats the few it uses, and a lookup costs less than
# reading one again (the HTML view of a page full of references: ~25 % cheaper).
HTML_READ_MAX = 4096
_HTML_READ: dict[bytes, bytes] = {}


def _read_html_ref(m: re.Match[bytes]) -> bytes:
    hex_code, dec_code, name = m.groups()
    if name is not None:
        char = _HTML_NAMED.get(name)
        if char is not None:
            return char
        if name[:2] in _HTML_LEGACY_STARTS:
            for n in range(min(len(name) - 1, _HTML_LEGACY_MAX), 1, -1):  # (a name without its ``;``)
                char = _HTML_NAMED.get(name[:n])
                if char is not None:
                    return char + name[n:]
        return m.group(0)
    digits = (hex_code or dec_code).lstrip(b"0")
    if len(digits) > (6 if hex_code is not None else 7):
        return _REPLACEMENT  # (past U+10FFFF)
    code = int(digits, 16 if hex_code is not None else 10) if digits else 0
    if 0x20 <= code < 0x7F:
        return bytes([code])
    return _html_char(code)


_REPLACEMENT = "\ufffd".encode()
_CP1252_REFS = {c: bytes([c]).decode("cp1252", "ignore").encode() or chr(c).encode() for c in range(0x80, 0xA0)}


def _html_char(code: int) -> bytes:
    """What ``html.unescape`` reads a numeric reference to ``code`` (not printable ASCII) as, as
    the cleaning client then reads it: a control (C0 but TAB, LF and CR; DEL) or a noncharacter
    dropped, as ``html.unescape`` drops them (but FF, which it keeps and the cleaning client drops;
    a browser keeps a control, which it never shows: ``r&#1;t&#1;R...`` is the plain value to
    either, red team 44); NUL, a surrogate or past U+10FFFF as U+FFFD; 0x80-0x9F as windows-1252's
    characters; any other as its UTF-8 (the cleaning client's view reads it)."""
    if code < 0x80:
        return bytes([code]) if code in (0x09, 0x0A, 0x0D) else _REPLACEMENT if code == 0 else b""
    if code < 0xA0:
        return _CP1252_REFS[code]
    if 0xD800 <= code <= 0xDFFF or code > 0x10FFFF:
        return _REPLACEMENT
    if 0xFDD0 <= code <= 0xFDEF or code & 0xFFFE == 0xFFFE:
        return b""
    return chr(code).encode()


def _html_unescape(data: bytes) -> bytes:
    return _HTML_REF.sub(_html_ref, data)


# A character beyond U+FFFF as its two UTF-16 halves, each in UTF-8 as a surrogate's three bytes:
# CESU-8 (Java's modified UTF-8), and what a token path's texts make where one event's JSON string
# ended with a high half (``"\\ud835"``) and the next began with the low one, which a JavaScript
# client's ``content += delta`` joins into one character (red team 47). Read as that character,
# which the fold view reads in turn (mathematical bold ``U+1D42C`` is ``s``).
_HALVES = re.compile(rb"\xed[\xa0-\xaf][\x80-\xbf]\xed[\xb0-\xbf][\x80-\xbf]")


_HALF = re.compile(rb"\xed[\xa0-\xbf]")  # (either half: one may join one in the next text)


def _halves(data: bytes) -> bool:
    return data.find(b"\xed") >= 0 and _HALVES.search(data) is not None


def _has_half(data: bytes) -> bool:
    return data.find(b"\xed") >= 0 and _HALF.search(data) is not None


def _join_halves(data: bytes) -> bytes:
    return _HALVES.sub(_pair_of_halves, data)


def _pair_of_halves(m: re.Match[bytes]) -> bytes:
    return m.group().decode("utf-8", "surrogatepass").encode("utf-16-le", "surrogatepass").decode("utf-16-le").encode()


def _wrapped(data: bytes) -> bool:
    # (re's scan for a literal start is ~0.5 ns a byte; bytes.find of one byte is memchr)
    return (data.find(b"\n") >= 0 and _WRAPPED_LF.search(data) is not None) or (
        data.find(b"\r") >= 0 and _WRAPPED_CR.search(data) is not None
    )


def _unwrap(data: bytes) -> bytes:
    data = _WRAPPED_CR.sub(b"", data) if data.find(b"\r") >= 0 else data
    return _WRAPPED_LF.sub(b"", data)


# (triggers, is there anything to decode?, decode): each cheap to ask before it is run. The
# triggers are bytes of which the gate needs one (its first finds): where none is, it does not
# hold, and _gates does not give it (held to the gates by a property test).
_Gate = tuple[Callable[[bytes], bool], Callable[[bytes], bytes]]  # (is there anything to decode?, decode)
_Decoder = tuple[frozenset[int], Callable[[bytes], bool], Callable[[bytes], bytes]]
_DECODERS: tuple[_Decoder, ...] = tuple(
    (frozenset(triggers), applies, decode)
    for triggers, applies, decode in (
        (
            b"\\",
            lambda d: (  # (the wide escapes first: a literal prefix, found at once in escaped text not Latin)
                d.find(b"\\") >= 0 and (_WIDE_ESCAPE.search(d) is not None or _BACKSLASH_ESCAPES.search(d) is not None)
            ),
            _unescape,
        ),
        (b"\\", _stripped_escapes, _unescape_stripped),
        (b"\\", _transliterated_escapes, _unescape_transliterated),
        (b"\\", _escaped_letters, _unescape_dropped),
        (b"\\", escaped_garbled, unescape_garbled),  # (mojibake as JSON escapes: its fold views read it)
        (b"\\", lambda d: d.find(b"\\") >= 0 and _CSS_ESCAPES.search(d) is not None, _css_unescape),
        (b"%", lambda d: d.find(b"%") >= 0 and _PERCENT.search(d) is not None, _percent_decode),
        (b"=", lambda d: d.find(b"=") >= 0 and _QUOTED_PRINTABLE.search(d) is not None, _qp_decode),
        (b"&", lambda d: d.find(b"&") >= 0 and _HTML_REF.search(d) is not None, _html_unescape),
        (b"\x00", lambda d: d.find(b"\x00") >= 0, lambda d: d.replace(b"\x00", b"")),
        (b"\xed", _halves, _join_halves),
        (b"\n\r", _wrapped, _unwrap),
        (b"+", lambda d: d.find(b"+") >= 0 and _utf7_runs(d), _utf7_decode),
        (b"\x1b~\x0e\x0f", _shifted, _unshift),
        (b"\\", lambda d: d.find(b"\\") >= 0, _unquote_pairs),
        (b"\n", _mime_base64, _b64_only),
        (b"=", _inner_padding, _drop_inner_padding),
        (b"=", _encoded_words, _decode_words),
        (b"*", _continuations, _join_continuations),
        (b"J", _json_in_base64, _decode_json_in_base64),
    )
)
_NOT_TRIGGERS = bytes(b for b in range(256) if not any(b in t for t, _, _ in _DECODERS))
_ALL_GATES = tuple((applies, decode) for _, applies, decode in _DECODERS)
_PRESENT_UPTO = 2048  # bytes: up to it, one pass tells which triggers are there (~0.3 us for 250 bytes)
_GATES_FOR: dict[frozenset[int], tuple[_Gate, ...]] = {}
_GATES_FOR_MAX = 1024  # sets of triggers remembered (of 2**14); forgotten all at once when full


def _gates(data: bytes) -> tuple[_Gate, ...]:
    """(gate, decoder) of _DECODERS to ask of ``data``, in their order: up to _PRESENT_UPTO bytes,
    those with a trigger in it (a gate costs 0.2-1 us, and a head's field with one ``=`` in it
    asked all 18); past it, all (the finds would cost what the gates' own do)."""
    if len(data) > _PRESENT_UPTO:
        return _ALL_GATES
    present = frozenset(data.translate(None, _NOT_TRIGGERS))
    gates = _GATES_FOR.get(present)
    if gates is None:
        if len(_GATES_FOR) >= _GATES_FOR_MAX:
            _GATES_FOR.clear()
        gates = _GATES_FOR[present] = tuple((a, d) for t, a, d in _DECODERS if not present.isdisjoint(t))
    return gates


# Decodings whose views are not decoded again (only ever the last of two): the quoted-pair view is
# as long as the text it comes from, and asking every gate again of each JSON text with a ``\n`` in
# it doubled their cost (an escape under quoted-pairs, ``\%\7\2``, is not read: a gap); the
# base64-only view holds nothing another decoding reads; the view of mojibake written as JSON escapes
# is there for its fold views (proxy.core.mojibake).
_LAST = frozenset({_unquote_pairs, _b64_only, _drop_inner_padding, unescape_garbled})
# The views quoted-pairs are read in: the bytes themselves, and what JSON escapes (a JavaScript
# literal mixing ``\u0052`` and ``\E``), joined continuations (quoted file name pieces) or a
# decoded JWT (its JSON's ``\"``) leave.
# Under any other (quoted-printable, percent-encoding: ``=5C``, ``%5C``) they are not: each such view
# of a JSON text full of ``\n`` made one more view as long as it (a gap, see README).
_PAIRS_UNDER = frozenset(
    {
        None,
        _unescape,
        _unescape_stripped,
        _unescape_transliterated,
        _unescape_dropped,
        _join_continuations,
        _decode_json_in_base64,
    }
)
VIEW_DEPTH = 2  # decodings stacked (JSON escapes over percent-encoding, percent-encoding twice)


# C0 controls but TAB, LF and CR, and DEL: a terminal shows nothing of them and a cleaning client
# (``str.isprintable``) drops them, so they are filler to the skeleton (below); NUL, SO, SI and ESC
# also begin views of their own.
_CONTROLS = bytes(b for b in range(0x20) if b not in b"\t\n\r") + b"\x7f"
_any_control = any_byte_of(_CONTROLS, store=True)


_CONTROL_SCAN_FROM = 2048  # bytes: below, a pass costs less than a scan's ~1.3 us of calling


def _has_control(data: bytes) -> bool:
    """Whether ``data`` holds a byte of _CONTROLS: past _CONTROL_SCAN_FROM one Hyperscan scan (~12 us
    per 64 KiB), else (or without it) one pass that deletes them (~40 us per 64 KiB)."""
    if len(data) > _CONTROL_SCAN_FROM and _any_control is not None and (found := _any_control(data)) is not None:
        return found
    return len(data.translate(None, _CONTROLS)) != len(data)


# The bytes any decoder starts from (and the controls: a skeleton's filler).
_MARKS = b"\\%=&\n\r+~J" + _CONTROLS  # (``J``: JSON under base64, ``eyJ``)
_MARKS_IN_FIELDS = _MARKS.replace(b"\x01", b"")  # (FIELD_SEPARATOR: no decoding reads it)
_any_mark_or_high = any_byte_of(_MARKS + bytes(range(0x80, 0x100)), store=True)


def _no_other(data: bytes) -> bool:
    """Text decoded from JSON that is not ASCII, with nothing read otherwise than its leaves are:
    no UTF-16 half (see _join_halves) nor a character clients read differently."""
    return not _has_half(data) and not holds_contested(data)


def _plain(data: bytes, ebcdic: bool, fields: bool = False) -> bool:
    """No decoding can apply, and no control is there for the skeleton to drop: none of _MARKS is
    there (with ``fields``, FIELD_SEPARATOR aside: fields joined by it), nor a byte above 0x7F
    (without ``ebcdic``, text decoded from JSON: see _no_other). Up to 1 KiB, one pass that deletes them (0.3 us for 100 bytes, where eleven finds cost
    1.7); past it, nine memchr's and a scan for the controls (~15 us for 64 KiB, where the pass costs
    ~60). (bytes.find, not ``in``: ``in`` first tries its operand as an int, ~5x slower.)"""
    if len(data) <= 1024:
        marks = _MARKS_IN_FIELDS if fields else _MARKS
        return len(data.translate(None, marks)) == len(data) and (data.isascii() or (not ebcdic and _no_other(data)))
    if fields and data.find(b"\x01") >= 0:
        data = data.replace(b"\x01", b"")
    elif ebcdic and _any_mark_or_high is not None and (found := _any_mark_or_high(data)) is not None:
        return not found  # (one scan for them all and the bytes above 0x7F: ~7 us per 64 KiB, where this took ~17)
    find = data.find
    return (
        find(b"\\") < 0
        and find(b"%") < 0
        and find(b"=") < 0
        and find(b"&") < 0
        and find(b"\n") < 0
        and find(b"\r") < 0
        and find(b"+") < 0
        and find(b"~") < 0
        and find(b"J") < 0
        and (data.isascii() or (not ebcdic and _no_other(data)))
        and not _has_control(data)
    )


def _has_escapes(data: bytes, ebcdic: bool = True) -> bool:
    """Whether some decoding applies to ``data`` (case aside): views beyond the lowercased bytes."""
    if _plain(data, ebcdic):
        return False
    # (Bytes above 0x7F: EBCDIC's views; text decoded from JSON, a character clients read differently.)
    return (not data.isascii() and (ebcdic or holds_contested(data))) or any(
        applies(data) for applies, _ in _gates(data)
    )


def views(data: bytes, ebcdic: bool = True, fields: bool = False) -> list[bytes]:
    """Decoded copies of ``data`` in which an encoded value reads plainly: every decoding that
    applies, stacked up to VIEW_DEPTH, and each of those (and ``data``) lowercased. Empty when
    nothing is encoded and nothing is upper-case. (``fields``: see _plain.)"""
    if _plain(data, ebcdic, fields):
        low = data.lower()  # the usual case: no decoding can apply
        return [low] if low != data else []
    # (Lists, not sets: a view is as long as the body, and hashing it would cost more than the
    # comparisons, which stop at a length that differs.)
    out: list[bytes] = []
    frontier: list[tuple[bytes, object]] = [(data, None)]  # (a view, the decoding that made it)
    first: list[bytes] = []
    halves: list[bytes] = []  # (views with UTF-16 halves joined, where the bytes are not folded: see below)
    for depth in range(VIEW_DEPTH):
        found: list[bytes] = []
        further: list[tuple[bytes, object]] = []  # those decoded again
        for d, made_by in frontier:
            for applies, decode in _gates(d):
                if decode is _unquote_pairs and made_by not in _PAIRS_UNDER:
                    continue
                if applies(d):
                    v = decode(d)
                    if v != data and v not in out and v not in found:
                        found.append(v)
                        if decode is _join_halves and not ebcdic:
                            halves.append(v)
                        if decode not in _LAST:
                            further.append((v, decode))
        out += found
        frontier = further
        if depth == 0:
            first = found
    for d in (data, *out):
        low = d.lower()
        if low != data and low not in out:
            out.append(low)
    if ebcdic and not data.isascii():
        # EBCDIC (code page 500): a body with a byte above 0x7F read as EBCDIC text, once, not
        # decoded further (as a view to decode again, it made a 64 KiB UTF-8 text 8x dearer to
        # scrub), and lowercased. Other code pages agree on letters, digits, ``-``, ``_``, ``.``;
        # a value with a character they write otherwise has those readings as patterns
        # (proxy.core.values.ebcdic_misreads).
        out += _ebcdic(data)
        out += _folded(data)
    elif not data.isascii() and holds_contested(data):
        # Text decoded from JSON (a token path's) is folded leaf by leaf on a path of its own, a
        # character that clients read differently (``U+0138``: ``k`` or ``q``) kept (_fold): read
        # every client's way here, in the text the events stitched.
        for r in contested_readings(data):
            for v in (r, r.lower()):
                if v not in out:
                    out.append(v)
    if ebcdic:
        for v in first:  # (escaped text a client unescapes, then cleans: ``%EF%BD%92``)
            # Every one, whether UTF-8 or not, its bytes that are not dropped: one such byte
            # beside a value spread with escaped zero-width spaces hid it (red team 40).
            out += _folded(v)
    for v in halves:
        # Text decoded from JSON (a token path's) is folded leaf by leaf on a path of its own, so
        # not here; but halves of a character two leaves joined are read by no leaf: folded here.
        out += _folded(v)
    if first and (_escaped_control(data) or (data.find(b"\\u") >= 0 and _ESCAPED_FILLER.search(data) is not None)):
        # Filler escaped with the value's characters (``%73%01%6B``, quoted-printable of it all,
        # ``\\x73\\x01``): each view that holds controls or their escapes once decoded, read without
        # its filler (red team 44). Only where the bytes hold such an escape: raw controls are the
        # bytes' own skeleton's (and reading each view of a terminal's log again made a held
        # body's check cost ~5x). (A view not ASCII is folded above, its controls dropped; binary
        # bytes' views are all such, and _binary_views reads them as this does.)
        for v in first:
            if v.isascii() and _has_filler(v):  # (JSON's ``\\u0001`` among the escapes: red team 47)
                for r in readings(v, fields):
                    if r != v and r not in out:
                        out.append(r)
                        if (low := r.lower()) != r:
                            out.append(low)
    return out


def _folded(data: bytes, finder: Finder | None = None) -> list[bytes]:
    """The views of clients that clean text (:func:`proxy.core.fold.fold_views`: what is not ASCII
    dropped, compatibility forms folded or not, accents stripped, Latin letters transliterated), and
    each lowercased; not decoded further. Made of the bytes and of each of their first decoded
    views (an escape of a fullwidth letter or of a zero-width space reads as one once unescaped; a
    byte that is not UTF-8 reads as a replacement character, dropped too). With ``finder``, when no pattern is in the view in any case (binary
    bytes' views, mostly), only its end: all a hold-back asks of it (as :func:`_ebcdic`)."""
    out: list[bytes] = []
    for folded in fold_views(data):
        if finder is not None and len(folded) > finder.max_len and finder.nowhere(folded):
            folded = folded[-finder.max_len :]
        out.append(folded)
        if (low := folded.lower()) != folded:
            out.append(low)
    return out


# Binary bodies (an image, a model file from a Files API): random bytes hold a byte some decoding
# starts from almost everywhere (``\\``, ``%``, ``=``, ``&``, NUL, ESC, ``~``, bytes above 0x7F), so
# :func:`views` makes every view of the whole body, and every view of each again (~60 views of
# 64 KiB, ~0.3 s of CPU per MiB). :func:`_binary_views` gives, for such bytes, a list that finds
# every value :func:`views` finds (and ends as each of its views ends: the hold-back asks that),
# at a fraction of the cost:
#
# - The first decodings (and the EBCDIC view) are made of the whole bytes, with the gates
#   :func:`views` asks: exactly its first views.
# - A value in a view is printable ASCII (:func:`_sparse_min`: else this path is not taken), so
#   in a view of a view, or a view lowercased, it lies in a run of bytes no decoding reads
#   across: a "wall" is a byte outside printable ASCII and ``\t``-``\r`` (the bytes the
#   decodings read), NUL (the UTF-16 view deletes it), ESC, SO and SI (shifts). Every decoding
#   but three reads printable bytes only (their lookarounds, at a wall, fail as at the end of the
#   bytes), so a view of a view is made of each run on its own. The three: an OSC sequence
#   (``ESC ] ... BEL``, up to 512 bytes of anything: :data:`_SHIFTS`), an encoded-word (its charset
#   and text are any bytes but ``?``, blanks and FIELD_SEPARATOR) and the base64-only view (every
#   byte outside the alphabet deleted). The first two are read from where they begin (``ESC ]``,
#   ``=?``) as far as their expression can read (:func:`_osc_reach`, :func:`_word_reach`): that
#   stretch and the runs at its ends are kept as one. The base64-only view is made of the whole
#   view, with :func:`_mime_base64`'s own answer (it is a translate, cheap).
#   A shift view of a first view is made of the whole first view too (ISO-2022's double-byte
#   text, which it drops, runs across walls: ``%1B$B`` under percent-encoding).
# - No decoding lengthens the printable bytes it reads (an escape is longer than its character;
#   base64 and UTF-7 give fewer printable bytes than they read; UTF-7's bytes above 0x7F are walls),
#   so a run shorter than the shortest pattern cannot hold one in any view: only longer runs are
#   kept, and the last run (a view's end: what the hold-back asks). They are joined by ``\v`` (read
#   by no decoding, a blank an encoded-word stops at) or FIELD_SEPARATOR where the wall after
#   the run is one (an encoded-word or a continuation cut there reads as cut by the end).
# - The second decodings are applied to those runs whatever their gates say of the whole view
#   (a gate asks of the whole view; a decoding that finds nothing changes nothing, and one that
#   finds more only adds a view), but for the base64-only view, and the rules of views (quoted
#   pairs under _PAIRS_UNDER only, nothing under _LAST) kept.
#
# When the runs kept are more than a quarter of the bytes (text), the view of a view is made of
# the whole view as :func:`views` makes it. tests/proxy/core/test_binary_views.py holds the result
# to :func:`views` of the whole bytes on generated bodies.
SPARSE_FROM = 2048  # bytes: a shorter input's views cost less than finding its runs
_WALLS = bytes(b for b in range(256) if not (0x20 <= b < 0x7F or 0x09 <= b <= 0x0D or b in (0x00, 0x1B, 0x0E, 0x0F)))
_RUN_MAP = bytes(0x23 if b in _WALLS else 0x61 for b in range(256))  # a wall -> ``#``, else ``a``
_PRINTABLE = bytes(range(0x20, 0x7F))
_JOINER = b"\v"
_OSC_OPEN = re.compile(rb"\x1b\]")
_OSC_READS = 2 + 512 + 2  # ``ESC ]``, the text, ``ESC \\`` (see _SHIFTS)
_WORD_STOP = re.compile(rb"[?\s\x01]")  # (what an encoded-word's charset and text stop at)
_WORD_BLANKS = re.compile(rb"[ \t\r\n]*")
_SPARSE_MINS: dict[int, int] = {}  # finder serial -> the shortest pattern, 0 when one is not printable
# Code page 500 maps each byte to one code point below 256: as a table, one translate.
_CP500 = bytes(range(256)).decode("cp500").encode("latin-1")


def _sparse_min(finder: Finder) -> int:
    """The shortest pattern of ``finder``, when all its patterns are printable ASCII (else 0: a
    value with other bytes could be read across a wall). But a value's EBCDIC misreads
    (:attr:`Pattern.ebcdic`): read in the bytes and in the EBCDIC view, each made whole."""
    n = _SPARSE_MINS.get(finder.serial)
    if n is None:
        finds = [p.find for p in finder.patterns if not p.ebcdic]
        printable = bool(finds) and all(not f.translate(None, _PRINTABLE) for f in finds)
        n = min(map(len, finds)) if printable else 0
        if len(_SPARSE_MINS) >= HOLDS_MAX:
            _SPARSE_MINS.clear()
        _SPARSE_MINS[finder.serial] = n
    return n


def _osc_reach(data: bytes, at: int) -> int:
    """Where what _SHIFTS reads from an ``ESC ]`` at ``at`` ends (exclusive)."""
    return min(len(data), at + _OSC_READS)


def _word_reach(data: bytes, at: int) -> int:
    """Where what _ENCODED_WORD reads from a ``=?`` at ``at`` ends (exclusive): its charset, ``?``,
    the kind, ``?``, its text (each part ends at a stop byte: three of them), ``?=``, the blanks
    after it and the look-ahead past them (``=?`` or ``=`` and an end)."""
    at += 2
    for _ in range(3):
        m = _WORD_STOP.search(data, at)
        if m is None:
            return len(data)
        at = m.end()
    m = _WORD_BLANKS.match(data, at + 1)
    assert m is not None  # (``*`` always matches)
    return min(len(data), m.end() + 3)


def _runs(data: bytes, shortest: int) -> bytes | None:
    """The runs of ``data`` between walls that can hold a value in a view (``shortest`` bytes or
    more), what an OSC sequence or an encoded-word reads with the runs at its ends, and the last
    run, joined (see above); None when they are more than a quarter of ``data``."""
    n = len(data)
    t = data.translate(_RUN_MAP)
    spans: list[tuple[int, int]] = []
    need = b"a" * shortest
    limit = n // 4
    total = 0
    i = t.find(need)
    while i >= 0:
        start = t.rfind(b"#", 0, i) + 1
        end = t.find(b"#", i + shortest)
        end = n if end < 0 else end
        spans.append((start, end))
        total += end - start
        if total > limit:
            return None
        i = t.find(need, end)
    for opener, reach in ((_OSC_OPEN, _osc_reach), (_WORD_OPEN, _word_reach)):  # (re's literal scan: 3x find's)
        for m in opener.finditer(data):
            i = m.start()
            end = t.find(b"#", max(reach(data, i), i + 1))
            spans.append((t.rfind(b"#", 0, i) + 1, n if end < 0 else end))
    if n and t[-1] == 0x61:
        spans.append((t.rfind(b"#") + 1, n))
    if not spans:
        return b""
    spans.sort()
    parts: list[bytes] = []
    start, end = spans[0]
    for s, e in spans[1:]:
        if s > end:
            parts += (data[start:end], b"\x01" if data[end] == 1 else _JOINER)
            start, end = s, e
        else:
            end = max(end, e)
    parts.append(data[start:end])
    if end < n:
        parts.append(b"\x01" if data[end] == 1 else _JOINER)
    joined = b"".join(parts)
    return None if len(joined) > limit + 2 * len(spans) else joined


def _binary_views(data: bytes, finder: Finder, ebcdic: bool = True) -> list[bytes] | None:
    """For bytes that are mostly not text (see above): what :func:`views` finds, far cheaper; None
    when they are text, short, or the finder has a pattern that is not printable ASCII."""
    shortest = _sparse_min(finder)
    if not shortest or len(data) < SPARSE_FROM or data.isascii():
        return None
    runs = _runs(data, shortest)
    if runs is None:
        return None
    out: list[bytes] = []
    if runs:
        out.append(runs.lower())
    for applies, decode in _ALL_GATES:
        if applies(data):
            v = decode(data)
            if v != data:
                out.append(v)
                if ebcdic or decode is _join_halves:
                    out += _folded(v, finder)  # (as views() folds them)
                if decode in _LAST:
                    out.append(v.lower())
                else:
                    out += _second_views(v, decode, shortest)
    if ebcdic:
        out += _ebcdic(data, finder)
        out += _folded(data)
    elif holds_contested(data):  # (as views() reads text decoded from JSON)
        for r in contested_readings(data):
            out += (r, r.lower())
    return out


def _ebcdic(data: bytes, finder: Finder | None = None) -> list[bytes]:
    """The EBCDIC view (code page 500), and it lowercased where that differs. With ``finder``, when
    no pattern is in the view in any case (random bytes, mostly), only its end lowercased: what a
    hold-back asks of it (~20 % of a 64 KiB binary body's scrub, saved)."""
    view = data.translate(_CP500)
    if finder is not None and len(view) > finder.max_len and finder.nowhere(view):
        low = view[-finder.max_len :].lower()
        return [view, low] if low != view[-finder.max_len :] else [view]
    low = view.lower()
    return [view, low] if low != view else [view]


def _second_views(data: bytes, made_by: object, shortest: int) -> list[bytes]:
    """``data`` (a first view) lowercased, and its own views (see above)."""
    runs = _runs(data, shortest)
    out: list[bytes] = []
    if runs is None:  # (text: as views() makes them)
        for applies, decode in _gates(data):
            if decode is _unquote_pairs and made_by not in _PAIRS_UNDER:
                continue
            if applies(data):
                v = decode(data)
                out += (v, v.lower())
        return [data.lower(), *out]
    if _BASE64_WORD.search(data) is not None and _mime_base64(data):
        v = _b64_only(data)
        out += (v, v.lower())
    if not runs:
        return out
    out.append(runs.lower())
    for _, decode in _ALL_GATES:
        if decode is _b64_only or (decode is _unquote_pairs and made_by not in _PAIRS_UNDER):
            continue
        # (A shift sequence's text runs across walls -- ISO-2022's double-byte text between
        # ``ESC $ B`` and ``ESC ( B`` is dropped whole, and what is on each side joins -- so it is
        # read in the whole view, as views() reads it.)
        v = (decode(data) if _shifted(data) else data) if decode is _unshift else decode(runs)
        if v != runs:
            out += (v, v.lower())
    return out


def _check_views(
    data: bytes, finder: Finder, decoded: list[bytes] | None = None, ebcdic: bool = True, open_end: bool = False
) -> None:
    """Refuse a value found in a decoded view of ``data`` (``decoded``: those views, if already made).
    ``open_end``: more bytes may follow, and the caller holds whatever could begin a value at the
    end (see :func:`_settled`): a hit there may yet be part of a longer one."""
    if finder.nowhere(data) and _plain(data, ebcdic):
        return  # no decoding applies: every view is the bytes, or runs of them, lowercased
    if decoded is None:
        decoded = _views_for(data, finder, ebcdic)
    _refuse_in(finder, decoded, open_end)


def _refuse_in(finder: Finder, decoded: list[bytes], open_end: bool = False) -> None:
    """Refuse a value found in ``decoded`` (views; ``open_end``: see :func:`_check_views`)."""
    for view in decoded:
        hit = _settled_hit(finder, view) if open_end else finder.search(view)
        if hit is not None:
            raise ScrubRefused(
                hit.pattern.secret,
                _RUN if hit.pattern.part else "a real value in an encoding (escapes, case, UTF-16, wrapped base64)",
            )


def _settled(finder: Finder, data: bytes, hits: list[Hit]) -> list[Hit]:
    """The hits of ``data`` that more bytes after it cannot change: those that start before the
    longest end of ``data`` that could begin a pattern (as is or lowercased). A run of a value is a
    pattern (:func:`proxy.core.values.runs_of`) and so a part of a longer one -- the whole value:
    at the end of what has come so far, a run may be the beginning of the value, which is then
    replaced whole, not in runs (and not refused, when the value as it is has upper-case letters
    and the run was found lowercased). Leftmost-longest: a longer match from a start at or before
    a hit's would make the bytes from that start such an end, so a hit before it is final."""
    if not hits:
        return hits
    open_from = len(data) - _plain_hold(finder, data)
    return [h for h in hits if h.start < open_from]


def _settled_hit(finder: Finder, data: bytes) -> Hit | None:
    hits = _settled(finder, data, finder.hits(data))
    return hits[0] if hits else None


def _views_for(data: bytes, finder: Finder, ebcdic: bool = True) -> list[bytes]:
    """What to search and whose ends to ask for ``data``: :func:`_binary_views`, or :func:`views`."""
    sparse = _binary_views(data, finder, ebcdic)
    return views(data, ebcdic) if sparse is None else sparse


def _check_padding(data: bytes) -> None:
    """Refuse a numeric escape padded past ESCAPE_MAX, or an HTML reference with more digits than a
    character has (see :data:`_OVERLONG`). For streams only: a whole body's views read any length. (One-byte finds first: bytes.find of a longer needle
    costs ~50 us per 64 KiB without a hit.)"""
    if (data.find(b"&") >= 0 and _OVERLONG[0].search(data) is not None) or (
        data.find(b"\\") >= 0 and _OVERLONG[1].search(data) is not None
    ):
        raise ScrubRefused("", "an escape longer than any client needs (padded with zeros, or too many digits)")


def _check_case(data: bytes, finder: Finder, open_end: bool = False) -> None:
    """A value in mixed case (the one view of unescaped bytes). ``open_end``: see :func:`_check_views`."""
    if finder.nowhere(data):
        return
    low = data.lower()
    if low != data:
        hit = _settled_hit(finder, low) if open_end else finder.search(low)
        if hit is not None:
            raise ScrubRefused(hit.pattern.secret, _RUN if hit.pattern.part else "a real value in mixed case")


def _plain_hold(finder: Finder, region: bytes) -> int:
    """Trailing bytes of ``region`` that could begin a value as is or in another case (case
    changes no length, so the lowercased bytes' hold-back is the bytes' own; only the last
    ``max_len`` bytes can hold one)."""
    return _tail_hold(finder, region[-finder.max_len :])


def _tail_hold(finder: Finder, tail: bytes, part_from: int = 1) -> int:
    """:func:`_plain_hold` of bytes no longer than ``finder.max_len`` (the lowercased ones asked
    only when they differ: most tails have no upper-case letter). Remembered, by finder and tail:
    a token stream's text goes to a leaf's two or three paths (its own, tagged, indexed), whose
    histories are the same, and each asks the same tail. ``part_from``: see Finder.holdback."""
    key = (finder.serial, tail, part_from)
    keep = _HOLDS.get(key)
    if keep is None:
        keep = finder.holdback(tail, part_from)
        low = tail.lower()
        if low != tail:
            keep = max(keep, finder.holdback(low, part_from))
        if len(tail) <= HOLD_TAIL_MAX:
            if len(_HOLDS) >= HOLDS_MAX:
                _HOLDS.clear()
            _HOLDS[key] = keep
    return keep


HOLDS_MAX = 512  # tails remembered with their hold-back, all finders together (~300 KB at most)
HOLD_TAIL_MAX = 512  # bytes: a longer tail (a policy with a long value) is asked every time
_HOLDS: dict[tuple[int, bytes, int], int] = {}


# Bytes one character can take in a decoded view: two stacked encodings, the longest escapes
# (ESCAPE_MAX bytes) of the longest ASCII HTML reference (``&DiacriticalGrave;``, 18 bytes).
VIEW_EXPANSION = ESCAPE_MAX * 18


def _view_window(finder: Finder) -> int:
    """The bytes a stream keeps of what it sent, to see an encoded value that began there whole. A
    stream holds everything from the moment a decoded view ends with MIN_HOLD characters of a
    value, so at most MIN_HOLD - 1 characters of one are ever sent before it is seen: their
    encoding (and a cut escape) must stay in reach, as must a plain form and the longest escapes
    of the longest pattern."""
    return max(finder.max_len * ESCAPE_MAX, MIN_HOLD * VIEW_EXPANSION + 64)


def held_bound(finder: Finder) -> int:
    """Bytes a stream may keep held from earlier reads, messages or events (see HELD_MIN)."""
    return max(HELD_MIN, 4 * _view_window(finder))


def _set_aside(added: int, held: int, carried: int, bound: int) -> bool:
    """Whether ``added`` bytes, read since a stream's last check left ``held`` bytes held (ASIDE_FROM
    or more: everything, or the window escapes keep), wait unchecked with them: until they add a
    sixteenth (at least ASIDE_FROM bytes), and while what earlier reads left held (``carried``) is
    within ``bound`` (past it, a check lets them go or refuses them). A check searches all that is
    held: one per read of a byte made the work grow with the square of the hold (red team 21)."""
    return added < max(ASIDE_FROM, held >> 4) and carried <= bound


def _view_ends_in_prefix(
    finder: Finder, region: bytes, decoded: list[bytes] | None = None, ebcdic: bool = True
) -> bool:
    """Whether a decoded view of ``region`` (``decoded``: its views, if already made) ends with
    ``MIN_HOLD`` or more bytes that could begin a value, as it is or once an escape cut by the end
    of the bytes is set aside (two stacked encodings leave one in the view whenever the bytes end
    inside a character's encoding). As it is too: what reads as the start of an escape may be the
    value's own characters (``&0000`` of a value ``00&0000...``)."""
    for v in _views_for(region, finder, ebcdic) if decoded is None else decoded:
        for _ in range(VIEW_DEPTH + 1):  # (an escape cut inside the escape of an escape: cut twice)
            if finder.holdback(v, PART_HOLD) >= MIN_HOLD:
                return True
            partial = _PARTIAL_ESCAPE.search(v[-_PARTIAL_MAX:])
            if partial is None or not partial.group(0):
                break
            v = v[: len(v) - len(partial.group(0))]
    return False


def _ends_in_cut_escape(data: bytes) -> bool:
    """Whether ``data`` ends inside an escape (``%``, ``%6``, ``&#x``, ``=6``, ``\\u00``): no
    decoding applies to it yet, but one will to it and the next text."""
    partial = _PARTIAL_ESCAPE.search(data[-_PARTIAL_MAX:])
    return partial is not None and bool(partial.group(0))


def _ends_open(finder: Finder, region: bytes, ebcdic: bool) -> bool:
    """Whether ``region`` or a decoded view of it ends in an escape cut short or in any byte that
    could begin a value."""
    for v in (region, *_views_for(region, finder, ebcdic)):
        partial = _PARTIAL_ESCAPE.search(v[-_PARTIAL_MAX:])
        if (partial is not None and partial.group(0)) or finder.holdback(v, PART_HOLD) > 0:
            return True
    return False


def scrub_field(value: bytes, finder: Finder, on_hit: OnHit) -> bytes:
    """One complete value (a header name or value, a reason phrase, a control frame payload, a
    whole body)."""
    return _read_field(value, finder, on_hit)[0]


# What :func:`scrub_field` returned, and what it read to decide: the decoded views it searched
# (None: it made none, no decoding applying and no value being there in any case), whether they were
# :func:`_binary_views`' (runs of the bytes, not each view whole), and the skeleton's readings (None:
# the bytes hold no filler, their skeleton is themselves). (A tuple: a token stream makes one an
# event, and a class's instance cost ~1,500 instructions more.)
_Read = tuple[bytes, "list[bytes] | None", bool, "list[bytes] | None"]


def _read_field(value: bytes, finder: Finder, on_hit: OnHit, plain: bool | None = None) -> _Read:
    """``plain``: :func:`_plain` of ``value``, when the caller asked it already."""
    nowhere = finder.nowhere(value)  # (one prefilter scan: where it says no pattern, there are no hits)
    out = value if nowhere else _replace(value, finder.hits(value), on_hit)
    if nowhere and (plain if plain is not None else _plain(out, True)):
        return out, None, False, None  # (the usual body: nothing decodes, no filler; no pattern there in any case)
    if plain and out is value:
        # A plain text the prefilter did not answer for (a short one), nothing replaced: ASCII
        # without marks or controls, so no binary view, no filler, and no view but its lowercase
        # (what _binary_views, views and _has_filler would say, asked: ~7,000 instructions).
        low = out.lower()
        decoded = [low] if low != out else []
        _refuse_in(finder, decoded)
        return out, decoded, False, None
    runs = _binary_views(out, finder)
    decoded, sparse = (views(out), False) if runs is None else (runs, True)
    _refuse_in(finder, decoded)
    skeletons = readings(out) if _has_filler(out) else None
    if skeletons is not None and (hit := _skeleton_hit(finder, out, regions=skeletons)) is not None:
        raise ScrubRefused(hit.pattern.secret, _RUN if hit.pattern.part else _SPREAD)
    return out, decoded, sparse, skeletons


def _skeleton_hit(finder: Finder, data: bytes, fields: bool = False, regions: list[bytes] | None = None) -> Hit | None:
    """A value in ``data``'s skeleton (see below), plainly or lowercased: filler of several kinds
    mixed between its characters, which each view drops only one kind of. (Streams keep a skeleton
    of their own, :class:`_Skeleton`.) ``regions``: its readings, when the caller made them."""
    if regions is None and not _has_filler(data):
        return None
    for region in readings(data, fields) if regions is None else regions:
        if region == data:
            continue
        hit = finder.search(region)
        if hit is None and not finder.nowhere(region) and (low := region.lower()) != region:
            hit = finder.search(low)
        if hit is not None:
            return hit
    return None


def skeleton_views(data: bytes) -> list[bytes]:
    """``data``'s readings without filler (see skeleton), and each lowercased, when it holds filler
    (a value spread with filler of any kinds mixed is whole there); else none. For a whole text
    searched by the caller."""
    if not _has_filler(data):
        return []
    out: list[bytes] = []
    for region in readings(data):
        if region != data:
            out.append(region)
            if (low := region.lower()) != region:
                out.append(low)
    return out


FIELD_SEPARATOR = b"\x01"  # no pattern holds it, no decoding reads across it (see fields_clean)


def fields_clean(finder: Finder, fields: list[bytes]) -> bool:
    """Whether no field holds a value, plainly or encoded: :func:`scrub_field` would return every
    one unchanged."""
    return first_hit(finder, fields) is None


def first_hit(finder: Finder, fields: list[bytes]) -> Hit | None:
    """A value held by one of ``fields``, plainly or in a decoded view, if any: what scrub_field
    would find in some field alone (the specification, held by a differential property test), and
    what some readings find only across fields. The fields are joined by FIELD_SEPARATOR (no
    pattern holds that byte) and searched at once, with the joined text's views; then each field
    that holds something to decode has its own views searched (those scrub_field makes, the field
    read as a header whatever its length), all in one search, and each field holding filler its
    own skeletons (readings that carry state, an escape sequence's text, a
    UTF-7 run, made the joined views see less than a field's own: red teams 39 and 40). The joined
    views find more in some cases, kept: a field's unended UTF-7 run read beside another field's
    ended one past UTF7_IMPLICIT_MAX bytes; a field's base64 read as a MIME part's beside a field
    that declares ``Content-Transfer-Encoding: base64``; RFC 2231 continuations across fields.

    So a field found clean is clean for this finder (its values) whatever it is sent with: such
    fields are remembered, a set by finder (its serial), up to CLEAN_FIELDS short ones in all
    (one memory for every finder a process builds, so that many finders -- one per bound host --
    cannot multiply it; forgotten all at once when full), and not searched again. Most of a head's
    fields are the same request after request (a client's User-Agent, a server's own headers): a
    realistic answer head of 24 fields, with ``=`` in its cookie and HSTS fields (a
    quoted-printable view to search too), cost 21 us to check, and costs ~3 once seen."""
    global _clean_count
    clean = _CLEAN.get(finder.serial)
    todo = fields if clean is None else [f for f in fields if f not in clean]
    if not todo:
        return None
    blob = FIELD_SEPARATOR.join(todo)
    hit = finder.search(blob)
    if hit is None:
        for view in views(blob, fields=True):
            hit = finder.search(view)
            if hit is not None:
                return hit
        # Each field's own views too, all in one search: some readings carry state over the
        # separator (an OSC's text in the shift view), or read a field alone otherwise than beside
        # others (an unended UTF-7 run in a field of up to UTF7_IMPLICIT_MAX bytes; a fold that one
        # byte not UTF-8 elsewhere turns off), and saw less in the whole than in a field alone (red
        # team 40). A field without any of _MARKS has no views but its lowercase, searched above.
        # (Each field read as what it is, a header, whatever its length: a separator after it. And
        # as scrub_field reads it: a long field mostly not ASCII by _binary_views, red team 41.)
        own = [v for f in todo if not _plain(f, True) for v in _views_for(f + FIELD_SEPARATOR, finder)]
        if own and (hit := finder.search(FIELD_SEPARATOR.join(own))) is not None:
            return hit
        # A field's skeleton is its own: none holds filler, none differs from its skeleton (the
        # separator is a control, so the joined blob always looks as if it held some).
        if any(map(_has_filler, todo)):
            hit = _skeleton_hit(finder, blob, fields=True)
        if hit is None and blob.count(FIELD_SEPARATOR) >= len(todo):  # (a field holds one: filler there)
            hit = next(filter(None, (_skeleton_hit(finder, f) for f in todo if f.find(FIELD_SEPARATOR) >= 0)), None)
        if hit is not None:
            return hit
        if _clean_count + len(todo) > CLEAN_FIELDS:
            _CLEAN.clear()
            _clean_count, clean = 0, None
        if clean is None:
            clean = _CLEAN[finder.serial] = set()
        before = len(clean)
        clean.update(f for f in todo if len(f) <= CLEAN_FIELD_MAX)
        _clean_count += len(clean) - before
    return hit


CLEAN_FIELDS = 4096  # fields remembered as clean, all finders together (~1.5 MB at most)
CLEAN_FIELD_MAX = 256  # bytes: a longer field is searched every time
_CLEAN: dict[int, set[bytes]] = {}  # by finder serial: the fields found clean under it
_clean_count = 0  # fields in _CLEAN, all finders together


def _replace(data: bytes, hits: list[Any], on_hit: OnHit | None) -> bytes:
    if not hits:
        return data
    parts: list[bytes] = []
    pos = 0
    for h in hits:
        if h.pattern.part:
            raise ScrubRefused(h.pattern.secret, _RUN)
        parts += (data[pos : h.start], h.pattern.replace)
        if on_hit is not None:
            on_hit(h.pattern.secret)
        pos = h.end
    parts.append(data[pos:])
    return b"".join(parts)


# -- the skeleton: a value spread farther than the window ------------------------------------------
# A stream keeps of what it sent only a window (_view_window): a value whose characters an upstream
# spaces with filler, farther apart than the window, is never whole in a view of it. Filler here is
# what clients drop whole, in any number: bytes above 0x7F (a cleaning client), C0 controls but
# TAB and LF, and DEL (NUL: UTF-16's; SO and SI: ISO-2022-KR's; the rest: what a terminal shows
# nothing of and ``str.isprintable`` drops; a CR is dropped where no LF follows it), a terminal's
# escape sequences in every ECMA-48 form and ISO-2022's designators (strip-ansi, a terminal), and
# quoted-printable's and HZ's line continuations. A stream's skeleton is what it
# sent with the filler dropped, its last bytes kept: a value found there, plainly or lowercased,
# is refused, and a skeleton that ends in MIN_HOLD or more characters of one holds the stream, as
# a view that does. (Not read there: a value encoded, then spread: percent escapes with filler
# between them farther apart than the window; a terminal's cursor moves: a character overwritten
# after a BS or a CR.)
#
# Three readings, as three kinds of client read escape sequences (red team 23): a terminal's
# (:func:`_terminal`), where a sequence shows nothing, its final byte included (``ESC r``); a
# cleaning client's that keeps what ``str.isprintable`` keeps, where ESC goes and ``r`` stays
# (PRINTED); and strip-ansi's (ansi-regex 6, what agents' harnesses strip command output with),
# then that cleaner (STRIPPED): it removes some sequences whole and leaves others to the cleaner.
TERMINAL, PRINTED, STRIPPED = 0, 1, 2
_HIGH = bytes(range(0x80, 0x100))
_C1_CONTROL = re.compile(rb"\xc2[\x80-\x9f]")
_PRINTED_DROPPED = _HIGH + _CONTROLS
_PRINTED_DROPPED_IN_FIELDS = _PRINTED_DROPPED.replace(b"\x01", b"")
# ESC sequences as a terminal (ECMA-48) and strip-ansi read them: CSI; a control string (OSC, DCS,
# SOS, PM, APC) of any length (not the views' 512 bytes), ended by BEL, ST (ESC backslash or
# U+009C) or the next ESC; any other escape, intermediates then its final byte (``ESC =``, ``ESC 7``,
# ``ESC ) 0``, ``ESC $ B``, a lone ST; not the openers of the others: cut short, they are begun);
# and their C1 forms in UTF-8 (U+009B CSI; U+0090, U+0098,
# U+009D, U+009E, U+009F strings ended by BEL or U+009C ST: red teams 16 and 20). Each form begins
# with a literal byte (re's fast scan).
# (A control string ends at BEL, ST, CAN, SUB, the next ESC or the next C1 control, as a
# terminal's parser leaves it: scanning a C1 string past the next opener to the end made each
# opener's scan the rest of the bytes, red team 23's 49 s for 64 KiB of them.)
_C1_TEXT = rb"(?:[^\x07\x1b\xc2]|\xc2(?![\x80-\x9f]))*"
_OPENER = re.compile(rb"\x1b|\xc2[\x80-\x9f]")  # (what ends a plain run: ESC, a C1 control)
_STRING_END = re.compile(rb"[\x07\x18\x1a\x1b]|\xc2[\x80-\x9f]")
_CSI_PARAMS = re.compile(rb"[\x20-\x3f]*")
_CHARACTER = re.compile(rb"[\xc0-\xff][\x80-\xbf]*")
_C1_STRINGS = frozenset((0x90, 0x98, 0x9D, 0x9E, 0x9F))
_GROUND, _ESCAPE, _INTERMEDIATE, _CSI, _STRING = range(5)


# Escape sequences whole, where nothing but ESC ends or interrupts them (no other control, no C1
# control in the bytes): what _terminal reads there, in one substitution. An ESC left behind (a
# sequence cancelled by the next ESC, or begun at the end) sends the bytes to _terminal.
_PLAIN_SEQUENCES = re.compile(
    rb"\x1b(?:\[[\x20-\x3f]*[\x40-\x7e]|[\]PX^_][^\x07\x1b]*(?:\x07|\x1b\\|(?=\x1b))"
    rb"|[ -/]*(?:[0-OQ-WYZ\\`-~]|[\xc3-\xf4][\x80-\xbf]*|\xc2[\xa0-\xbf]))"
)
_OTHER_CONTROLS = _CONTROLS.replace(b"\x1b", b"")
_PLAIN_BEGUN = re.compile(rb"\x1b(?:\[[\x20-\x3f]*|[\]PX^_][^\x07\x1b]*|[ -/]*)\Z")  # (cut by the end)


@functools.cache
def _ground_dropped(kept: bytes) -> bytes:
    """The controls a terminal shows nothing of outside a sequence: C0 but ESC and those in
    ``kept``, and DEL; CAN and SUB always (they only abort a sequence)."""
    return bytes(b for b in (*range(0x20), 0x7F) if b != 0x1B and (b in (0x18, 0x1A, 0x7F) or b not in kept))


def _terminal(data: bytes, kept: bytes) -> tuple[bytes, bytes]:
    """What a terminal shows of ``data``, its cursor moves aside: the DEC VT500 parser's states
    (vt100.net; xterm and tmux follow it), C1 controls as UTF-8. Escape sequences, CSI and control
    strings (OSC, DCS, SOS, PM, APC) show nothing, nor C0 controls but those in ``kept`` (line
    ends, tabs; executed inside a sequence too, which goes on); ESC, a C1 control, CAN or SUB end
    any sequence (CAN and SUB abort it: what follows shows); a string ends at BEL or ST. Returns
    the text and, when the bytes end inside a sequence, that sequence's bytes (for the next ones).
    One step a sequence, plain text copied whole (a regular expression a form had cases a
    terminal does not: red team 23)."""
    if len(data.translate(None, _OTHER_CONTROLS)) == len(data) and _C1_CONTROL.search(data) is None:
        text = _PLAIN_SEQUENCES.sub(b"", data)  # (the usual case: a log's colours)
        at = text.find(b"\x1b")
        if at < 0:
            return text, b""
        # One begun at the end, as the bytes came: not an ESC whose sequence a later ESC cut short
        # (ESC ESC 1 [: the second ESC's sequence taken out, the first looked like a CSI begun,
        # and ate what came next; the bytes step by step below).
        if _PLAIN_BEGUN.match(text, at) is not None and data.endswith(text[at:]):
            return text[:at], text[at:]
    out: list[bytes] = []
    i, n, state, begun = 0, len(data), _GROUND, 0
    opener, string_end = _OPENER.search, _STRING_END.search
    dropped = _ground_dropped(kept)
    while i < n:
        if state == _GROUND:
            # Text up to the next ESC or C1 control, its other controls dropped (but ``kept``) in
            # one pass: what a step a control did (binary bytes hold one every ~8 bytes).
            m = opener(data, i)
            j = n if m is None else m.start()
            if j > i:
                out.append(data[i:j].translate(None, dropped))
            if m is None:
                break
            i = j
        b = data[i]
        if b == 0x18 or b == 0x1A:  # CAN, SUB
            state, i = _GROUND, i + 1
        elif b == 0x1B:
            state, begun, i = _ESCAPE, i, i + 1
        elif b == 0xC2 and i + 1 < n and 0x80 <= data[i + 1] <= 0x9F:  # a C1 control
            c = data[i + 1]
            if state == _STRING and c == 0x9C:  # ST
                state = _GROUND
            else:
                state = _CSI if c == 0x9B else _STRING if c in _C1_STRINGS else _GROUND
            begun, i = i, i + 2
        elif b < 0x20 or b == 0x7F:
            if state == _STRING:
                if b == 0x07:
                    state = _GROUND
            elif b != 0x7F and kept.find(b) >= 0:
                out.append(data[i : i + 1])
            i += 1
        elif state == _STRING:  # its text: up to what can end it
            m = string_end(data, i)
            i = m.start() if m is not None else n
        elif b >= 0x80:  # a character not ASCII: the final of an escape, ignored in a CSI
            m = _CHARACTER.match(data, i)
            i = m.end() if m is not None else i + 1
            if state != _CSI:
                state = _GROUND
        elif state == _ESCAPE:
            state = _CSI if b == 0x5B else _STRING if b in b"]PX^_" else _INTERMEDIATE if b < 0x30 else _GROUND
            i += 1
        elif state == _INTERMEDIATE:
            if b >= 0x30:
                state = _GROUND
            i += 1
        else:  # CSI: its parameters and intermediates, then its final
            m = _CSI_PARAMS.match(data, i)
            i = m.end() if m is not None else i
            if i < n and 0x40 <= data[i] <= 0x7E:
                state, i = _GROUND, i + 1
    if state != _GROUND:
        return b"".join(out), data[begun:]
    if data[-1:] == b"\xc2":  # (the first byte of what may be a C1 control: begun too)
        return b"".join(out)[:-1], b"\xc2"
    return b"".join(out), b""


# ansi-regex 6 (strip-ansi 7), as JavaScript reads it, over UTF-8 (U+009B, U+009C).
_ANSI_REGEX = re.compile(
    rb"(?:\x1b|\xc2\x9b)[\[\]()#;?]*(?:(?:(?:(?:;[-a-zA-Z\d/#&.:=?%@~_]+)*|[a-zA-Z\d]+(?:;[-a-zA-Z\d/#&.:=?%@~_]*)*)?"
    rb"(?:\x07|\x1b\\|\xc2\x9c))|(?:(?:\d{1,4}(?:;\d{0,4})*)?[\dA-PR-TZcf-nq-uy=><~]))"
)
_ANSI_READS = 256  # bytes from an ESC that a stream's strip-ansi reading keeps as they came
_LONE_CR = re.compile(rb"\r(?=[^\n])")  # (one at the end is begun: an LF may follow)
# Soft line breaks: quoted-printable's (blanks before the line end, or a lone CR) and HZ's.
# (A lone CR at the end of the bytes is not one yet: the LF of a CRLF may follow.)
# (Two expressions, each beginning with a literal byte: re's fast scan; as one, it tried every byte.)
_SOFT_BREAKS = (re.compile(rb"=[ \t]*(?:\r\n|\r(?=[^\n])|\n)"), re.compile(rb"~\r?\n"))
# A mathematical letter's high half at the end, its low half not (all) come: begun, not filler.
_MATH_HIGH_BEGUN = rb"[dD]835(?:\\(?:u(?:[dD](?:[c-fC-F][0-9a-fA-F]?)?)?)?)?\Z"
# Filler cut by the end of what has come: an ESC sequence begun (its parameters or text dropped:
# the sequence may go on for longer than the skeleton keeps), a continuation's ``=`` or ``~``.
# (Each opener a group of its own: _begun_end keeps what ends with it.)
_C1_OPENED = rb"\xc2(?:(\x9b)[0-?]*[ -/]*|([\x90\x98\x9d-\x9f])" + _C1_TEXT + rb"\x1b?)?"
_FILLER_BEGUN = re.compile(
    rb"(?:\x1b(?:(\[)[0-?]*[ -/]*|([\]PX^_])[^\x07\x1b]*\x1b?|[ -/]*)?|" + _C1_OPENED + rb"|[=~][ \t]*\r?|\r"
    rb"|\\(?:u(?:[0-9a-fA-F]{0,3}|001[bB](?:\[[0-?]*[ -/]*)?|009[bB][0-?]*[ -/]*))?"  # (an escape begun: below)
    rb"|[%=](?:[017]|1[bB](?:\[[0-?]*[ -/]*)?)?|\\(?:x(?:[017]|1[bB](?:\[[0-?]*[ -/]*)?)?|[0-3][0-7]?|0?33(?:\[[0-?]*[ -/]*)?"
    rb"|e(?:\[[0-?]*[ -/]*)?)|%u(?:[0-9a-fA-F]{0,3}|001[bB](?:\[[0-?]*[ -/]*)?)"
    rb"|\\U(?:[0-9a-fA-F]{0,7}|0000001[bB](?:\[[0-?]*[ -/]*)?)|\\u\{(?:[0-9a-fA-F]{0,6}|0*1[bB]\}(?:\[[0-?]*[ -/]*)?)"
    rb"|\\N(?:\{[A-Za-z0-9 -]{0,40})?|\\u"
    + _MATH_HIGH_BEGUN[:-2]
    + rb")\Z"  # (the other escapes of a control, begun: _ESCAPED_CONTROLS; a letter's pair)
)
# The same filler written as JSON escapes (``\u200b``, ``\u0000``, ``\u001b[1m``), as ``json.dumps``
# writes any character that is not ASCII: every escape of one, NUL, SO and SI, and ESC with the rest
# of its CSI (a client's json.loads, then the same dropping, reads what is left: red team 20).
_ESCAPED_FILLER = re.compile(
    rb"\\u(?:001[bB](?:\[[0-?]*[ -/]*)?\\u001[8aA]|009[bB][0-?]*[ -/]*\\u001[8aA]"  # (a sequence aborted)
    rb"|001[bB](?:\[[0-?]*[ -/]*[@-~]|(?!\[|\Z))|009[bB][0-?]*[ -/]*[@-~]"
    rb"|00(?:0[0-8bcefBCEF]|1[0-9ac-fAC-F]|7[fF]|8[0-9a-fA-F]|9[ac-fAC-F]|[a-fA-F][0-9a-fA-F])"
    rb"|(?!00)(?!" + _MATH_HIGH_BEGUN + rb")[0-9a-fA-F]{4})"
)
# The controls that filler is made of (C0 but TAB, LF, CR; DEL; ESC with the rest of its CSI) in the
# other escapes a client decodes before it drops them (red team 44): percent-encoding (``%01``),
# quoted-printable (``=01``), C's and the shell's (``\x01``, ``\001``, ``\1``, ``\a``, ``\b``,
# ``\e``, ``\f``, ``\v``; JSON's ``\b`` and ``\f``). An octal escape reads up to three digits:
# a shorter one is the control only where no digit follows (``\12`` is LF, not ``\1`` then 2), nor
# the end of the bytes (a digit may come: begun, _FILLER_BEGUN).
_HEX_CONTROL = rb"(?:0[0-8bcefBCEF]|1[0-9ac-fAC-F]|7[fF])"  # (``1b``: ESC, below)
_ESC_REST = rb"(?:\[[0-?]*[ -/]*[@-~]|(?!\[|\Z))"  # (a CSI, or ESC alone; one begun at the end: _FILLER_BEGUN)
_OCTAL_CONTROLS = [format(b, "o") for b in (*range(0x20), 0x7F) if b not in (0x09, 0x0A, 0x0D, 0x1B)]
_SHORT_OCTALS = sorted({f for o in _OCTAL_CONTROLS if len(o) < 3 for f in (o, o.zfill(2))}, key=len, reverse=True)
# The escapes of any character (red team 47): JavaScript's ``%u0001`` and ``%u200B`` (escape()),
# ``\u{1}`` (and Rust's), Python's ``\U00000001`` and ``\N{ZERO WIDTH SPACE}``: every control (ESC
# with the rest of its CSI) and every character that is not ASCII, which a cleaning client drops
# once it has decoded them. (A name is looked up: _named_filler.)
_WIDE_CONTROL = rb"(?:00(?:" + _HEX_CONTROL + rb"|1[bB]" + _ESC_REST + rb"|[89a-fA-F][0-9a-fA-F])|(?!00)[0-9a-fA-F]{4})"
_BRACED_CONTROL = (
    rb"\{0*(?:[0-8bcefBCEF]|1[0-9ac-fAC-F]|7[fF]|[89a-fA-F][0-9a-fA-F]|[1-9a-fA-F][0-9a-fA-F]{2,5})\}|\{0*1[bB]\}"
    + _ESC_REST
)
_LONG_CONTROL = rb"(?:0000" + _WIDE_CONTROL + rb"|000[1-9a-fA-F][0-9a-fA-F]{4}|0010[0-9a-fA-F]{4})"
# By the byte each begins with (a literal first byte: re's fast scan; one alternation of the three
# tried every position, ~20 ns a byte).
_ESCAPED_CONTROLS = (
    (b"%", re.compile(rb"%(?:" + _HEX_CONTROL + rb"|1[bB]" + _ESC_REST + rb"|u" + _WIDE_CONTROL + rb")")),
    (b"=", re.compile(rb"=(?:" + _HEX_CONTROL + rb"|1[bB]" + _ESC_REST + rb")")),
    (b"\\", re.compile(
        rb"\\(?:x(?:" + _HEX_CONTROL + rb"|1[bB]" + _ESC_REST + rb")|(?:0?33|e)" + _ESC_REST + rb"|[abfv]"
        rb"|(?:" + "|".join(o.zfill(3) for o in _OCTAL_CONTROLS).encode() + rb")"
        rb"|(?:" + "|".join(_SHORT_OCTALS).encode() + rb")(?![0-7]|\Z)"
        rb"|u" + _BRACED_CONTROL + rb"|U" + _LONG_CONTROL + rb")"
    )),
)  # fmt: skip
_NAMED = re.compile(rb"\\N\{([A-Za-z0-9 -]{1,40})\}")


def _named_filler(m: re.Match[bytes]) -> bool:
    """Whether ``\\N{...}`` names filler: a control (``START OF HEADING``, ``SOH``) or a character that
    is not ASCII (``ZERO WIDTH SPACE``); not a printable one, nor TAB, LF or CR (a value's own, a
    line's end), nor a name Python does not know."""
    try:
        char = unicodedata.lookup(m.group(1).decode())
    except KeyError:
        return False
    return not (" " <= char <= "~" or char in "\t\n\r")


# What every one of them begins with (in its case: ``\\U`` is not ``\\u``, which JSON text is full of):
# past _CONTROL_SCAN_FROM one Hyperscan scan says where none can be (~10 us per 64 KiB; the
# expressions tried at each ``\\``, ``=`` and ``%`` of a text full of them cost ~400).
_ESCAPED_CONTROL_OPENERS = any_of(
    [b"%0", b"%1", b"%7", b"%u", b"=0", b"=1", b"=7", b"\\x0", b"\\x1", b"\\x7", b"\\u{", b"\\N{",
     *(b"\\" + bytes([c]) for c in b"0123abefvU")],
    caseless=False,
    store=True,
)  # fmt: skip


def _escaped_control(data: bytes) -> bool:
    """Whether ``data`` holds a control in one of the escapes of _ESCAPED_CONTROLS."""
    if (
        len(data) > _CONTROL_SCAN_FROM
        and _ESCAPED_CONTROL_OPENERS is not None
        and _ESCAPED_CONTROL_OPENERS(data) is False
    ):
        return False
    return any(data.find(mark) >= 0 and expr.search(data) is not None for mark, expr in _ESCAPED_CONTROLS) or (
        data.find(b"\\") >= 0 and data.find(b"\\N{") >= 0 and any(map(_named_filler, _NAMED.finditer(data)))
    )


def _drop_escaped_controls(data: bytes) -> bytes:
    for mark, expr in _ESCAPED_CONTROLS:
        if data.find(mark) >= 0:
            data = expr.sub(b"", data)
    if data.find(b"\\") >= 0 and data.find(b"\\N{") >= 0:
        data = _NAMED.sub(lambda m: b"" if _named_filler(m) else m.group(0), data)
    return data


def skeleton(data: bytes, fields: bool = False, reading: int = TERMINAL) -> bytes:
    """``data`` without its filler (see above), its sequences read as a terminal, a printable-only
    cleaner or strip-ansi then that cleaner read them (``reading``); with ``fields``,
    FIELD_SEPARATOR kept (fields joined by it: see first_hit). Letters and digits in compatibility
    forms are read as the ASCII they fold to (NFKC), plainly or as JSON escapes (fullwidth letters
    with a control between each: red team 24)."""
    if fields and data.find(FIELD_SEPARATOR) >= 0:
        # Each field read on its own: a sequence a field opens and does not close (an OSC, a DCS, a
        # CSI's parameters) ends with it, and does not swallow the start of the next field (red team
        # 39: a piece of the key after each field ending in U+009D went to the agent unseen).
        return FIELD_SEPARATOR.join(skeleton(f, False, reading) for f in data.split(FIELD_SEPARATOR))
    out, begun = fold_compatible(data), b""
    if reading != TERMINAL:
        if reading == STRIPPED:
            out = _ANSI_REGEX.sub(b"", out)
        out = out.translate(None, _PRINTED_DROPPED_IN_FIELDS if fields else _PRINTED_DROPPED)
    else:
        if _has_control(out) or _C1_CONTROL.search(out) is not None:
            # (A sequence begun at the end stays, whole, for the bytes that end it: see _begun_end.)
            out, begun = _terminal(out, b"\t\n\r\x01" if fields else b"\t\n\r")
        if not out.isascii():
            out = out.translate(None, _HIGH)
    if (out.find(b"\n") >= 0 or out.find(b"\r") >= 0) and (out.find(b"=") >= 0 or out.find(b"~") >= 0):
        for soft in _SOFT_BREAKS:
            out = soft.sub(b"", out)
    if out.find(b"\r") >= 0:
        out = _LONE_CR.sub(b"", out)
    if out.find(b"\\u") >= 0:
        out = _ESCAPED_FILLER.sub(b"", _read_escaped_letters(out))
    out = _drop_escaped_controls(out)
    return out + begun


def _readings_differ(data: bytes) -> bool:
    """Whether the readings of ``data`` may differ (see above): a sequence is there."""
    return data.find(b"\x1b") >= 0 or data.find(b"\xc2") >= 0


def readings(data: bytes, fields: bool = False) -> list[bytes]:
    """``data``'s skeleton in each reading (see above), once each."""
    first = skeleton(data, fields)
    if not _readings_differ(data):
        return [first]
    out = [first]
    for reading in (PRINTED, STRIPPED):
        other = skeleton(data, fields, reading)
        if other not in out:
            out.append(other)
    return out


def _filler_begun(text: bytes) -> re.Match[bytes] | None:
    """Filler begun at the end of ``text`` (a skeleton): tried from the last ESC, ``\\xc2`` (C1 in
    UTF-8), ``=``, ``~``, backslash, CR and ``%`` in its last 4 KiB, the earliest that reaches the end (one expression
    searched over 4 KiB tried every byte: ~75 us)."""
    lo = max(0, len(text) - 4096)
    starts = [text.rfind(byte, lo) for byte in (b"\x1b", b"\xc2", b"=", b"~", b"\\", b"\r", b"%")]
    if starts[0] == len(text) - 1 and starts[0] > 0:  # (an OSC's ESC backslash begun: its ESC ] before)
        starts.append(text.rfind(b"\x1b", lo, starts[0]))
    if starts[1] == len(text) - 1 and starts[1] > 0:  # (a C1 string's U+009C begun: its opener before)
        starts.append(text.rfind(b"\xc2", lo, starts[1]))
    if starts[4] > 0:  # (a mathematical letter's low half begun: its high half's backslash before)
        starts.append(text.rfind(b"\\", lo, starts[4]))
    for at in sorted(a for a in starts if a >= 0):
        found = _FILLER_BEGUN.match(text, at)
        if found is not None:
            return found
    return None


def _begun_end(text: bytes) -> tuple[bytes, bool]:
    """``text`` (a skeleton) with the parameters or text of an ESC sequence begun at its end dropped,
    and whether one (or a soft break) is begun there."""
    begun = _filler_begun(text)
    if begun is None:
        return text, False
    opener = begun.lastindex  # (the group of the opener matched: ``[``, ``]``, C1's CSI or OSC)
    if opener is None:
        return text, True
    kept = text[: begun.end(opener)]  # (``ESC [`` and what follows: the opener kept, the rest dropped ...)
    # (... but a control string's terminator begun: ESC of ESC backslash, the first byte of U+009C)
    osc = begun.group(opener) not in (b"[", b"\x9b")
    return kept + (text[-1:] if osc and text[-1:] in (b"\x1b", b"\xc2") else b""), True


_FILLER_MARKS = _CONTROLS + b"\r=~\\%"  # (in ASCII, no filler is without one of these)


def _has_filler(data: bytes) -> bool:
    """Whether ``data`` holds filler (see above). ASCII text without controls holds none unless it
    holds a CR (a lone one), ``=`` or ``~`` (a soft break: with a line end), or a backslash, ``%``
    or ``=`` (an escaped filler, an escaped control). (Up to 2 KiB, one pass first: a token's text without any of them, ~0.2 us.)"""
    if not data.isascii():
        return True
    if len(data) <= _CONTROL_SCAN_FROM:
        if len(data.translate(None, _FILLER_MARKS)) == len(data):
            return False  # (the usual text: one pass)
        if len(data.translate(None, _CONTROLS)) != len(data):
            return True
    elif _has_control(data):
        return True
    find = data.find
    lf, cr, escaped, eq = find(b"\n") >= 0, find(b"\r") >= 0, find(b"\\") >= 0, find(b"=") >= 0
    pct = find(b"%") >= 0
    if not lf and not cr and not escaped and not eq and not pct:
        return False
    return (
        (cr and _LONE_CR.search(data) is not None)
        or ((lf or cr) and eq and _SOFT_BREAKS[0].search(data) is not None)
        or (lf and find(b"~") >= 0 and (find(b"~\n") >= 0 or find(b"~\r\n") >= 0))
        or (escaped and find(b"\\u") >= 0 and _ESCAPED_FILLER.search(data) is not None)
        or ((escaped or eq or pct) and _escaped_control(data))
    )  # (one-byte finds first, memchr: a longer needle costs ~60 us per 64 KiB where it is not)


_OFF_TAIL = 32  # bytes a skeleton keeps of what was sent, as sent (more than an escape of filler)


class _Skeleton:
    """The skeleton of what one stream sent (see above). Off until filler is sent: before, what the
    window keeps is all the skeleton could add, and its views drop the filler in what is checked.
    Off again once a window's worth of bytes without filler went out (text in another script, a
    stray escape): the skeleton's end is then the window's. Callers ask :attr:`on` before
    :meth:`check`, and call :meth:`sent` for what may hold filler (a call each costs a token
    stream's event ~10 %). The other readings are twins of their own, from the first sequence sent
    (until then the readings are one)."""

    __slots__ = ("_begun", "_clean", "_finder", "_keep", "_reading", "_tail", "_text", "_twins", "_window", "on")

    def __init__(self, finder: Finder, reading: int = TERMINAL) -> None:
        self._finder = finder
        # (The last max_len bytes, and an ESC sequence begun before them: an OSC is up to 516.)
        self._keep = finder.max_len + _OSC_READS
        self._window = _view_window(finder)
        self._text = b""
        self._tail = b""  # the last bytes sent, as they were (see sent)
        self._begun = False  # the text ends inside filler (an ESC sequence begun): more is filler
        self._clean = 0  # bytes sent since the last that held filler
        self._reading = reading  # (see skeleton)
        self._twins: tuple[_Skeleton, ...] = ()  # the other readings, once they may differ
        self.on = False

    def copy(self) -> _Skeleton:
        twin = _Skeleton(self._finder, self._reading)
        twin._text, twin._begun, twin._clean, twin.on = self._text, self._begun, self._clean, self.on
        twin._tail = self._tail
        twin._twins = tuple(t.copy() for t in self._twins)
        return twin

    def _other_readings(self, data: bytes) -> tuple[_Skeleton, ...]:
        """The other readings' skeletons, begun from this one when ``data`` is the first to hold a
        sequence (the readings were one until then)."""
        if not self._twins and self._reading == TERMINAL and _readings_differ(data):
            twins = (_Skeleton(self._finder, PRINTED), _Skeleton(self._finder, STRIPPED))
            for twin in twins:
                twin._text, twin._clean, twin.on, twin._tail = self._text, self._clean, self.on, self._tail
            self._twins = twins
        return self._twins

    def check(self, pending: bytes, open_end: bool) -> bool:
        """Refuse a value that the skeleton followed by ``pending`` (bytes not sent yet, the values
        found in them replaced) holds, plainly or lowercased, in either reading; with ``open_end``,
        not one that more bytes could make part of a longer one (see _settled). True: that skeleton
        ends in MIN_HOLD or more bytes that could begin a value (hold ``pending``). Asked when
        :attr:`on`, or when ``pending`` holds filler: the views drop each kind, but not three kinds
        mixed."""
        hold = self._check(pending, open_end)
        for twin in self._other_readings(pending):
            hold = twin._check(pending, open_end) or hold
        return hold

    def _check(self, pending: bytes, open_end: bool) -> bool:
        f = self._finder
        region = skeleton(self._text + pending, reading=self._reading)
        views = [region]
        if not f.nowhere(region) and (low := region.lower()) != region:
            views.append(low)
        for view in views:
            hits = f.hits(view)
            if open_end:
                hits = _settled(f, view, hits)
            if hits:
                first = hits[0].pattern
                raise ScrubRefused(first.secret, _RUN if first.part else _SPREAD)
        # (Asked of the end as it is and without filler begun there: its bytes may be the value's.)
        begun = _filler_begun(region)
        ends = (region, region[: begun.start()]) if begun is not None else (region,)
        for end in ends:
            tail = end[-f.max_len :]
            if f.holdback(tail, PART_HOLD) >= MIN_HOLD or f.holdback(tail.lower(), PART_HOLD) >= MIN_HOLD:
                return True
        return False

    def ends_at(self, seam: bytes) -> bool:
        """Whether every reading ends with ``seam`` (blanks and line ends, which each keeps), nothing
        begun there: off, the skeleton is the bytes sent (none held filler), which the caller asks."""
        if not self.on:
            return True
        return not self._begun and self._text.endswith(seam) and all(t.ends_at(seam) for t in self._twins)

    def sent(self, data: bytes) -> None:
        """``data`` went out."""
        for twin in self._other_readings(data):
            twin.sent(data)
        # (Asked of the last bytes sent with these: an escape of filler that the pieces sent cut,
        # ``\\u2`` then ``00b``, a piece of a byte or two, is filler. Asked of each piece alone,
        # the skeleton stayed off, or went off after a window of such pieces, and a value spread
        # so went out whole.)
        probe = self._tail + data
        self._tail = probe[-_OFF_TAIL:]
        if not self._begun and not _has_filler(probe):
            if self.on:
                self._clean += len(data)
                if self._clean >= self._window:
                    self.on, self._text, self._clean, self._twins = False, b"", 0, ()
                    return
                self._text = (self._text + data)[-self._keep :]
            return
        if not self.on:
            data = probe  # (off, the text is empty: the filler's escape may have begun in the tail)
        self.on, self._clean = True, 0
        raw = self._text + data
        if self._reading == STRIPPED:
            # (strip-ansi reads a sequence whole or not at all: one begun at the end is kept as it
            # came, and read with what follows it.)
            at = max(raw.rfind(b"\x1b", len(raw) - _ANSI_READS), raw.rfind(b"\xc2\x9b", len(raw) - _ANSI_READS))
            if at >= 0:
                self._text, self._begun = (skeleton(raw[:at], reading=STRIPPED) + raw[at:])[-self._keep :], True
                return
        text, self._begun = _begun_end(skeleton(raw, reading=self._reading))
        self._text = text[-self._keep :]


# -- decodings opened before a stream's window ---------------------------------------------------
# A stream reads each read with the window of bytes it sent before it (_view_window), cut at a byte
# count. Some decodings read from an opener that may lie farther back (red team 44): a UTF-7 run's
# ``+`` (its text is base64 of UTF-16, read in units from there), a JWT's ``eyJ`` (base64url of its
# JSON, read in quartets from there), an RFC 2047 encoded-word's ``=?utf-8?b?`` (the same), and a MIME
# part's declaration of base64 (every byte outside the alphabet dropped after it). A window that
# begins inside such a run read none of it, and a value begun there and ended after it passed, where
# the body read whole is refused. :class:`_Opened` follows what leaves the window: where the run the
# window begins inside began, and what opened it; its views are then of the window with the opener
# put back before it, padded so that the window's bytes fall on the units they fall on in the run
# (``+`` and ``A`` up to eight characters: 48 bits, three UTF-16 units; ``.eyJ`` or ``=?x?b?`` and
# up to three: a quartet). A declaration, once past, holds for the rest of the stream, as it does for
# a body read whole. (A later opener that makes earlier bytes decode otherwise -- an ended UTF-7
# run, ``.eyJ`` or a declaration after the bytes it opens -- is read only within the window.)
#
# Bytes, by the runs they end: 0, what a UTF-7 run, a JWT's and an encoded-word's text are made of;
# 1, ``-`` and ``_`` (a JWT's and an encoded-word's); 2, an encoded-word's other characters; 3, none.
_RUN_CLASSES = bytes(
    0 if chr(b).isascii() and (chr(b).isalnum() or chr(b) in "+/")
    else 1 if chr(b) in "-_"
    else 3 if b in b"? \t\n\r\x0b\x0c\x01"
    else 2
    for b in range(256)
)  # fmt: skip
_WORD_HEAD = re.compile(rb"=\?[^?\s\x01]{1,40}\?([bBqQ])\?\Z")  # (an encoded-word up to its text)
_PROBE = 64  # bytes of what left the window whose runs are found first (a text's end its last word)


class _Opened:
    """What leaves a stream's window, in order (:meth:`drop`): where the run of each kind the
    window's first byte is in began, and the opener before it; :meth:`prefixes`, what to read the
    window after (see above)."""

    __slots__ = ("_at", "_b64", "_before", "_head", "_plus", "_word", "_word_kind", "declared")

    def __init__(self) -> None:
        self._at = 0  # bytes dropped: where the window begins
        self._plus = -1  # the ``+`` of the UTF-7 run the dropped bytes end inside, or -1
        self._b64 = 0  # where the run of base64url characters they end with began, and its first bytes
        self._head = b""
        self._word = 0  # where the run of an encoded-word's characters they end with began, and its kind
        self._word_kind = b""  # (``b``, ``q``: when an encoded-word's opener is right before it)
        self._before = b""  # the last bytes dropped
        self.declared = False  # a MIME part declared base64 in what was dropped

    def drop(self, data: bytes, after: bytes) -> None:
        """``data`` left the window; ``after``, the window's first bytes after it."""
        n = len(data)
        if not n:
            return
        at = self._at
        self._at += n
        off = max(0, n - _PROBE)
        c = data[off:].translate(_RUN_CLASSES)
        if off and (c.find(b"\x03") < 0 or c.find(b"\x02") < 0 or c.find(b"\x01") < 0):
            off, c = 0, data.translate(_RUN_CLASSES)  # (a run longer than the probe: the bytes' own)
        l3 = c.rfind(b"\x03")
        l2 = max(l3, c.rfind(b"\x02"))
        l1 = max(l2, c.rfind(b"\x01"))
        if l1 >= 0:  # a UTF-7 run ended there: the one after it opens at its first ``+``
            i = data.find(b"+", off + l1 + 1)
            self._plus = at + i if i >= 0 else -1
        elif self._plus < 0 and (i := data.find(b"+")) >= 0:
            self._plus = at + i
        if l2 >= 0:
            self._b64, self._head = at + off + l2 + 1, data[off + l2 + 1 : off + l2 + 4]
        elif len(self._head) < 3:
            self._head += data[: 3 - len(self._head)]
        if l3 >= 0:
            start = off + l3 + 1
            self._word = at + start
            m = _WORD_HEAD.search((self._before + data[:start])[-64:])
            self._word_kind = m.group(1) if m is not None else b""
        if not self.declared and _mime_base64(self._before + data + after[:128]):
            self.declared = True
        kept = (self._before + data)[-128:] if n < 128 else data[-128:]
        if kept[:1] in (b" ", b"\t", b"\r", b"\n") and (self._before or n > 128):
            # A run of blanks that began before: the text before it kept (a declaration's name
            # and colon, its blanks any number: red team 44), the run as one blank.
            joined = self._before + data
            run = _blanks_before(joined, len(joined) - len(kept))
            kept = joined[max(0, run - 64) : run] + b" " + kept.lstrip(_MIME_BLANKS)
        self._before = kept

    def prefixes(self, window: bytes) -> list[bytes]:
        """What to read ``window`` (the window, which begins where the dropped bytes end) after: one
        prefix for each kind of run it begins inside whose opener was dropped (each read apart: their
        units differ); none when it begins inside none and nothing was declared."""
        out: list[bytes] = []
        if window:
            kind = _RUN_CLASSES[window[0]]
            at = self._at
            if kind == 0 and self._plus >= 0:
                out.append(b"+" + b"A" * ((at - self._plus - 1) % 8))
            head = self._head if len(self._head) >= 3 else (self._head + window[:3])[:3]
            # (A run that begins where the window does lost what is before it: a JWT's dot, which
            # the view asks for, an encoded-word's opener.)
            if kind <= 1 and head == b"eyJ" and at >= self._b64:
                out.append(b".eyJ" + b"A" * ((at - self._b64 - 3) % 4))
            if kind <= 2 and self._word_kind and at >= self._word:
                pad = b"A" * ((at - self._word) % 4) if self._word_kind in b"bB" else b""
                out.append(b"=?x?" + self._word_kind + b"?" + pad)
        if self.declared:
            return [_DECLARED + p for p in out] or [_DECLARED]
        if window[:1] in (b" ", b"\t", b"\r", b"\n") and self._declaring():
            # The window begins in the blanks after a declaration's colon, its name dropped: read
            # after the name, as the part read whole is (its ``base64`` may yet come: red team 44).
            return [_DECLARING + p for p in out] or [_DECLARING]
        return out

    def _declaring(self) -> bool:
        """Whether what left the window ends with a declaration's name, a colon and blanks."""
        text = self._before.rstrip(_MIME_BLANKS)
        return text.endswith(b":") and text[:-1].rstrip(_MIME_BLANKS)[-len(_FIELD_NAME) :].lower() == _FIELD_NAME


_DECLARED = b"Content-Transfer-Encoding: base64\n"  # (a declaration dropped from the window, kept)
_DECLARING = b"Content-Transfer-Encoding:"  # (one whose value had not come, kept)


class BodyScrubber:
    def __init__(self, finder: Finder, on_hit: OnHit) -> None:
        self._finder = finder
        self._on_hit = on_hit
        self._held = b""
        self._view_hold = _view_window(finder)
        self._window = b""  # the last bytes sent, for values in escapes that began there
        self._opened = _Opened()  # what left the window (a run it begins inside: see _Opened)
        self._prefixes: list[bytes] = []  # what to read the window after, by _opened
        self._escaped = False  # escapes seen: hold back enough to see an escaped value whole
        self._skeleton = _Skeleton(finder)
        self._held_max = held_bound(finder)
        # ASIDE_FROM bytes or more are held (a view or the skeleton ends in what could begin a value,
        # or escapes keep a window): reads that add little are kept aside, unchecked, until they add
        # a sixteenth (see feed): what would have gone out waits for at most that many more bytes.
        self._long_hold = False
        self._aside: list[bytes] = []
        self._aside_size = 0

    def feed(self, chunk: bytes) -> bytes:
        if self._long_hold:
            size = self._aside_size + len(chunk)
            if _set_aside(size, len(self._held), len(self._held) + self._aside_size, self._held_max):
                self._aside.append(chunk)
                self._aside_size = size
                return b""
            if self._aside:
                chunk = b"".join([*self._aside, chunk])
                self._aside, self._aside_size = [], 0
        f = self._finder
        buf = self._held + chunk if self._held else chunk
        # The bytes that could begin a value are held, and a hit among them is not final (a run
        # of the value found there may be the beginning of the whole: see _settled).
        keep = _plain_hold(f, buf)
        hits = _settled(f, buf, f.hits(buf))
        if (partial := _PARTIAL_ESCAPE.search(buf[-_PARTIAL_MAX:])) is not None:
            keep = max(keep, len(partial.group(0)))  # wait for the rest of an escape cut in two
        replaced = _replace(buf, hits, None)
        if self._escaped or self._prefixes or _has_escapes(self._window[-48:] + buf):
            self._escaped = True
            # One set of views for both questions: the replaced bytes differ from the received
            # ones only inside whole values, never in a tail that could begin one.
            region = self._window + replaced
            _check_padding(region)
            for read in [p + region for p in self._prefixes] if self._prefixes else [region]:
                decoded = _views_for(read, f)
                _check_views(read, f, decoded, open_end=True)
                if _view_ends_in_prefix(f, read, decoded):
                    keep = len(buf)  # a value's encoding has begun: hold it until it ends (or is refused)
            keep = max(keep, min(len(buf), self._view_hold))
        else:
            _check_case(self._window[-f.max_len :] + replaced, f, open_end=True)
        if (self._skeleton.on or _has_filler(replaced)) and self._skeleton.check(replaced, open_end=True):
            keep = len(buf)  # a value spread with filler has begun: hold it until it ends
        cut = len(buf) - keep
        for h in hits:  # never cut through a value: what straddles the cut stays held, whole
            if h.start < cut < h.end:
                cut = h.start
                break
        if len(buf) - len(chunk) - cut > self._held_max:  # (bytes of earlier reads still held)
            raise ScrubRefused("", _HELD_PAST)
        # (A hold of ASIDE_FROM bytes or more is one a small read rarely lets go of: a value's
        # beginning, or the window that escapes keep. Read a byte a read, each check of the hold
        # and the window made the bytes' work grow with the window: ~1 ms a byte; red team 21.)
        self._long_hold = len(self._held) >= ASIDE_FROM
        self._held = buf[cut:]
        out = _replace(buf[:cut], [h for h in hits if h.end <= cut], self._on_hit)
        if out:
            window = self._window + out
            if len(window) > self._view_hold:
                cut = len(window) - self._view_hold
                self._opened.drop(window[:cut], window[cut : cut + 128])
                window = window[cut:]
                self._prefixes = self._opened.prefixes(window)
            self._window = window
            self._skeleton.sent(out)
        return out

    def sent_state(self) -> tuple[bytes, _Skeleton, bool]:
        """The last bytes sent (the window), the skeleton of what was sent, and whether a MIME part
        declared base64 before the window: for a token stream's reading of its bytes as a body's
        (:class:`_BodyReading`) that goes on from here."""
        return self._window, self._skeleton, self._opened.declared

    def finish(self) -> bytes:
        held, self._held = b"".join([self._held, *self._aside]), b""
        self._aside, self._aside_size, self._long_hold = [], 0, False
        if not held:
            return b""
        hits = self._finder.hits(held)
        out = _replace(held, hits, self._on_hit)
        for p in self._prefixes or (b"",):
            _check_views(p + self._window + out, self._finder)
        if self._skeleton.on or _has_filler(out):
            self._skeleton.check(out, open_end=False)
        return out


# -- a token stream's bytes read as a body's -----------------------------------------------------
# A token stream is read event by event: each event's bytes as :func:`scrub_field` reads a field, its
# texts stitched by path. But a client may read the bytes as a body all the same (``base64 -d`` of a
# PEM block after a ``data:`` line, an email parser on a MIME part, a terminal or a cleaning client
# on a key whose characters record separators part, each a line and so an event of its own: red team
# 44). So the bytes are also read across events as :class:`BodyScrubber` reads a body (every decoded
# view, the skeleton), for refusals: a value found there closes the stream, and an event whose
# reading ends with MIN_HOLD or more bytes that could begin one is held (with the events after it)
# until the next shows whether it does.
#
# Cheaply: reading each event with the last window of bytes before it cost a token stream's event
# 25-70 us (views of ~5 KiB), a fifth to a half of its whole cost. Most events end where no reading
# can go on into the next (a *hard* end, :func:`_hard_end`): SSE's blank line after ``}``, a JSON line's
# ``}`` and line end. No reading crosses such an end, so after it the next event read alone is read
# as a body's would be: its own reading (scrub_field's, already made) is the body's, and the bytes
# before it are not read again. Past an end that is not hard (a line of base64, a record separator,
# a soft line break), events are read with the window of bytes before them, as a body is, until one
# ends hard. What one event holds can also change how the bytes around it decode, whatever lies
# between (:func:`_opens`): a JWT's payload (``.eyJ``: every ``eyJ`` run is then decoded), a UTF-7 run
# ended by ``-`` (every run then), a MIME part declaring base64 (every byte outside the alphabet then
# dropped, for the rest of the stream, as a body read whole reads it); and bytes above 0x7F (the
# cleaning client's view of the body drops the controls of an ASCII line beside them). Events near
# one are read with the window too. What this costs a token stream's event: 2-5 % (bench/scrub.py's
# rows, callgrind), nearly all of it in asking each event's end and openers (_event_end).
_SEAM = b" \t\r\n"
_WRAPS = frozenset(b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/=_-")  # (_B64's)
_SEAM_BYTES = frozenset(_SEAM)
# Line ends other than CR and LF (splitlines', which end a token stream's line), and blanks.
_LOOSE_END = re.compile(rb"(?:[ \t\r\n\x0b\x0c\x1c-\x1e]|\xc2\x85|\xe2\x80[\xa8\xa9])+\Z")


def _other_views(data: bytes, decoded: list[bytes] | None) -> list[bytes]:
    """``decoded`` (views of ``data``) but ``data`` lowercased, which reads as ``data`` does here
    (its line ends, the byte before them, its openers: a JWT's payload is read case-sensitively, a
    UTF-7 run and a declaration in any case): most events' only view."""
    if not decoded or (len(decoded) == 1 and len(decoded[0]) == len(data)):
        return []  # (its one view as long as itself: lowercased, as no decoding that applies keeps a length)
    low = None
    out = []
    for v in decoded:
        if len(v) == len(data):
            if low is None:
                low = data.lower()
            if v == low:
                continue
        out.append(v)
    return out


def _hard_end(data: bytes, decoded: list[bytes], skeletons: list[bytes] | None) -> bool:
    """Whether no reading of ``data`` followed by more bytes reads across where ``data`` ends: it
    ends with blanks and a line end or more (LF or CRLF: a lone CR is filler to the skeleton), which
    no decoding of it has taken out (a soft line break, an escape's blank, an encoded-word's or a
    continuation's joint; the base64-only view), and no decoding could take out given what follows
    (checked in ``data`` and each view of it, ``decoded`` but ``data`` lowercased: the byte before
    them is no ``;``, which begins a continuation's joint; no base64 character, which wrapped
    base64 goes on from, when they hold one line end only; no ESC in an OSC's reach); nor any
    skeleton reading (``skeletons``: a terminal's control string begun, a soft break). Values hold
    no line end, so nothing after such an end makes one with what came before. (The EBCDIC view
    reads the line ends as other bytes, and is not decoded further.)"""
    return _event_end(data, decoded, skeletons)[0]


def _event_end(data: bytes, decoded: list[bytes] | None, skeletons: list[bytes] | None) -> tuple[bool, bool, bool]:
    """(:func:`_hard_end`, and :func:`_opens`) of ``data``, in as few calls as a token stream's
    every event can afford (a C call costs ~2,000 instructions here: the usual event, ``}`` and a
    blank line, no view but its lowercase, makes four)."""
    body = data.rstrip(_SEAM)
    n = len(data)
    seam = data[len(body) :]
    hard = bool(body) and (data[-1] == 0x0A or seam.find(b"\n") >= 0)
    if hard and len(seam) > 2 and seam.find(b"\r") >= 0:
        hard = seam.count(b"\r") == seam.count(b"\r\n")  # (no lone CR)
    if hard:
        last = body[-1]
        if last == 0x3B or (last in _WRAPS and seam.count(b"\n") + seam.count(b"\r") - seam.count(b"\r\n") < 2):
            hard = False
    runs = declares = False
    ebcdic: list[bytes] | None = None
    for v in (data, *decoded) if decoded else (data,):
        # (What a JWT's payload, a UTF-7 run and an OSC hold, in one pass; a declaration, ``64``.)
        if len(v.translate(None, b"J+\x1b")) != len(v):
            runs = (
                runs
                or (v.find(b"J") >= 0 and v.find(b".eyJ") >= 0)
                or (v.find(b"+") >= 0 and v.find(b"-") >= 0 and _UTF7_ENDED_RUN.search(v) is not None)
            )
            hard = hard and v.find(b"\x1b", max(0, len(v) - _OSC_READS - 8)) < 0
        declares = declares or (v.find(b"64") >= 0 and _mime_base64(v))
        if not hard or v is data:
            continue
        if not v.endswith(seam):
            if len(v) == n:  # (an EBCDIC view keeps the length: no decoding does where it applies)
                ebcdic = _ebcdic(data) if ebcdic is None else ebcdic
                if v in ebcdic:
                    continue
            hard = False
            continue
        at = len(v) - len(seam) - 1
        if at < 0:
            continue
        last = v[at]
        if last in _SEAM_BYTES:  # (the view ends with more blanks or line ends than the bytes do)
            text = v.rstrip(_SEAM)
            if not text:
                continue
            last, at = text[-1], len(text) - 1
        if last == 0x3B:
            hard = False
        elif last in _WRAPS:
            ends = v[at + 1 :]
            hard = ends.count(b"\n") + ends.count(b"\r") - ends.count(b"\r\n") >= 2
    if hard and skeletons is not None:
        hard = all(r.endswith(seam) for r in skeletons)
    return hard, runs, bool(declares)


def _opens(data: bytes, decoded: list[bytes]) -> tuple[bool, bool]:
    """(Whether ``data`` or a view of it, ``decoded``, holds what makes the bytes around it decode
    otherwise -- a JWT's payload, ``.eyJ``, or a UTF-7 run ended by ``-``, which open their view of
    every such run --, whether a MIME part declares base64 there.)"""
    _, runs, declares = _event_end(data, decoded, None)
    return runs, declares


def _held_open(finder: Finder, region: bytes, decoded: list[bytes]) -> bool:
    """Whether ``region`` (bytes of a token stream read as a body's, ending where a reading may go on
    into the next event) or a decoded view of it ends with MIN_HOLD or more bytes that could begin a
    value, as it is or as it reads joined to what may follow: the blanks and line ends it ends with
    taken out (wrapped base64, a soft break, a joint), a continuation's ``;`` before them, an
    unended OSC's text."""
    ends: list[bytes] = []
    for v in (region, region.lower(), *decoded):
        ends.append(v)
        m = _LOOSE_END.search(v, max(0, len(v) - 64))
        text = v[: m.start()] if m is not None else v
        if m is not None:
            ends.append(text)
        if text.endswith(b";"):
            ends.append(text[:-1].rstrip(b" \t").removesuffix(b'"'))
        if (at := v.rfind(b"\x1b", max(0, len(v) - _OSC_READS - 8))) >= 0:
            ends.append(v[:at])
    return _view_ends_in_prefix(finder, b"", ends, ebcdic=False)


class _BodyReading:
    """A token stream's bytes read as a body's (see above), event by event, for refusals and holds:
    :meth:`add` each event as :func:`_read_field` read it; :meth:`first_held`, the earliest event it
    holds (it, and every event after it, must wait)."""

    __slots__ = (
        "_all_held", "_controls_until", "_declared", "_finder", "_hard", "_held", "_held_size", "_max",
        "_opener_until", "_pos", "_sent", "_sent_size", "_skeleton", "_unchecked", "_wide_until",
    )  # fmt: skip

    def __init__(self, finder: Finder) -> None:
        self._finder = finder
        self._max = _view_window(finder)
        self._sent: deque[bytes] = deque()  # the events let go, a window of bytes of them (and one more)
        self._sent_size = 0
        self._held: list[tuple[int, bytes]] = []  # (event, its bytes) held
        self._held_size = 0
        self._unchecked = 0  # bytes of them not checked yet (all held: see add)
        self._all_held = False
        self._hard = True  # what was let go ends hard (or nothing was): the next event may be read alone
        self._skeleton: _Skeleton | None = None  # the skeleton since the last hard end
        self._pos = 0  # bytes added
        # Until where (bytes added) an event that changes how the bytes around it decode is in the
        # window: events that begin before are read with the window.
        self._opener_until = 0
        self._wide_until = 0  # (an event with a byte above 0x7F)
        self._controls_until = 0  # (an ASCII event with a control)
        self._declared = False  # a MIME part declared base64: every byte after is read under it too

    def seed(self, window: bytes, skeleton: _Skeleton, declared: bool) -> None:
        """Go on from a body read as a body until the stream turned out to be a token stream:
        ``window``, the last bytes it sent, the skeleton of what it sent, and whether a MIME part
        declared base64 before the window."""
        self._declared = declared
        if not window:
            return
        self._sent.append(window)
        end = self._sent_size = self._pos = len(window)
        self._hard, self._skeleton = False, skeleton  # (where it ended is the next event's to tell)
        _, runs, declares = _event_end(window, _other_views(window, views(window)), None)
        self._declared = declared or declares
        if runs:
            self._opener_until = end + self._max
        if not window.isascii():
            self._wide_until = end + self._max
        elif _has_control(window):
            self._controls_until = end + self._max

    def first_held(self) -> int | None:
        return self._held[0][0] if self._held else None

    def add(self, seq: int, read: _Read) -> None:
        """Event ``seq``, as :func:`_read_field` read it (its bytes scrubbed, its views and
        skeletons). May raise ScrubRefused."""
        data, views_read, sparse, skeletons = read
        start = self._pos
        end = self._pos = start + len(data)
        decoded = _other_views(data, views_read) if views_read else None
        hard, runs, declares = _event_end(data, decoded, skeletons)
        # Read alone, as scrub_field read it, unless the stream so far ends where a reading goes
        # on, or something near changes how the bytes around it decode (see above).
        alone = self._hard and start >= self._opener_until and not self._held
        if data.isascii():
            if skeletons is not None:  # (filler in ASCII: a control among others, maybe)
                alone = alone and start >= self._wide_until
                self._controls_until = end + self._max
        else:
            alone = alone and start >= self._controls_until
            self._wide_until = end + self._max
        if runs:
            alone = alone and not self._sent_size
            self._opener_until = end + self._max
        if declares:
            self._declared = True
        alone = alone and not self._declared  # (a declaration opens the bytes before it, and after)
        if hard and alone and not sparse:
            # The usual event: its own reading was the body's, and no reading goes on past it.
            sent = self._sent
            sent.append(data)
            size = self._sent_size + len(data)
            while size - len(sent[0]) >= self._max and len(sent) > 1:
                size -= len(sent.popleft())
            self._sent_size = size
            return
        if self._all_held:
            # (Everything held, more than a window of it: events that add less than a sixteenth
            # wait with it unchecked, as a body's reads do; see _set_aside.)
            self._held.append((seq, data))
            self._held_size += len(data)
            self._unchecked += len(data)
            checked = self._held_size - self._unchecked
            if _set_aside(self._unchecked, checked, self._held_size - len(data), held_bound(self._finder)):
                return
            self._read(data, read, alone=False)
            return
        self._held.append((seq, data))
        self._held_size += len(data)
        self._read(data, read, alone)

    def _read(self, data: bytes, read: _Read, alone: bool) -> None:
        """Read what is held (``data`` last) with the window before it, or alone."""
        f = self._finder
        pending = b"".join(d for _, d in self._held)
        if alone:
            region, decoded, sparse = data, _other_views(data, read[1]), read[2]
        else:
            window = b"".join(self._sent)
            region = (_DECLARED if self._declared else b"") + window[-self._max :] + pending
            if f.nowhere(region) and _plain(region, True):
                decoded, sparse = [], False
            else:
                runs = _binary_views(region, f)
                decoded, sparse = (views(region), False) if runs is None else (runs, True)
                _refuse_in(f, decoded, open_end=True)
                opens, declares = _opens(region, _other_views(region, decoded))  # (across events too)
                if opens:
                    self._opener_until = self._pos + self._max
                self._declared = self._declared or declares
        skeleton = self._skeleton if self._skeleton is not None else _Skeleton(f)
        spread = (skeleton.on or _has_filler(pending)) and skeleton.check(pending, open_end=True)
        hard = not sparse and not self._declared and _hard_end(region, decoded, None)
        if spread or (not hard and _held_open(f, region, decoded)):
            self._skeleton, self._hard = skeleton, False
            self._unchecked = 0
            self._all_held = self._held_size > self._max
            if self._held_size - len(data) > held_bound(f):  # (bytes of earlier events still held)
                raise ScrubRefused("", _HELD_PAST)
            return
        skeleton.sent(pending)
        self._held.clear()
        self._held_size = self._unchecked = 0
        self._all_held = False
        self._let_go(pending)
        self._hard = hard and skeleton.ends_at(region[len(region.rstrip(_SEAM)) :])
        self._skeleton = None if self._hard else skeleton

    def _let_go(self, data: bytes) -> None:
        sent = self._sent
        sent.append(data)
        self._sent_size += len(data)
        while len(sent) > 1 and self._sent_size - len(sent[0]) >= self._max:
            self._sent_size -= len(sent.popleft())

    def finish(self) -> None:
        """The stream ended: refuse what is held if it holds a value, now that nothing follows."""
        if not self._held:
            return
        pending = b"".join(d for _, d in self._held)
        window = b"".join(self._sent)
        _check_views((_DECLARED if self._declared else b"") + window[-self._max :] + pending, self._finder)
        skeleton = self._skeleton if self._skeleton is not None else _Skeleton(self._finder)
        if skeleton.on or _has_filler(pending):
            skeleton.check(pending, open_end=False)
        self._held.clear()
        self._held_size = self._unchecked = 0
        self._all_held = False


@dataclass(slots=True)
class _Piece:
    segment: int
    data: bytes

    def __init__(self, segment: int, data: bytes) -> None:  # (written out: see proxy.native, "Dataclasses")
        self.segment, self.data = segment, data


class SegmentedScrubber:
    """One stream made of segments (WebSocket messages; the text of one SSE path, event by event).

    Values inside a segment are replaced (or, with ``replace=False``, refused); a value spanning
    two segments is refused. Within a segment any tail that could begin a value is held back. At a
    segment's end (:meth:`end_segment`) a held tail of ``MIN_HOLD`` bytes or more stays held -- the
    caller must not complete the segment toward the agent until a later segment resolves it -- and
    a shorter one goes out, so a message ending in a letter that happens to begin some value is not
    delayed: if the next segment then completes a value, the stream is refused, and the agent has
    seen at most ``MIN_HOLD - 1`` of its characters."""

    def __init__(
        self,
        finder: Finder,
        on_hit: OnHit,
        *,
        replace: bool = True,
        min_hold: int = MIN_HOLD,
        ebcdic: bool = True,
        views: bool = True,
    ) -> None:
        """``ebcdic``: read bytes above 0x7F as EBCDIC too, and as a cleaning client reads text
        (:mod:`proxy.core.fold`; raw bytes: not text decoded from JSON, whose leaves a token stream
        folds on paths of their own). ``views``: search the decoded views too; without, only the
        value forms as they are and in another case (bytes a client decoded from base64 pieces:
        see PathStitcher._pieces)."""
        self._ebcdic = ebcdic
        self.views = views
        self._finder = finder
        self._on_hit = on_hit
        self._replace = replace
        self._min_hold = min_hold
        self._held: list[_Piece] = []  # bytes not yet emitted, by segment
        self._history = b""  # the last bytes emitted: a value starting there spans a boundary
        self._history_plain = True  # no byte of the history starts a decoding (see _plain)
        # (Without views, a value reaching into the next text begins in the last max_len bytes.)
        self._window = _view_window(finder) if views else finder.max_len
        # The last tail whose hold-back was computed, and that hold-back: feed and end_segment ask
        # it of the same stream's end (history + held), so a token stream's path asks it once.
        self._hold_memo: tuple[bytes, int, int] = (b"", 1, 0)
        self._version = 0  # texts fed (feed, pass_clean): what open_end's memo is of
        self._end_memo: tuple[int, bytes] = (0, b"")
        # The last token-stream event that brought this stream a text not empty, -1 for none
        # (PathStitcher's bookkeeping: which other paths' ends its next text may continue).
        self.text_seq = -1
        # (That event, the plain path of the leaf that text was, and the positional output fields
        # this stream's path names: recorded in events _cross asks.)
        self.leaf: tuple[int, str, tuple[str, ...]] = (-1, "", ())
        # A text this stream takes without changing: :meth:`pass_clean` left its history as it was
        # (a constant leaf -- a chunk's ``id``, ``model`` or ``object``, sent in every event -- once
        # the window is nothing but its repeats). Fed it again with nothing held, the stream would
        # search the same bytes and end as it is: see :meth:`unchanged_by`.
        self._steady: bytes | None = None
        self._skeleton = _Skeleton(finder)
        # Everything held, more than a window of it, by the last drain: texts that add less than a
        # sixteenth to it wait with it unchecked (see feed).
        self._all_held = False
        self._held_size = 0  # bytes held, as of the last drain and the texts added since
        self._unchecked = 0  # of them, added since

    def _hold(
        self, hist: bytes, held: bytes, escaped: bool | None, decoded: list[bytes] | None = None, end: bool = False
    ) -> int:
        """The trailing bytes of ``hist + held`` that could begin a value, as is or in another case
        (its plain part remembered for the same tail); all of them when a decoded view ends with
        ``MIN_HOLD`` or more bytes that could begin one (an encoded value's offsets in the raw bytes
        are not the view's: hold everything). ``escaped``: whether a decoding applies to them, when
        the caller knows; ``decoded``: their views, when the caller made them. ``end``: for what
        stays held at a segment's end, where a run's piece begun counts from PART_HOLD bytes."""
        f = self._finder
        n = f.max_len
        tail = held[-n:] if len(held) >= n else hist[max(0, len(hist) - n + len(held)) :] + held
        part_from = PART_HOLD if end else 1
        memo_tail, memo_from, keep = self._hold_memo
        if tail != memo_tail or part_from != memo_from:
            keep = _tail_hold(f, tail, part_from)
            self._hold_memo = (tail, part_from, keep)
        size = len(hist) + len(held)
        if keep < size and escaped is not False:
            region = hist + held
            if (escaped or _has_escapes(region, self._ebcdic)) and _view_ends_in_prefix(
                f, region, decoded, ebcdic=self._ebcdic
            ):
                return size
        return keep

    @property
    def finder(self) -> Finder:
        return self._finder

    def held_segments(self) -> set[int]:
        return {p.segment for p in self._held if p.data}

    def idle(self) -> bool:
        """Nothing held, and nothing sent lately that could begin a value, plainly or decoded (a view
        ending in even one character of one, or in an escape cut short: fewer than MIN_HOLD such
        characters are let go, and the rest may come): forgetting this stream loses nothing a later
        segment could complete."""
        if self.held_segments():
            return False
        hist = self._history
        if self._hold(hist, b"", False if self._history_plain else None, end=True) != 0:
            return False
        if self._skeleton.on and self._skeleton.check(b"", open_end=True):
            return False
        return self._history_plain or not _ends_open(self._finder, hist, self._ebcdic)

    def loose_ends(self) -> list[tuple[bytes, tuple[str, bytes]]] | None:
        """For a stream forgotten though not idle (:meth:`PathStitcher._forget_one`): (rest,
        (secret, begun)) of every value form its history ends with a proper prefix (``begun``) of,
        as is or lowercased -- ``rest`` is what a later text would have to begin with to complete
        it. None when that does not sum it up: something is held, or a decoded view of its
        history ends open."""
        if self.held_segments():
            return None
        hist = self._history
        if not self._history_plain and _ends_open(self._finder, hist, self._ebcdic):
            return None
        tail = hist[-self._finder.max_len :]
        low = tail.lower()
        f = self._finder
        return f.rests(tail, PART_HOLD) + (f.rests(low, PART_HOLD) if low != tail else [])

    def open_end(self) -> bytes:
        """The end of this stream's text (sent and held) that a value begun there would begin with,
        for a text on another path that may continue it (:meth:`PathStitcher._cross`): the bytes that
        could begin one as they are or in another case; when a decoding applies to the bytes and a
        decoded view ends open, all the bytes a view reads (the window). Empty: nothing could."""
        version, end = self._end_memo
        if version == self._version:
            return end
        hist = self._history
        held = b"".join(p.data for p in self._held) if self._held else b""
        region = hist + held if held else hist
        if len(region) > self._window:
            region = region[-self._window :]
        if (
            self.views
            and not (self._history_plain and _plain(held, self._ebcdic))
            and (_has_escapes(region, self._ebcdic) or _ends_in_cut_escape(region))
            and _ends_open(self._finder, region, self._ebcdic)
        ):
            end = region  # (an escape cut by the end too: ``%6`` | ``b...`` decodes across the seam)
        else:
            keep = self._hold(hist, held, False, end=True)  # (the plain tail's: remembered from the last feed)
            end = region[len(region) - keep :] if keep else b""
        self._end_memo = (self._version, end)
        return end

    def begun(self) -> bool:
        """Whether any text has been fed (and not all of it empty)."""
        return bool(self._history or self._held)

    def seed(self, history: bytes) -> None:
        """Begin a stream not begun with ``history`` as what was sent before its first text: what a
        forgotten path had begun of a value that this stream's text continues (PathStitcher's
        _loose_end), so that the stream holds and refuses as that path would have."""
        if not self.begun():
            self._history = history
            self._history_plain = not self.views or _plain(history, self._ebcdic)
            self._skeleton.sent(history)
            self._version += 1

    def held_pieces(self) -> list[tuple[int, bytes]]:
        """(segment, bytes) of everything held, unchecked, in order."""
        return [(p.segment, p.data) for p in self._held]

    def text_kept(self) -> bytes:
        """The last bytes of the text (sent and held) this stream keeps: all of it while shorter
        than the window a stream keeps (see _view_window)."""
        held = b"".join(p.data for p in self._held) if self._held else b""
        return self._history + held

    def take_held(self) -> bytes:
        """Everything held, unchecked (for a stream that is let through anyway)."""
        held, self._held = self._held, []
        self._all_held, self._held_size, self._unchecked = False, 0, 0
        self._version += 1
        return b"".join(p.data for p in held)

    def feed(self, data: bytes, segment: int) -> list[tuple[int, bytes]]:
        """Add ``data`` to ``segment``; returns (segment, bytes to emit) in order."""
        self._version += 1
        if self._held and self._held[-1].segment == segment:
            self._held[-1].data += data
        else:
            self._held.append(_Piece(segment, data))
        if self._all_held:
            # (Nothing goes out until what follows the held bytes shows whether they begin a value.)
            self._held_size += len(data)
            self._unchecked += len(data)
            checked = self._held_size - self._unchecked
            if _set_aside(self._unchecked, checked, self._held_size - len(data), held_bound(self._finder)):
                return []
        out = self._drain(hold_all=True)
        carried = self._held_size - len(data)  # (bytes of earlier feeds still held)
        if carried > HELD_MIN and carried > held_bound(self._finder):
            raise ScrubRefused("", _HELD_PAST)
        return out

    def clean_candidate(self) -> bytes | None:
        """For a segment checked with others in one search (:meth:`PathStitcher.add`): the bytes
        before it that a value reaching into it could begin in, when nothing is held and no
        decoding applies to them; None when this stream must take the segment by :meth:`feed`."""
        if self._held or not self._history_plain:
            return None
        hist = self._history
        n = self._finder.max_len
        return hist[len(hist) - n + 1 :] if len(hist) >= n else hist

    def clone(self) -> SegmentedScrubber:
        """A stream in this one's state, to go on apart from it (:meth:`PathStitcher._skipped`)."""
        # (Every attribute by name, not copy.copy: compiled, the class has no __dict__ to copy. A
        # test holds this to every attribute __init__ sets.)
        twin = SegmentedScrubber(self._finder, self._on_hit, replace=self._replace, min_hold=self._min_hold,
                                 ebcdic=self._ebcdic, views=self.views)  # fmt: skip
        twin._held = [_Piece(p.segment, p.data) for p in self._held]
        twin._skeleton = self._skeleton.copy()
        twin._history, twin._history_plain, twin._window = self._history, self._history_plain, self._window
        twin._hold_memo, twin._version, twin._end_memo = self._hold_memo, self._version, self._end_memo
        twin.text_seq, twin.leaf, twin._steady = self.text_seq, self.leaf, self._steady
        twin._all_held, twin._held_size, twin._unchecked = self._all_held, self._held_size, self._unchecked
        return twin

    def unchanged_by(self, data: bytes) -> bool:
        """Whether :meth:`pass_clean` of ``data`` would change nothing: the last text it passed,
        which left the history as it found it, nothing held since (so the history is still that one
        and plain), and ``data`` the same text: its search, before it in the same history, is the
        one that found it clean, and the history it leaves is the same again."""
        return self._steady == data and not self._held

    def pass_clean(self, data: bytes) -> bool:
        """A whole segment that, with its :meth:`clean_candidate` before it, holds no value in any
        case and nothing a decoding applies to: emitted (True), unless its end could begin a value
        and must be held (False: take it by :meth:`feed` and :meth:`end_segment` instead). What
        :meth:`feed` then :meth:`end_segment` would do, without the search each repeats."""
        hist = self._history
        if self._hold(hist, data, False, end=True) >= self._min_hold:
            return False
        filler = self._skeleton.on or _has_filler(data)
        if filler and self._skeleton.check(data, open_end=True):
            return False
        if filler:
            self._skeleton.sent(data)
        self._version += 1
        history = hist + data
        if len(history) > self._window:
            history = history[-self._window :]
        self._steady = data if history == hist else None
        self._history = history
        return True

    def end_segment(self) -> list[tuple[int, bytes]]:
        """The latest segment is complete: release its tail if it is too short to hold."""
        if self._unchecked:
            return []  # (all held, and texts added since unchecked: they wait with it, see feed)
        held = b"".join(p.data for p in self._held)
        if not held:
            return []
        escaped = False if self._history_plain and (not self.views or _plain(held, self._ebcdic)) else None
        if self._hold(self._history, held, escaped, end=True) < self._min_hold and not (
            (self._skeleton.on or _has_filler(held))
            and self._skeleton.check(_replace(held, self._finder.hits(held), None), open_end=True)
        ):
            return self._drain(hold_all=False)
        return []

    def finish(self) -> list[tuple[int, bytes]]:
        return self._drain(hold_all=False)

    def _drain(self, hold_all: bool) -> list[tuple[int, bytes]]:
        f = self._finder
        hist = self._history
        pieces = self._held
        held = pieces[0].data if len(pieces) == 1 else b"".join(p.data for p in pieces)
        # (Whether a decoding applies, asked of the window only when some byte there or in
        # ``held`` starts one: the history's answer is kept as it grows.)
        held_plain = not self.views or _plain(held, self._ebcdic)
        escaped = not (self._history_plain and held_plain) and _has_escapes(hist + held, self._ebcdic)
        buf = hist + held
        if not escaped and len(hist) >= f.max_len:
            # Without escapes a value that reaches into ``held`` begins in the last max_len - 1
            # bytes sent (case changes no length): only those are searched again, not the whole
            # window kept for encoded values (a token stream's event would cost O(window) a path).
            hist = hist[len(hist) - f.max_len + 1 :]
            buf = hist + held
        base = len(hist)
        found = [h for h in f.hits(buf) if h.end > base]
        if hold_all and found:
            # (A hit in the end that could begin a value waits with it: see _settled.)
            open_from = len(buf) - self._hold(hist, held, False)
            found = [h for h in found if h.start < base or h.start < open_from]
        for h in found:
            if h.start < base:
                raise ScrubRefused(h.pattern.secret, "a real value split across messages or events")
        hits = [_shift(h, base) for h in found]
        if hits and not self._replace:
            first = hits[0].pattern
            raise ScrubRefused(
                first.secret, _RUN if first.part else "a real value split across events or escaped in one"
            )
        bounds: list[int] = []
        at = 0
        for p in self._held[:-1]:
            at += len(p.data)
            bounds.append(at)
        for sh in hits:
            if any(sh.start < b < sh.end for b in bounds):
                raise ScrubRefused(sh.pattern.secret, "a real value split across messages or events")
        replaced = hist + _replace(held, hits, None)
        decoded = None
        if escaped:
            _check_padding(replaced)
            # (Made once: without hits they are also the views of ``hist + held`` the hold asks.)
            decoded = _views_for(replaced, f, self._ebcdic)
            _check_views(replaced, f, decoded, ebcdic=self._ebcdic, open_end=hold_all)
        else:
            _check_case(replaced, f, open_end=hold_all)
        spread = (
            self._skeleton.on or ((not self.views or not held_plain or not held.isascii()) and _has_filler(held))
        ) and self._skeleton.check(replaced[len(hist) :], open_end=hold_all)
        last_end = hits[-1].end if hits else 0
        keep = 0
        if hold_all and last_end < len(held):
            # What could begin a value may have started in bytes already sent: hold all after it.
            if spread:
                keep = len(held)
            elif hits:
                keep = self._hold(b"", held[last_end:], False if held_plain else None)
            else:
                keep = self._hold(hist, held, escaped, decoded)
            keep = min(keep, len(held) - last_end)
            if 0 < keep < len(held) - last_end:
                # Never let go of an escape's start and hold its end: ``\`` sent, ``1`` held (of
                # ``\134``), a client reading the cut stream takes the backslash as is.
                gone = held[: len(held) - keep]
                partial = _PARTIAL_ESCAPE.search((hist[-_PARTIAL_MAX:] + gone)[-_PARTIAL_MAX:])
                if partial is not None and partial.group(0):
                    keep = min(keep + len(partial.group(0)), len(held) - last_end)
        cut = len(held) - keep
        out: list[tuple[int, bytes]] = []
        start = 0
        rest: list[_Piece] = []
        for p in self._held:
            end = start + len(p.data)
            upto = min(end, cut)
            if upto > start:
                mine = [_shift(h, start) for h in hits if start <= h.start and h.end <= upto]
                out.append((p.segment, _replace(p.data[: upto - start], mine, self._on_hit)))
            if end > cut:
                rest.append(_Piece(p.segment, p.data[max(cut - start, 0) :]))
            start = end
        self._held = rest
        self._held_size, self._unchecked = keep, 0
        self._all_held = hold_all and cut == 0 and keep > self._window
        emitted = b"".join(d for _, d in out)
        if emitted:
            if self._skeleton.on or not (held_plain and self.views and emitted.isascii()):
                self._skeleton.sent(emitted)  # (else no filler: _plain holds none of its bytes)
            self._steady = None
            history = self._history + emitted
            if len(history) > self._window:
                history = history[-self._window :]
            self._history = history
            # (plain stays plain while plain bytes are added; once not, asked again as it scrolls)
            self._history_plain = not self.views or _plain(emitted if self._history_plain else history, self._ebcdic)
        return out


class MessageScrubber:
    """WebSocket messages toward the agent: every message one stream (:class:`SegmentedScrubber`: a
    value inside one is replaced, one split over two is refused), and the binary messages again as
    a byte stream of their own. A client that receives a file as binary messages joins them
    whatever text messages come between (progress, acknowledgements), so a value split over two
    binary messages with a text message between is refused too (red team 7). Every binary message,
    those that begin as JSON too: a JSON file sent in pieces begins as JSON and goes on as none.

    The binary stream checks what the first lets out (already replaced: ``replace=False``, it never
    changes a byte) and holds as it does: a binary message whose end could begin a value (MIN_HOLD
    characters or more) holds its rest and every message after it until the next binary message
    says otherwise, or the stream ends. :meth:`held_segments` names every message not all out, so
    the caller completes none of them. The same interface as :class:`SegmentedScrubber`, but
    :meth:`binary` must name a binary message before its first :meth:`feed`."""

    __slots__ = ("_all", "_behind", "_behind_size", "_binary", "_binary_last", "_ended", "_kinds", "_latest")

    def __init__(self, finder: Finder, on_hit: OnHit) -> None:
        self._all = SegmentedScrubber(finder, on_hit)
        self._binary = SegmentedScrubber(finder, lambda _: None, replace=False)
        self._kinds: dict[int, bool] = {}  # segment -> binary, for segments that may be not all out
        self._behind: list[tuple[int, bytes]] = []  # other messages' bytes behind what the binary stream holds
        self._behind_size = 0  # their bytes
        self._binary_last = -1  # the last segment the binary stream was fed
        self._ended: int | None = None  # a binary segment ended whose end the binary stream was not told
        self._latest = -1

    @property
    def finder(self) -> Finder:
        return self._all.finder

    def binary(self, segment: int) -> None:
        self._kinds[segment] = True

    def held_segments(self) -> set[int]:
        held = self._all.held_segments() | self._binary.held_segments()
        held.update(seg for seg, _ in self._behind)
        return held

    def feed(self, data: bytes, segment: int) -> list[tuple[int, bytes]]:
        self._latest = segment
        return self._route(self._all.feed(data, segment))

    def end_segment(self) -> list[tuple[int, bytes]]:
        if self._kinds.get(self._latest, False):
            self._ended = self._latest
        return self._route(self._all.end_segment())

    def finish(self) -> list[tuple[int, bytes]]:
        out = self._route(self._all.finish())
        rest = sorted(self._binary.finish() + self._behind, key=lambda p: p[0])
        self._behind, self._behind_size = [], 0
        return out + rest

    def take_held(self) -> bytes:
        """Everything held, unchecked, in order (for a stream let through anyway)."""
        pieces = sorted(self._binary.held_pieces() + self._behind, key=lambda p: p[0])
        self._binary.take_held()
        self._behind, self._behind_size = [], 0
        return b"".join(d for _, d in pieces) + self._all.take_held()

    def _route(self, out: list[tuple[int, bytes]]) -> list[tuple[int, bytes]]:
        """What the one stream let out: binary messages' bytes through the binary stream; the rest
        behind what that holds. Returns what may go, in order."""
        kinds = self._kinds
        released: list[tuple[int, bytes]] = []
        for seg, chunk in out:
            if kinds.get(seg, False):
                released += self._binary.feed(chunk, seg)
                self._binary_last = seg
            else:
                self._behind.append((seg, chunk))
                self._behind_size += len(chunk)
        ended = self._ended
        if ended is not None and ended not in self._all.held_segments():
            # All of that message is through the first stream: the binary stream's segment ends
            # (unless a later binary message's bytes followed it there: then it ended already).
            if self._binary_last == ended:
                released += self._binary.end_segment()
            self._ended = None
        if not released and not self._behind:
            return []
        held = self._binary.held_segments()
        first = min(held) if held else None
        if not released and first is not None and self._behind[0][0] > first:
            # (Nothing goes: all of it waits behind the same held message, in order.)
            self._check_behind()
            return []
        merged = sorted(released + self._behind, key=lambda p: p[0])  # (stable: a segment's bytes keep their order)
        # Released binary bytes precede what the binary stream holds (a segment's head may go, its
        # tail held); another message's bytes go only before the first held message.
        ready = [p for p in merged if first is None or p[0] <= first]
        self._behind = [p for p in merged if first is not None and p[0] > first]
        self._behind_size = sum(len(d) for _, d in self._behind)
        self._check_behind()
        floor = min(self.held_segments(), default=self._latest)
        for seg in [k for k in kinds if k < floor]:
            del kinds[seg]
        return ready

    def _check_behind(self) -> None:
        if behind_past_bound(len(self._behind), self._behind_size):
            raise ScrubRefused("", _HELD_PAST)


def behind_past_bound(messages: int, size: int) -> bool:
    """Whether WebSocket messages (or their pieces) waiting behind one that holds what could begin a
    value, ``messages`` of them and ``size`` bytes, are past what a stream may keep (see HELD_MIN)."""
    return messages > BEHIND_MESSAGES_MAX or size > BEHIND_MAX


@dataclass(slots=True)
class _Hit:  # a hit moved to other offsets
    start: int
    end: int
    pattern: Any

    def __init__(self, start: int, end: int, pattern: Any) -> None:  # (see proxy.native, "Dataclasses")
        self.start, self.end, self.pattern = start, end, pattern


def _shift(h: Any, by: int) -> _Hit:
    return _Hit(h.start - by, h.end - by, h.pattern)


# -- token streams: SSE and line-delimited JSON --------------------------------------------------

# An SSE event ends at a blank line; a line ends with CRLF, LF or CR (a lone CR: one not
# followed by LF). So a line end followed by another.
_SSE_END = re.compile(rb"(?:\r\n|\n|\r(?!\n))(?:\r\n|\n|\r)")
# A line of line-delimited JSON ends where ``str.splitlines`` ends one (httpx's ``iter_lines``, which
# the ollama client reads with): LF, CR, CRLF, VT, FF, FS, GS, RS, NEL, U+2028, U+2029. (A CR last in
# the buffer may be half a CRLF: it waits.)
_LINE_END = re.compile(rb"\r\n|\n|\r(?=[^\n])|[\x0b\x0c\x1c-\x1e]|\xc2\x85|\xe2\x80[\xa8\xa9]")
_LINE_SPLIT = re.compile(rb"\r\n|[\n\r\x0b\x0c\x1c-\x1e]|\xc2\x85|\xe2\x80[\xa8\xa9]")
STREAM_TYPES = ("application/x-ndjson", "application/ndjson", "application/jsonl", "application/x-jsonlines",
                "application/json-seq", "application/stream+json")  # fmt: skip


class PathStitcher:
    """The text a client stitches together from a token stream's events (SSE events, JSON lines,
    WebSocket messages), one stream per path, checked across events: an event whose text on some
    path ends with what could begin a value is held (:meth:`first_held`) until a later event on
    that path says otherwise; a value split across events is refused. Up to MAX_PATHS paths are
    followed at once (see :meth:`_forget_one`).

    Across paths too (:meth:`_cross`): a client may seed a text from one path and grow it from
    another -- an SDK's snapshot (Anthropic's ``content_block_start``, the Responses API's
    ``content_part.added``) then its deltas. So what a path's text ends with that could begin a
    value (:meth:`SegmentedScrubber.open_end`) is also checked against the next text of every other
    path that had none since: completed there, refused; continued, followed on that path (a
    *seam*) and held as a path's own beginning would be.

    And in index order (:meth:`_order`): a client that puts each text in ``content[index]`` joins
    the outputs by position at the end, so the end of one output and the beginning of the next
    present index are checked together whenever either changes, whatever order they came in."""

    __slots__ = (
        "_crossed", "_finder", "_first_held", "_flagged", "_folded", "_gone", "_holding", "_latest", "_multi",
        "_on_hit", "_one_search", "_open", "_open_of", "_order_held", "_orders", "_outputs", "_paths", "_pending", "_piece_memo",
        "_piece_of", "_refreshed", "_rests", "_runs", "_seam_groups", "_seam_held", "_seams", "_tails",
    )  # fmt: skip

    def __init__(self, finder: Finder, on_hit: OnHit, *, one_search: bool = True) -> None:
        self._finder = finder
        self._on_hit = on_hit
        # False: every path's text fed on its own, never checked with the others in one search
        # (_add_clean): the reference the differential tests hold the one search to.
        self._one_search = one_search
        self._paths: dict[str, SegmentedScrubber] = {}
        self._holding: set[SegmentedScrubber] = set()  # the streams that hold something
        self._first_held: int | None = None
        # What forgotten paths' texts ended with the beginning of: the rest of each such value form
        # (and its secret). A new path's first text is checked against them (_loose_end).
        self._rests: dict[bytes, tuple[str, bytes]] = {}  # rest -> (secret, what was begun)
        # The rests a stream's texts have continued so far (its next text is checked against them).
        self._pending: dict[SegmentedScrubber, dict[bytes, tuple[str, bytes]]] = {}
        # The last bytes of the paths forgotten though not idle, by path (up to MAX_RESTS, the
        # oldest dropped first): a path that comes back begins with them (see _forget_one).
        self._tails: dict[str, bytes] = {}
        self._latest = -1  # the last event that brought some path a text not empty
        # By path: value beginnings another path's end began and this path's texts continued (the
        # next text is checked against them); the first event such a beginning holds, until the
        # next text of any of the paths it was continued on (a leaf's own, tagged and indexed: one
        # of them, a per-token one, may never have another); and those paths.
        self._seams: dict[str, list[bytes]] = {}
        self._seam_held: dict[str, int] = {}
        self._seam_groups: dict[str, list[str]] = {}
        # The open ends of forgotten paths (and their seams), with the last event that brought each
        # a text: for a path followed still whose next text comes after it (a new path's first text
        # is asked of _rests).
        self._gone: dict[bytes, int] = {}
        # The open ends of the streams followed (those not empty), each with its streams, as of the
        # texts of event _refreshed (brought up to date only when a text may continue another path's
        # end): many paths end alike (a per-token path, a letter some value begins with).
        self._open: dict[bytes, set[SegmentedScrubber]] = {}
        self._open_of: dict[SegmentedScrubber, bytes] = {}
        self._refreshed = -1
        self._crossed = -1  # the last event _cross asked about
        self._flagged: set[str] = set()  # own paths a flagged text came on (see _skipped)
        self._folded: set[str] = set()  # own paths a text that folds otherwise came on (see _fork)
        # Positional outputs (see _order): by family (an indexed path up to its last index, the
        # indexes' values left out), its groups (the whole path so), the outputs of each by
        # position; the paths of families with two positions or more (the only ones asked, so a
        # stream of one output pays nothing per event); the outputs followed (all groups); and the
        # neighbouring outputs whose texts together begin a value, held from an event until the
        # family has another text.
        self._orders: dict[str, _Family] = {}
        self._multi: dict[str, tuple[_Family, _Group, _Output]] = {}
        self._outputs = 0
        self._order_held: dict[tuple[int, int], tuple[int, _Family]] = {}
        # The streams of decoded pieces (see _pieces), by the path they were decoded from; texts
        # decoded lately (constant leaves: a chunk's ``id`` or ``model``), and what they gave.
        self._piece_of: dict[str, SegmentedScrubber] = {}
        self._piece_memo: dict[bytes, bytes | None] = {}
        # By path with no piece yet: its last texts while each is wholly base64 and short (see
        # _pieces), as they came: a client decodes each apart, so their boundaries matter.
        self._runs: dict[str, list[bytes]] = {}

    def add(self, seq: int, texts: Iterable[tuple[str, bytes]]) -> None:
        """Event ``seq``'s texts, by path. May raise ScrubRefused."""
        texts = raw = self._pieces(list(texts))
        if self._flagged or self._folded:
            texts = self._skipped(raw)
        touched = self._add_clean(seq, texts) if self._one_search else None
        if touched is None:
            if self._fork_variants(seq, raw):  # (a variant path is new: _add_clean found a path new)
                texts = self._skipped(raw)
            self._cross(seq, texts)
            touched = self._add_each(seq, texts)
        if self._crossed == seq:
            self._note_leaves(seq, texts)
        if self._multi:
            self._order(seq, texts)
        # Only the streams this event touched can have changed: a stream's end_segment decides
        # the same until it is fed again (the hold of the same bytes), so the others are not asked.
        holding = self._holding
        for stream in touched:
            stream.end_segment()
            if stream.held_segments():
                holding.add(stream)
            else:
                holding.discard(stream)
        held = [min(s.held_segments()) for s in holding]
        if self._seam_held:
            held.append(min(self._seam_held.values()))
        if self._order_held:
            held.append(min(at for at, _ in self._order_held.values()))
        self._first_held = min(held) if held else None

    def _pieces(self, texts: list[tuple[str, bytes]]) -> list[tuple[str, bytes]]:
        """The texts, and after each leaf's paths, what a client that decodes each piece of base64
        and appends the bytes (Chat Completions' ``delta.audio.data``, the Realtime API's
        ``response.audio.delta``) stitches, on each of those paths + ``<b64>``: a piece whose length
        is no multiple of 4, or padded, breaks base64 between two pieces, so the joined text is no
        base64 of what they carry. A text is a piece when it is wholly base64 (either alphabet,
        padding aside; line breaks, and in a padded piece any ASCII whitespace, skipped as atob
        skips them: :func:`_piece`) and long (PIECE_MIN) or padded, or when its path has had a
        piece already (shorter ones then too: the next piece may be a byte), or when it is short
        and follows short ones on its path that make PIECE_MIN together, one of them no multiple of
        4 long (the joined text misaligned there: each decoded apart, they are the first piece,
        :attr:`_runs`). A constant leaf (an ``id`` in every chunk) that its stream takes unchanged
        is not decoded again: its bytes already repeat on its ``<b64>`` path as far as a search
        reaches. The decoded bytes are searched for the value forms as they are and in another
        case, not decoded further (views of random bytes cost ~0.3 s a MiB), and joined with no
        other path's text."""
        piece_of = self._piece_of
        memo = self._piece_memo
        runs = self._runs
        out: list[tuple[str, bytes]] | None = None  # (made only when some piece is new)
        extra: list[tuple[str, bytes]] = []
        last: bytes | None = None
        decoded: bytes | None = None
        loose: bytes | None = None  # (a text no piece as it is, read with spaces skipped)
        strong = short = False
        for i, (path, text) in enumerate(texts):
            if text is not last:  # (a leaf's paths come together, with the same text)
                if extra:
                    if out is None:
                        out = texts[:i]
                    out += extra
                    extra = []
                last = text
                n = len(text)
                strong = n >= PIECE_MIN or text.endswith(b"=") or (text[-1:].isspace() and _padded(text))
                if text in memo:  # (a constant leaf, a repeated text: read once)
                    decoded = memo[text]
                    short = decoded is not None and 1 < n < PIECE_MIN
                else:
                    # (A text that gives a piece-decoding client nothing -- empty, one character,
                    # blanks -- is no piece and ends no run; a short one wholly base64 runs on.)
                    short = 1 < n < PIECE_MIN and text[0] in _SHORT_FIRST and _short_piece(text)
                    if strong or short or (n > 1 and path in piece_of):
                        decoded = _piece(text)
                        if len(memo) >= 64:
                            memo.clear()
                        memo[text] = decoded
                    else:
                        decoded = None
                # (On a path that has had a piece, spaces too are skipped, as atob skips them.)
                loose = _piece(text, spaced=True) if decoded is None and n > 1 and path in piece_of else None
            if out is not None:
                out.append((path, text))
            if decoded is None:
                if loose is not None and (stream := piece_of.get(path)) is not None:
                    if not stream.unchanged_by(loose):
                        extra.append((path + _PIECE, loose))
                elif runs and path in runs:
                    if n > 1 and not text.isspace():
                        del runs[path]
                    elif n:
                        runs[path].append(text)  # (nothing to the client, but the joined text is no base64 there)
                continue
            stream = piece_of.get(path)
            if stream is None:
                run = runs.get(path) if runs else None
                if not strong:
                    if not short:
                        continue
                    if run is None:
                        runs[path] = [text]
                        continue
                    if sum(map(len, run)) + n < PIECE_MIN or not (_odd(text) or any(map(_odd, run))):
                        run.append(text)
                        self._trim(run)
                        continue
                seed = b"".join(memo.get(t) or _piece(t) or b"" for t in run) if run else self._seed(path)
                if run is not None:
                    del runs[path]
                extra.append((path + _PIECE, seed + decoded))
                continue
            if stream.unchanged_by(decoded):
                continue  # (a constant leaf's bytes, repeated as far as a search reaches: as is)
            extra.append((path + _PIECE, decoded))
        if extra:
            out = (texts[:] if out is None else out) + extra
        return texts if out is None else out

    def _trim(self, run: list[bytes]) -> None:
        """Keep a run's last pieces that decode to the longest value and a quantum more."""
        keep = 4 * (self._finder.max_len // 3 + 2)
        total = sum(map(len, run))
        while len(run) > 1 and total - len(run[0]) >= keep:
            total -= len(run.pop(0))

    def _seed(self, path: str) -> bytes:
        """What the texts before a path's first piece decode to, as one base64 string (pieces whose
        lengths are multiples of 4 join into one: the end of their text is a quantum's): the end of
        a value they began, which the first piece may complete. Empty when they are no base64."""
        stream = self._paths.get(path)
        if stream is None:
            return b""
        kept = stream.text_kept()
        n = min(len(kept), 4 * (self._finder.max_len // 3 + 2)) // 4 * 4  # (whole quanta, from the end)
        return (_piece(kept[len(kept) - n :]) or b"") if n else b""

    def _fork_variants(self, seq: int, texts: list[tuple[str, bytes]]) -> bool:
        """For each leaf's own path a flagged text comes on for the first time, a stream of the
        texts no flag marks (``<path><!>``: what a client that skips flagged texts stitches); for
        each path of a leaf (its own, tagged, indexed and flagged ones) a text comes on that folds
        otherwise (:func:`_fold`), a stream of its texts folded (``<path><nfkd>``: what a client
        that stitches by that path, then cleans the text, reads); and for an own path with both, its
        unflagged texts folded (``<path><!><nfkd>``: google-genai's ``response.text``, then a
        cleaner). From here on, each begins as the stream it varies is before this event (every
        text so far, which no flag marked, or which one did on a path forgotten since: more to
        search, nothing hidden; which fold to themselves), with the seams it continued; an indexed
        one is an output of its own group (:meth:`_place`), next to the raw ones in index order.
        Whether there was one."""
        new = False
        for path, _ in texts:
            if path.endswith(_FOLD):
                own = path[: -len(_FOLD)]
                if own in self._folded:
                    continue
                self._folded.add(own)
                new = True
                self._fork(own, path, seq)
                if own in self._flagged:  # (its unflagged texts so far fold to themselves too)
                    self._folded.add(own + _UNFLAGGED)
                    self._fork(own + _UNFLAGGED, own + _UNFLAGGED + _FOLD, seq)
            elif path.find(_FLAG) >= 0:
                own = _FLAGS.sub("", path)
                if own in self._flagged:
                    continue
                self._flagged.add(own)
                new = True
                self._fork(own, own + _UNFLAGGED, seq)
                if own in self._folded:  # (its folded texts so far: none flagged)
                    self._folded.add(own + _UNFLAGGED)
                    self._fork(own + _FOLD, own + _UNFLAGGED + _FOLD, seq)
        return new

    def _fork(self, base: str, fork: str, seq: int) -> None:
        """Path ``fork`` begun as ``base``'s stream is now (nothing when it is not followed: the
        fork then begins with its first text, a new path)."""
        stream = self._paths.get(base)
        if stream is None or fork in self._paths:
            return
        twin = stream.clone()
        self._paths[fork] = twin
        if twin.held_segments():
            self._holding.add(twin)
        if stream in self._pending:
            self._pending[twin] = dict(self._pending[stream])
        if base in self._seams:
            self._seams[fork] = list(self._seams[base])
            self._seam_groups[fork] = [fork]
            if base in self._seam_held:
                self._seam_held[fork] = self._seam_held[base]
        if fork.find("<") >= 0:
            self._place(fork, seq, known=True)

    def _skipped(self, texts: list[tuple[str, bytes]]) -> list[tuple[str, bytes]]:
        """The texts, and each text of a path with variants (:meth:`_fork_variants`) again on
        them: an own path's on its unflagged stream unless a flag marks it in this event (a flagged
        text goes on its own path, for a client that skips none, and its flagged path, for one that
        reads only those), any path's on its folded stream unless it folds otherwise (then its
        folded text is there), and an own path's unflagged text, as it is or folded, on its
        unflagged folded stream."""
        flagged, folded = self._flagged, self._folded
        flagged_now = {_FLAGS.sub("", path) for path, _ in texts if path.find(_FLAG) >= 0} if flagged else ()
        folded_now = {path[: -len(_FOLD)] for path, _ in texts if path.endswith(_FOLD)} if folded else ()
        out: list[tuple[str, bytes]] = []
        for path, text in texts:
            out.append((path, text))
            if path in flagged and path not in flagged_now:
                unflagged = path + _UNFLAGGED
                out.append((unflagged, text))
                if unflagged in folded and path not in folded_now:
                    out.append((unflagged + _FOLD, text))
            if path in folded and path not in folded_now:
                out.append((path + _FOLD, text))
            elif flagged and path.endswith(_FOLD):
                own = path[: -len(_FOLD)]  # (a leaf's folded text: its unflagged one too)
                if own in flagged and own not in flagged_now and own + _UNFLAGGED in folded:
                    out.append((own + _UNFLAGGED + _FOLD, text))
        return out

    def _add_clean(self, seq: int, texts: list[tuple[str, bytes]]) -> list[SegmentedScrubber] | None:
        """The usual event, in one search: every path already followed, none holding anything, and
        no value (in any case) nor anything a decoding applies to in the texts with the bytes sent
        before each: the streams it fed. None, having changed nothing, when that is not so: each
        path then takes its text on its own (:meth:`_add_each`), as exactly."""
        paths = self._paths
        streams: list[SegmentedScrubber] = []
        parts: list[bytes] = []
        latest = self._latest
        steady = not self._seams  # (every text's path had one in the latest event: _cross has nothing to ask)
        unchanged: list[bool] = []
        pieces: list[bytes] = []  # (decoded bytes: value forms only, see _pieces)
        for path, text in texts:
            stream = paths.get(path)
            if stream is None or stream in self._pending or (self._rests and not stream.begun()):
                return None  # (a new one, or one continuing what a forgotten path began: _loose_end)
            if stream.unchanged_by(text):
                # (A constant leaf: searched clean before the same history already. Not searched,
                # fed nor touched: nothing of it can change.)
                if text and stream.text_seq != latest:
                    steady = False
                streams.append(stream)
                unchanged.append(True)
                continue
            before = stream.clean_candidate()
            if before is None:
                return None
            if text and stream.text_seq != latest:
                steady = False
            streams.append(stream)
            unchanged.append(False)
            (parts if stream.views else pieces).append(before + text)
        if len(set(map(id, streams))) != len(streams):
            return None  # (a path twice in one event: its texts are one segment)
        blob = FIELD_SEPARATOR.join(parts)  # (see first_hit: nothing is found across two parts)
        # (EBCDIC aside, as in every stream of a stitcher: texts read from JSON carry no raw bytes.
        # A text holding FIELD_SEPARATOR itself, filler to the skeleton, goes on its own.)
        if not _plain(blob, False, fields=True) or (parts and blob.count(FIELD_SEPARATOR) >= len(parts)):
            return None
        if self._finder.hits(blob):
            return None
        low = blob.lower()
        if low != blob and self._finder.hits(low):
            return None
        if pieces:
            blob = FIELD_SEPARATOR.join(pieces)
            if self._finder.hits(blob) or ((low := blob.lower()) != blob and self._finder.hits(low)):
                return None
        if not steady:
            self._cross(seq, texts)
        fed = False
        touched: list[SegmentedScrubber] = []
        for (path, text), stream, same in zip(texts, streams, unchanged, strict=True):
            paths[path] = paths.pop(path)  # (the dict is in order of last use)
            if text:
                stream.text_seq = seq
                fed = True
            if same:
                continue
            touched.append(stream)
            if not stream.pass_clean(text):
                stream.feed(text, seq)
        if fed:
            self._latest = seq
        return touched

    def _add_each(self, seq: int, texts: list[tuple[str, bytes]]) -> list[SegmentedScrubber]:
        paths = self._paths
        touched: list[SegmentedScrubber] = []
        for path, text in texts:
            stream = paths.pop(path, None)  # (re-inserted last: the dict is in order of last use)
            if stream is None:
                if len(paths) >= MAX_PATHS:
                    self._forget_one()
                views = not path.endswith(_PIECE)
                stream = SegmentedScrubber(self._finder, self._on_hit, replace=False, ebcdic=False, views=views)
                if not views:
                    self._piece_of[path[: -len(_PIECE)]] = stream
                if path.find("<") >= 0:
                    self._place(path, seq)
            if text and (stream in self._pending or (self._rests and not stream.begun())):
                self._loose_end(stream, text)
            if self._tails and not stream.begun() and (tail := self._tails.pop(path, None)) is not None:
                stream.seed(tail)
            paths[path] = stream
            stream.feed(text, seq)
            if text:
                stream.text_seq = seq
                self._latest = seq
            touched.append(stream)
        return touched

    def _cross(self, seq: int, texts: list[tuple[str, bytes]]) -> None:
        """Each text of event ``seq`` against what other paths' texts ended with since its own
        paths' last text, and against the seams its paths continue: refused when together they
        hold a value; a value beginning they continue is a seam of its paths (held from this event,
        or the seam's first, when MIN_HOLD bytes or more, or encoded). A leaf's paths (its own, the
        tagged and indexed ones: consecutive, the same text) are asked as one. Nothing to ask in the
        usual event, whose every path had a text in the latest event: no other path's text came
        after."""
        paths = self._paths
        seams = self._seams
        latest = self._latest
        for path, text in texts:
            if text:
                stream = paths.get(path)
                if stream is None or stream.text_seq != latest or path in seams:
                    break
        else:
            return
        self._crossed = seq
        groups: list[tuple[list[str], bytes]] = []
        for path, text in texts:
            if not text:
                continue
            if groups and groups[-1][1] == text:
                groups[-1][0].append(path)
            else:
                groups.append(([path], text))
        for group, text in groups:
            if group[0].endswith(_PIECE):
                continue  # (bytes decoded from a piece: joined only with the pieces of its path)
            ends: set[bytes] = set()
            hold: int | None = None
            for path in group:
                ends.update(seams.pop(path, ()))
                was = self._seam_held.pop(path, None)
                if was is not None:
                    hold = was if hold is None else min(hold, was)
                for sibling in self._seam_groups.pop(path, ()):
                    self._seam_held.pop(sibling, None)  # (it goes on being followed, no longer held)
            members = [paths.get(path) for path in group]
            prevs = [m.text_seq for m in members if m is not None and m.text_seq >= 0]
            # (A path new here, or with no text yet, is asked of forgotten paths' ends by _loose_end.)
            since = min(prevs) if len(prevs) == len(members) else -1
            if since < latest:
                if self._refreshed < latest:
                    self._refresh()
                mine = set(members)
                named = set(group)
                positions = {_index_tags(path) for path in group}
                for end, streams in self._open.items():
                    if end not in ends and any(
                        o.text_seq > since and o not in mine and not self._went_on(o, end, named, positions)
                        for o in streams
                    ):
                        ends.add(end)
                if prevs and self._gone:
                    old = min(prevs)
                    ends.update(end for end, at in self._gone.items() if at > old)
            if not ends:
                continue
            begun = _joined(self._finder, ends, text)
            if not begun:
                continue
            if any(len(b) >= MIN_HOLD or not _plain(b, False) for b in begun):
                hold = seq if hold is None else hold
            for path in group:
                seams[path] = begun
                self._seam_groups[path] = group
                if hold is not None:
                    self._seam_held[path] = hold

    def _place(self, path: str, seq: int, known: bool = False) -> None:
        """A new path that is an output's indexed path (only positional output fields: see
        :func:`_position`): its output, in its group and family. A client that puts each text in
        ``content[index]`` (the Anthropic SDK's ``MessageStream``, the openai SDK's
        ``ResponseStreamState``, a ConverseStream reader by ``contentBlockIndex``) joins the outputs
        in index order at the end, whatever order their texts came in: :meth:`_order` checks the
        neighbours. Bounded: past ORDER_OUTPUTS outputs (all groups) the lowest position of the
        group goes (a later first text below it is refused: its neighbour is forgotten); when the
        group has no other, refused (a group of one output keeps no text: ~200 bytes). ``known``:
        the path is followed already, with text (a fork: :meth:`_fork`), caught up like the others."""
        where = _position(path)
        if where is None:
            return
        name, shape, key = where
        family = self._orders.get(name)
        if family is None:
            family = self._orders[name] = _Family()
        group = family.groups.get(shape)
        if group is None:
            group = family.groups[shape] = _Group()
        family.keys.add(key)
        out = group.outputs.get(key)
        if out is not None:
            out.path = path  # (a path forgotten and followed again)
        else:
            if group.floor is not None and key <= group.floor:
                raise ScrubRefused("", "an output by position before the ones a token stream remembers")
            out = group.outputs[key] = _Output(path, key)
            self._outputs += 1
            if self._outputs > ORDER_OUTPUTS:
                self._drop_lowest(group, out)
        if len(family.keys) > 1:
            for g in family.groups.values():
                for o in g.outputs.values():
                    if self._multi.get(o.path, (None, None, None))[2] is not o:
                        if o is not out or known:
                            self._catch_up(g, o, seq)
                        self._multi[o.path] = (family, g, o)

    def _catch_up(self, group: _Group, out: _Output, seq: int) -> None:
        """An output of a group that had only it until now (nothing asked per event of a stream of
        one output): what its stream knows of its text. All of it while shorter than the window
        the stream keeps; longer, its beginning is lost (:meth:`_next_to` then fails closed)."""
        stream = self._paths.get(out.path)
        if stream is None:  # (forgotten: what it began with is not known)
            out.size, out.lost = _view_window(self._finder), True
            bisect.insort(group.begun, out.key)
            return
        if not stream.begun():
            return
        text = stream.text_kept()
        window = _view_window(self._finder)
        if len(text) < window:
            out.begin, out.size, out.plain = text, len(text), _plain(text, False)
        else:
            out.size, out.lost = window, True
        out.end = stream.open_end()
        if stream.text_seq == seq:
            out.skip = seq  # (its text of this event is in it already)
        bisect.insort(group.begun, out.key)

    def _drop_lowest(self, group: _Group, new: _Output) -> None:
        """Forget the group's lowest output (a stream of an output per token goes on in index
        order); refused when that is the new one (its neighbour would go unasked) or the only one."""
        low = min(group.outputs)
        if len(group.outputs) < 2 or group.outputs[low] is new:
            raise ScrubRefused("", f"more than {ORDER_OUTPUTS} outputs by position in a token stream")
        out = group.outputs.pop(low)
        self._outputs -= 1
        group.floor = low if group.floor is None else max(group.floor, low)
        if self._multi.get(out.path, (None, None, None))[2] is out:
            del self._multi[out.path]
        i = bisect.bisect_left(group.begun, low)
        if i < len(group.begun) and group.begun[i] == low:
            del group.begun[i]
        for pair in [p for p in self._order_held if id(out) in p]:
            del self._order_held[pair]

    def _order(self, seq: int, texts: list[tuple[str, bytes]]) -> None:
        """Each text of an output by position (of a family of two positions or more) against its
        neighbours in index order among the outputs that have begun, in every group of its family
        (a block's snapshot field and its deltas' field are one text to the client): the end of the
        one before it (while this is its beginning: its first max_len bytes, _view_window when
        encoded) and the beginning of the one after it (its end changed). Refused when together
        they hold a value, in any form :func:`_joined` reads; when they begin one that runs on into
        the later output's text, the event is held until the family has another text (asked again
        if it is one of the two's; an output per token, Hugging Face's ``index``, never has another).
        Index order, not arrival order: the later output may have begun first, and other outputs may
        have spoken between."""
        multi = self._multi
        paths = self._paths
        window = _view_window(self._finder)
        if self._order_held:
            going = {multi[path][0] for path, text in texts if text and path in multi}
            for pair in [p for p, (_, f) in self._order_held.items() if f in going]:
                del self._order_held[pair]
        for path, text in texts:
            if not text:
                continue
            where = multi.get(path)
            if where is None:
                continue
            family, group, out = where
            if out.skip == seq:
                continue
            stream = paths.get(path)
            end = out.end
            if stream is not None:
                out.end = stream.open_end()
            # (Its beginning asked while a value that began before it could reach past what came:
            # max_len bytes of plain text, the window of encoded.)
            grew = out.size < window and (out.size < self._finder.max_len or not out.plain)
            if out.size < window:
                if not out.size:
                    bisect.insort(group.begun, out.key)
                added = text[: window - out.size]
                out.begin += added
                out.plain = out.plain and _plain(added, False)
            out.size += len(text)
            if out.carry:
                out.carry = set()  # (its text changed: asked again below, of the ones before it)
            if not grew and out.end == end:
                continue  # (the same end, the same beginnings after it: asked already)
            key = out.key
            before: list[_Output] = []
            after: list[_Output] = []
            for g in family.groups.values():  # (a snapshot on one field, deltas on another: all asked)
                begun = g.begun
                if not begun:
                    continue
                i = bisect.bisect_left(begun, key)
                if grew and i > 0:
                    before.append(g.outputs[begun[i - 1]])
                j = i + 1 if i < len(begun) and begun[i] == key else i
                if j < len(begun):
                    after.append(g.outputs[begun[j]])
            if before:
                self._after(family, before, out, seq)
            if out.end or out.carry:
                for then in after:
                    self._onward(family, out, then, seq)

    def _after(self, family: _Family, before: list[_Output], then: _Output, seq: int) -> None:
        """:meth:`_next_to` of each of ``before`` and ``then``, in one search."""
        ends = {b.end for b in before if b.end}
        for b in before:
            ends |= b.carry
        if not ends:
            return
        if any(b.lost for b in before if b.end or b.carry) or then.lost:
            raise ScrubRefused("", "an output's text before a later one's whose beginning is no longer known")
        begun = _joined(self._finder, ends, then.begin)
        if then.size <= len(then.begin) and begun:
            then.carry.update(begun)  # (a value begun before it runs through all its text)
            if any(len(b) >= MIN_HOLD or not _plain(b, False) for b in begun):
                self._order_held[(id(then), 0)] = (seq, family)  # (its text so far: a value may run on into it)

    def _next_to(self, family: _Family, first: _Output, then: _Output, seq: int) -> bool:
        """Whether a value begun before ``then`` now runs through all its text, as it did not."""
        pair = (id(first), id(then))
        self._order_held.pop(pair, None)
        if not first.end and not first.carry:
            return False
        if then.lost:
            raise ScrubRefused("", "an output's text before a later one's whose beginning is no longer known")
        ends = first.carry | {first.end} if first.end else first.carry
        begun = _joined(self._finder, ends, then.begin)
        if then.size > len(then.begin) or not begun:
            return False
        if any(len(b) >= MIN_HOLD or not _plain(b, False) for b in begun):
            self._order_held[pair] = (seq, family)  # (its text so far: the value may run on into the next)
        new = not then.carry.issuperset(begun)
        then.carry.update(begun)
        return new

    def _onward(self, family: _Family, first: _Output, then: _Output, seq: int) -> None:
        """:meth:`_next_to` of ``first`` and ``then``, and on along index order while a value begun
        runs through the whole text of the next output (three outputs or more, each a piece of it,
        in any order: pairs alone never see it whole)."""
        work = [(first, then)]
        while work:
            a, b = work.pop()
            if not self._next_to(family, a, b, seq):
                continue
            for g in family.groups.values():
                begun = g.begun
                i = bisect.bisect_left(begun, b.key)
                j = i + 1 if i < len(begun) and begun[i] == b.key else i
                if j < len(begun):
                    work.append((b, g.outputs[begun[j]]))

    def _went_on(self, other: SegmentedScrubber, end: bytes, group: set[str], positions: set[tuple[str, ...]]) -> bool:
        """Whether ``other``'s end is no beginning this text's paths may continue: its text was a
        leaf of the same field (its own path is one of theirs) but of another output by position
        (``index``, ``output_index``, ``content_index``: a Hugging Face token's per-token index),
        and that field went on after it (texts between, which a client of the field reads between)
        or is followed with the same end (its own check then sees the end and the text together).
        A client keyed by the outputs keeps two positions apart; one that joins a snapshot to its
        deltas joins two fields, or two types of one output (asked)."""
        at, plain, position = other.leaf
        if at != other.text_seq or not position or plain not in group:
            return False  # (not known: asked)
        if position in positions:
            return False
        stream = self._paths.get(plain)
        if stream is None:
            return False
        return stream.text_seq > at or (stream.text_seq == at and stream.open_end().endswith(end))

    def _note_leaves(self, seq: int, texts: list[tuple[str, bytes]]) -> None:
        """Record, for each stream that had a text in event ``seq``, the plain path of that text's
        leaf (the first of its paths: see _plain_path)."""
        paths = self._paths
        plain = ""
        for path, text in texts:
            if _plain_path(path):
                plain = path
            if text:
                stream = paths.get(path)
                if stream is not None:
                    stream.leaf = (seq, plain, _index_tags(path))

    def _refresh(self) -> None:
        """Bring _open up to date: the open ends of the streams that had a text since."""
        since = self._refreshed
        for stream in self._paths.values():
            if stream.text_seq > since and stream.views:
                self._unopen(stream)
                end = stream.open_end()
                if end:
                    self._open.setdefault(end, set()).add(stream)
                    self._open_of[stream] = end
        self._refreshed = self._latest

    def _unopen(self, stream: SegmentedScrubber) -> None:
        end = self._open_of.pop(stream, None)
        if end is not None:
            streams = self._open[end]
            streams.discard(stream)
            if not streams:
                del self._open[end]

    def first_held(self) -> int | None:
        """The earliest event some path still holds: it, and every event after it, must wait."""
        return self._first_held

    def finish(self) -> None:
        """The stream ended: raises if what was held completes a value."""
        for stream in self._paths.values():
            stream.finish()
        self._holding.clear()
        self._pending.clear()
        self._tails.clear()
        self._seams.clear()
        self._seam_held.clear()
        self._seam_groups.clear()
        self._order_held.clear()
        self._first_held = None

    def _forget_one(self) -> None:
        """Make room for a new path: forget the least recently used stream that is idle, or whose
        loose ends (the rests of the values its text may have begun, and of those it was
        continuing) can be remembered instead -- a stream keyed by a per-event id or position (a
        Hugging Face token's ``index`` and ``id``) leaves one behind at every token ending in a
        letter some value begins with. Memory is bounded: when no stream can go (something held, a
        decoded view open, a seam held) or MAX_RESTS rests are remembered, the stream is refused, so
        decoy paths cannot push a value's path out."""
        paths = self._paths
        for path, stream in paths.items():  # (least recently used first: usually the first will do)
            if path in self._seam_held:
                continue
            seams = self._seams.get(path, [])
            if not all(_plain(seam, False) for seam in seams):
                continue  # (an encoded beginning: its rests are no list of bytes)
            if not seams and stream.idle():
                self._leave_tail(path, stream)
                del paths[path]
                self._unpiece(path)
                self._unopen(stream)
                return
            ends = stream.loose_ends()
            if ends is not None:
                ends += self._pending.get(stream, {}).items()
                for seam in seams:  # (the value forms it begins whole: what it ends with alone is this path's)
                    rests = self._finder.rests(seam, PART_HOLD) + self._finder.rests(seam.lower(), PART_HOLD)
                    ends += [r for r in rests if len(r[1][1]) == len(seam)]
                open_ends = [e for e in (stream.open_end(), *seams) if e]
                if len(self._rests) + len(ends) <= MAX_RESTS and self._remember(open_ends, stream.text_seq):
                    self._leave_tail(path, stream)
                    del paths[path]
                    self._unpiece(path)
                    self._unopen(stream)
                    self._pending.pop(stream, None)
                    self._seams.pop(path, None)
                    self._seam_groups.pop(path, None)
                    self._rests.update(ends)
                    return
        raise ScrubRefused("", f"more than {MAX_PATHS} paths of a token stream hold text that may begin a value")

    def _leave_tail(self, path: str, stream: SegmentedScrubber) -> None:
        """Keep the last bytes of a path being forgotten, when they could begin a value or a run's
        piece, for the path's return: a path forgotten at every delta (more than MAX_PATHS new paths
        between them: red team 14) begins again with what it began, and holds and refuses as it
        would have, instead of letting each delta out (runs, whose first PART_HOLD - 1 characters
        leave a path idle, would never be seen). Up to MAX_RESTS paths, the oldest dropped first."""
        tail = stream.text_kept()[1 - self._finder.max_len :]
        if tail and _tail_hold(self._finder, tail[-self._finder.max_len :]) > 0:
            if len(self._tails) >= MAX_RESTS:
                del self._tails[next(iter(self._tails))]
            self._tails[path] = tail

    def _unpiece(self, path: str) -> None:
        self._runs.pop(path, None)
        if path.endswith(_PIECE):
            self._piece_of.pop(path[: -len(_PIECE)], None)

    def _remember(self, ends: list[bytes], at: int) -> bool:
        """Keep a forgotten path's open ends for the paths followed still (see _gone), if there is
        room: those older than every such path's last text are of no use any more."""
        if not ends:
            return True
        gone = self._gone
        if len(gone) + len(ends) > MAX_RESTS // 4:
            oldest = min((s.text_seq for s in self._paths.values() if s.text_seq >= 0), default=at)
            for end in [e for e, seen in gone.items() if seen <= oldest]:
                del gone[end]
            if len(gone) + len(ends) > MAX_RESTS // 4:
                return False
        for end in ends:
            gone[end] = max(gone.get(end, -1), at)
        return True

    def _loose_end(self, stream: SegmentedScrubber, text: bytes) -> None:
        """A text against what forgotten paths may have begun: a new path's first (not empty) one
        against every remembered rest, or the next text of a stream that has continued some (a
        forgotten path that comes back is a new path). Refused when it completes a value; the rests
        it continues (it is their beginning) are what the stream's next text is checked against."""
        rests = self._pending.pop(stream) if stream in self._pending else self._rests
        going: dict[bytes, tuple[str, bytes]] = {}
        # (as it is, lowercased, and in every decoded view: an escape may begin the rest of a value)
        for t in {text, text.lower(), *views(text, False)}:
            if not t:
                continue
            for rest, (secret, start) in rests.items():
                if t.startswith(rest):
                    raise ScrubRefused(secret, "a real value split across events (of a path followed, then forgotten)")
                if len(t) < len(rest) and rest.startswith(t):
                    going[rest[len(t) :]] = (secret, start + t)
        if going:
            self._pending[stream] = going


_JSON_STRING = re.compile(r'"(?:[^"\\]|\\.)*"')

_PIECE = "<b64>"  # (a path's texts decoded from base64 piece by piece: PathStitcher._pieces)
PIECE_MIN = 16  # characters: a text this long that is wholly base64 is decoded (shorter: padded)
_BASE64_TEXT = re.compile(rb"[A-Za-z0-9+/_-]+={0,2}")


_BASE64_BYTES = frozenset(b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/_-")
_ASCII_SPACE = b" \t\n\r\f"  # (what atob and Buffer.from skip in base64; b64decode too)


def _short_piece(text: bytes) -> bool:
    """Whether a short text (two characters or more) is wholly base64, line breaks aside (not
    spaces: then every word of prose would be)."""
    c = text[0]
    if c in _BASE64_BYTES and _BASE64_TEXT.fullmatch(text) is not None:
        return True
    return _line_broken(text) and _BASE64_TEXT.fullmatch(text.translate(None, _ASCII_SPACE)) is not None


def _line_broken(text: bytes) -> bool:
    """Whether a text has line breaks and no other blanks: base64 wrapped as MIME wraps it, or with
    a newline after it -- not lines of prose, which have spaces."""
    return (text.find(b"\n") >= 0 or text.find(b"\r") >= 0) and text.find(b" ") < 0 and text.find(b"\t") < 0


_SHORT_FIRST = _BASE64_BYTES | frozenset(b"\r\n")


def _odd(piece: bytes) -> bool:
    """Whether a piece breaks base64 where it ends, so that pieces joined are no base64 of what
    they carry (else the joined text is, and its own stream finds the value's base64 form)."""
    return len(piece) % 4 != 0 or piece.find(b"\n") >= 0 or piece.find(b"\r") >= 0


def _padded(text: bytes) -> bool:
    return text.rstrip(_ASCII_SPACE).endswith(b"=")


def _piece(text: bytes, spaced: bool = False) -> bytes | None:
    """What a lenient base64 reader (``atob``, Node's ``Buffer.from``, Python's ``b64decode`` of a
    padded piece) gets of a text that is wholly base64, either alphabet (Node reads both mixed),
    padding optional; a lone last character is dropped. ASCII whitespace skipped, as they skip it,
    in a text with line breaks and no spaces (a piece wrapped as MIME wraps it, a trailing newline)
    or padded (spaces in it: no prose is padded; in any text, every word of prose would be a
    piece), or in any text when ``spaced`` (of a path that has had a piece). None for any other
    text."""
    if _BASE64_TEXT.fullmatch(text) is None:
        if not spaced and not _line_broken(text) and not _padded(text):
            return None
        text = text.translate(None, _ASCII_SPACE)
        if _BASE64_TEXT.fullmatch(text) is None:
            return None
    run = text.rstrip(b"=")
    if len(run) % 4 == 1:
        run = run[:-1]
    if not run:
        return None
    if run.find(b"-") >= 0 or run.find(b"_") >= 0:
        run = run.translate(_URLSAFE)
    try:
        return binascii.a2b_base64(run + b"=" * (-len(run) % 4))
    except binascii.Error:
        return None


# The positional output fields (see _OUTPUT_KEYS): a choice's or content part's ``index`` (OpenAI,
# Anthropic, Gemini), ``output_index``, ``content_index`` and ``summary_index`` (the Responses API),
# Bedrock ConverseStream's ``contentBlockIndex``.
_INDEX_KEY_NAMES = ("index", "output_index", "content_index", "summary_index", "contentBlockIndex")
_INDEX_TAG = re.compile("<(?:" + "|".join(_INDEX_KEY_NAMES) + ")=[^>]*>")


def _index_tags(path: str) -> tuple[str, ...]:
    """The positional output fields a path names (quoted keys and values aside)."""
    if path.find("<") < 0:
        return ()
    return tuple(_INDEX_TAG.findall(_JSON_STRING.sub("", path) if path.find('"') >= 0 else path))


_INDEX_VALUE = re.compile("<(" + "|".join(_INDEX_KEY_NAMES) + ")=[^>]*>")
OrderKey = tuple[tuple[int, int | str], ...]


def _position(path: str) -> tuple[str, str, OrderKey] | None:
    """(family, group, position) of an output's indexed path -- one whose only tags are positional
    output fields (steps into JSON strings aside), one at least: the path up to its last index and
    the whole path, with the indexes' values left out, and their values in order (numbers as
    numbers) -- else None. A family's groups are the fields of its outputs (a snapshot's text, a
    delta's)."""
    bare = _JSON_STRING.sub("", path) if path.find('"') >= 0 else path
    tags = _INDEX_TAG.findall(bare)
    if not tags:
        return None
    rest = _INDEX_TAG.sub("", bare).replace(_INNER, "")
    if rest.find("<") >= 0 and rest.removesuffix(_PIECE).removesuffix(_FOLD).find("<") >= 0:
        # (A folded indexed path, or its pieces decoded, is a group of its own: its texts as a
        # cleaner, or a client that decodes each piece, reads them -- joined in index order too.)
        return None
    key: list[tuple[int, int | str]] = []
    for tag in tags:
        value = tag[tag.index("=") + 1 : -1]
        key.append((0, int(value)) if value.lstrip("-").isdigit() and len(value) < 20 else (1, value))
    shape = _INDEX_VALUE.sub(r"<\1>", bare)
    last = tags[-1][: tags[-1].index("=")] + ">"
    return shape[: shape.rindex(last) + len(last)], shape, tuple(key)


@dataclass(slots=True, eq=False)
class _Output:
    """An output by position (:meth:`PathStitcher._order`): its indexed path, its position, the
    beginning of its text (all of it while ``size`` is no more) and what its text ends with that
    could begin a value (:meth:`SegmentedScrubber.open_end`)."""

    path: str
    key: OrderKey
    begin: bytes = b""
    size: int = 0
    end: bytes = b""
    plain: bool = True  # (no decoding applies to its beginning)
    lost: bool = False  # (its beginning no longer known: see PathStitcher._catch_up)
    skip: int = -1  # (an event whose text it has already)
    # (Value beginnings that run from an earlier output's end through all its text: its end, too,
    # to the one after it.)
    carry: set[bytes] = field(default_factory=set)


@dataclass(slots=True, eq=False)
class _Group:
    """Outputs that differ only by their positions: by position, those begun in index order, and
    the highest position forgotten (see :meth:`PathStitcher._place`)."""

    outputs: dict[OrderKey, _Output] = field(default_factory=dict)
    begun: list[OrderKey] = field(default_factory=list)
    floor: OrderKey | None = None


@dataclass(slots=True, eq=False)
class _Family:
    """The groups of outputs by the same positions (a snapshot's field, a delta's: a client's
    ``content[index]`` is both), and the positions any of them has had."""

    groups: dict[str, _Group] = field(default_factory=dict)
    keys: set[OrderKey] = field(default_factory=set)


def _plain_path(path: str) -> bool:
    """Whether ``path`` is a leaf's own path, the first of its paths (:func:`_leaves`): its tagged
    and indexed paths, when they differ from it, write an array position as ``[]`` or name an
    output field ``<...>``; a key that holds either is written as a JSON string (:func:`_part`)."""
    if path.find("<") < 0 and path.find("[]") < 0:
        return True
    path = path.replace(_INNER, "")  # (a step into a JSON string: the inner leaf's own path)
    if path.find("<") < 0 and path.find("[]") < 0:
        return True
    if path.find('"') < 0:
        return False
    bare = _JSON_STRING.sub("", path)
    return bare.find("<") < 0 and bare.find("[]") < 0


def _joined(finder: Finder, ends: set[bytes], text: bytes) -> list[bytes]:
    """``text`` after each of ``ends`` (what other paths' texts ended with, or seams): refused when
    one of them with it holds a value, plainly, in another case or decoded; else the value
    beginnings that run from an end into ``text`` (the seams of its paths)."""
    joined = [end + text for end in ends]
    blob = joined[0] if len(joined) == 1 else FIELD_SEPARATOR.join(joined)  # (see first_hit)
    hit = finder.search(blob)
    if hit is None and (low := blob.lower()) != blob:
        hit = finder.search(low)
    if hit is None and not _plain(blob, False, fields=True):
        hit = next(filter(None, map(finder.search, views(blob, False, fields=True))), None)
    if hit is not None:
        raise ScrubRefused(
            hit.pattern.secret,
            _RUN if hit.pattern.part else "a real value split across events (one path's end, another's text)",
        )
    begun: list[bytes] = []
    n = finder.max_len
    for j in joined:
        keep = _tail_hold(finder, j[-n:], PART_HOLD)
        if keep > len(text):
            begun.append(j[-keep:])
        elif not _plain(j, False) and _view_ends_in_prefix(finder, j, ebcdic=False):
            begun.append(j[-_view_window(finder) :])  # (encoded: all a view reads, held)
    return begun


@dataclass(slots=True)
class EventScrubber:
    """A token stream toward the agent, event by event (see the module docstring).
    ``kind``: "sse" (``text/event-stream``), "lines" (one JSON document a line), or "mixed" (a
    body of another label that turned out to be a token stream, which either kind of client may
    read: an event that begins with an SSE field runs to a blank line, any other is one line; an
    SSE client's texts and a line reader's are stitched apart, each as its client stitches them)."""

    finder: Finder
    on_hit: OnHit
    kind: str = "sse"
    _buf: bytearray = field(default_factory=bytearray)  # (appended to: a read of one byte costs one byte)
    _scanned: int = 0  # bytes of _buf searched for an event's end without finding one
    _seq: int = 0
    _pending: deque[tuple[int, bytes]] = field(default_factory=deque)  # scrubbed events not yet sent
    _pending_size: int = 0  # their bytes
    _stitcher: PathStitcher | None = None
    _body: _BodyReading | None = None  # the bytes read as a body's too (red team 44)

    def _seed(self, body: BodyScrubber) -> None:
        """Go on from ``body``: the bytes a sniffed stream read as a body before it turned out to
        be a token stream (its last window and skeleton, which the events' body reading goes on from)."""
        self._body = _BodyReading(self.finder)
        self._body.seed(*body.sent_state())

    def feed(self, chunk: bytes) -> bytes:
        buf = self._buf
        buf += chunk
        ends = _SSE_END if self.kind == "sse" else _LINE_END
        out: list[bytes] = []
        while True:
            if self.kind == "mixed":
                probe = buf.removeprefix(b"\xef\xbb\xbf") if self._seq == 0 else buf
                ends = _SSE_END if _SSE_START.match(probe) else _LINE_END
            # (From where the last search stopped, less the longest end, CRLF CRLF, but one byte:
            # the search of an event's bytes, read by read, is not begun again each time.)
            m = ends.search(buf, max(0, self._scanned - 3))
            if m is None:
                self._scanned = len(buf)
                break
            raw = bytes(buf[: m.end()])
            del buf[: m.end()]
            self._scanned = 0
            out.append(self._event(raw))
        if len(buf) > MAX_EVENT:
            raise ScrubRefused("", "an event larger than the scrubber's bound")
        return b"".join(out)

    def finish(self) -> bytes:
        tail = self._event(bytes(self._buf)) if self._buf else b""
        self._buf.clear()
        self._scanned = 0
        if self._stitcher is not None:
            self._stitcher.finish()  # raises if what was held completes a value
        if self._body is not None:
            self._body.finish()
        rest = b"".join(e for _, e in self._pending)
        self._pending.clear()
        self._pending_size = 0
        return tail + rest

    def _event(self, raw: bytes) -> bytes:
        self._seq += 1
        seq = self._seq
        read = _read_field(raw, self.finder, self.on_hit)
        event = read[0]
        if self._body is None:
            self._body = _BodyReading(self.finder)
        self._body.add(seq, read)
        if self._stitcher is None:
            self._stitcher = PathStitcher(self.finder, self.on_hit)
        if self.kind == "mixed":
            texts: Iterable[tuple[str, bytes]] = _mixed_texts(event, seq == 1)
        else:
            texts = _sse_texts(event, seq == 1) if self.kind == "sse" else _line_texts(event)
        self._stitcher.add(seq, texts)
        pending = self._pending
        pending.append((seq, event))
        first_held = self._stitcher.first_held()
        if (body_held := self._body.first_held()) is not None:
            first_held = body_held if first_held is None else min(first_held, body_held)
        if first_held is None:
            ready = [e for _, e in pending]
            pending.clear()
            self._pending_size = 0
            return b"".join(ready)
        ready = []
        while pending and pending[0][0] < first_held:
            ready.append(pending.popleft()[1])
        self._pending_size += len(event) - sum(len(e) for e in ready)
        if self._pending_size - len(event) > BEHIND_MAX:  # (events before this one, still held)
            raise ScrubRefused("", _HELD_PAST)
        return b"".join(ready)


_SSE_LINES = re.compile(rb"\r\n|\r|\n")  # an SSE line ends with CRLF, CR or LF


def _sse_texts(event: bytes, first: bool = False) -> Iterator[tuple[str, bytes]]:
    """(path, text) of what an SSE client would read from one event: the data payload, and when
    it is JSON, each string leaf by its path (array indexes included). An event of several
    ``data:`` lines is also read a line at a time (``dataline`` paths), as the many readers that
    parse each line do. ``first``: the stream's first event, which may begin with a byte order mark
    (SSE parsers skip it there, and only there).

    An event's name (its ``event:`` field, when not the default ``message``) is an output of its
    own: a browser app listens by name (``addEventListener("token", ...)``), so each text is also
    on a path tagged with the name (the tagged path of a JSON leaf; a path of its own for a payload
    that is not JSON), where another name's events do not come between."""
    if first:
        event = event.removeprefix(b"\xef\xbb\xbf")
    lines = _SSE_LINES.split(event)
    data = [ln[5:].removeprefix(b" ") for ln in lines if ln.startswith(b"data:")]
    if not data:
        return
    tag = ""
    if event.find(b"event:") >= 0:
        names = [ln for ln in lines if ln.startswith(b"event:")]
        if names:  # (the last one counts; "message" is the default)
            known = _EVENT_TAGS.get(names[-1])
            tag = _event_tag(names[-1]) if known is None else known
    payload = b"\n".join(data)
    yield from _payload_texts(payload, tag)
    if payload.startswith(b"data:"):
        yield from _stripped_texts(payload, tag)
    if len(data) > 1:
        for line in data:
            for path, text in _payload_texts(line, tag):
                yield "dataline" + path, text


_EVENT_TAGS: dict[bytes, str] = {}  # an SSE event line -> its name's tag (the few names a stream uses)


def _event_tag(name: bytes | str) -> str:
    """The tag of an event's name: an SSE ``event:`` line (remembered), or a name."""
    if isinstance(name, str):
        return "<event=" + _part(name) + ">"
    value = name[6:].removeprefix(b" ")
    tag = "" if value in (b"", b"message") else "<event=" + _part(value.decode("utf-8", "replace")) + ">"
    if len(_EVENT_TAGS) >= 1024:
        _EVENT_TAGS.clear()
    _EVENT_TAGS[name] = tag
    return tag


_SOCKETIO = re.compile(rb"\d{1,3}(?:/[^,\[{]*,)?\d*(?=[\[{])")  # ``42[...]``, ``42/chat,7{...}``


def payload_texts(payload: bytes, event: str | None = None) -> Iterator[tuple[str, bytes]]:
    """(path, text) of one event's payload as a client reads it: each string leaf by its paths when
    it is JSON (in any UTF ``json.loads`` reads), else the payload; ``event``: the event's name (a
    type its client dispatches on), which tags every tagged path as an SSE ``event:`` does."""
    return _payload_texts(payload, _event_tag(event) if event else "")


def message_texts(message: bytes) -> Iterator[tuple[str, bytes]]:
    """(path, text) of what a client reads from one WebSocket message: each JSON string leaf by its
    path when it is a JSON document (OpenAI's Realtime API: ``{"type": ..., "delta": ...}``), also
    once its framing is taken off (Socket.IO's packet type and id before it, SignalR's record
    separators after each record), else the message. A Socket.IO event's name (the array's first
    element) tags the texts of its arguments, as an SSE event's name does (:func:`_sse_texts`): its
    client calls the handler of each name; SignalR's ``target`` is an output field."""
    if not message:
        return
    yield from _payload_texts(message)
    framed = _SOCKETIO.match(message)
    if framed is not None:
        for path, text in _payload_texts(message[framed.end() :], named=True):
            yield "framed" + path, text
    if message.find(b"\x1e") >= 0:
        for record in message.split(b"\x1e"):
            for path, text in _payload_texts(record) if record else ():
                yield "framed" + path, text


# A part line: a short type code, a colon, a JSON value -- the Vercel AI SDK's data stream protocol
# (``X-Vercel-AI-Data-Stream: v1``, ``text/plain``: ``0:"<text delta>"``, ``g:`` reasoning, ``c:`` a
# tool call's argument deltas, codes ``0``-``9`` and ``a``-``k``) and the like. Its client splits a
# line at the first colon, ``JSON.parse``s the rest (blanks allowed: a server may write them) and
# appends each kind's texts: read as a JSON line whose code is an output (:func:`_part_texts`).
# Only values that can hold text (a string, an object, an array) count; the code is one or two
# letters or digits, as few as a line of prose or a YAML key of more letters rarely begins with.
_PART_OPEN = rb"[0-9A-Za-z]{1,2}:[ \t]*+[{\[\"]"
_PART = re.compile(rb"([0-9A-Za-z]{1,2}):[ \t]*+(?=[{\[\"])")
_PART_BEGUN = re.compile(rb"[0-9A-Za-z]{1,2}(?::[ \t]*+)?\Z")  # (a part line's start, cut by the chunk)


def _part_line(line: bytes) -> re.Match[bytes] | None:
    # (the colon asked first: most lines have none there)
    return _PART.match(line) if line[1:2] == b":" or line[2:3] == b":" else None


def _part_texts(line: bytes) -> Iterator[tuple[str, bytes]]:
    """(path, text) of a part line (:data:`_PART`) as its client reads it: each string leaf of its
    JSON value on ``part`` paths (the plain ones every part shares, as a reader that appends every
    text would join them), tagged with the code as an SSE event's name tags (a client appends text
    parts to the text, reasoning parts to the reasoning: another kind between two text parts is
    not between them). Nothing when the line is no part line or its value no JSON."""
    m = _part_line(line)
    if m is None:
        return
    try:
        doc = _read_json(line[m.end() :])
    except ValueError:
        return
    except RecursionError:
        raise ScrubRefused("", "an event nested too deep to read") from None
    for paths, text in _leaves(doc, _event_tag(m.group(1).decode())):
        for path in paths:
            yield "part" + path, text


def _unprefixed(line: bytes) -> bytes:
    """A part line's JSON value, or the line."""
    m = _part_line(line)
    return line[m.end() :] if m is not None else line


def _mixed_texts(event: bytes, first: bool) -> Iterator[tuple[str, bytes]]:
    """An SSE client's texts of the event (``sse`` paths) and a line reader's of each of its lines
    that is a JSON document (``line`` paths): two clients, never stitched together. ``first``: the
    stream's first event (a byte order mark before it is the stream's)."""
    if first:
        event = event.removeprefix(b"\xef\xbb\xbf")
    if _SSE_START.match(event):
        for path, text in _sse_texts(event, False):
            yield "sse" + path, text
    for line in _LINE_SPLIT.split(event):
        payload = line.lstrip(b"\x1e").strip(b" \t")
        if payload.removeprefix(b"\xef\xbb\xbf")[:1] not in (b"{", b"[", b'"'):
            for path, text in _part_texts(payload):
                yield "line" + path, text
            continue
        try:
            doc = _read_json(payload)
        except ValueError:
            continue
        except RecursionError:
            raise ScrubRefused("", "an event nested too deep to read") from None
        for paths, text in _leaves(doc):
            for path in paths:
                yield "line" + path, text


def _line_texts(line: bytes) -> Iterator[tuple[str, bytes]]:
    # (One line and its end, which may be any of _LINE_END's; json-seq puts RS before a document.)
    payload = _LINE_SPLIT.split(line.lstrip(b"\x1e"), maxsplit=1)[0].strip(b" \t")
    if payload:
        yield from _payload_texts(payload)
        if payload.startswith(b"data:"):
            yield from _stripped_texts(payload, "")
        yield from _part_texts(payload)


def _stripped_texts(payload: bytes, tag: str) -> Iterator[tuple[str, bytes]]:
    """The JSON leaves of a payload that begins with ``data:``, as the reader most glue code has
    reads it: ``json.loads(line.replace("data: ", ""))`` (SSE and line-delimited JSON alike, every
    such prefix stripped, ``data: data: {...}`` too), on the paths of a JSON payload's leaves."""
    while payload.startswith(b"data:"):
        payload = payload[5:].lstrip(b" ")
    if json_message(payload):
        for path, text in _payload_texts(payload, tag):
            if path:  # (not JSON after all: the payload, already read as it is)
                yield path, text


def _read_json(payload: bytes) -> object:
    """JSON as a lenient client reads it (``JSON.parse`` after ``TextDecoder``): in the UTF it is in
    (``json.loads``' rule), bytes that are none replaced, an integer of any length read (Python
    refuses past 4,300 digits; only short numbers matter, as output indexes), constants not read --
    only the text matters."""
    return _LENIENT_JSON.decode(payload.decode(json.detect_encoding(payload), "replace"))


def _integer(digits: str) -> int:
    return int(digits) if len(digits) <= 64 else -1


def _no_number(_: str) -> int:
    return 0


# (One decoder: json.loads with hooks builds a new one every call.)
# (A fraction of any length is read, as JavaScript reads it: 0.000...0 is index 0. Linear: ~0.5 ms a MiB.)
_LENIENT_JSON = json.JSONDecoder(parse_int=_integer, parse_float=float, parse_constant=_no_number)


_BOMS = (b"\xef\xbb\xbf", b"\xff\xfe", b"\xfe\xff", b"\x00\x00\xfe\xff")


_JSON_BLANKS = b" \t\r\n\x00\xef\xbb\xbf\xfe\xff"


def json_undecided(head: bytes) -> bool:
    """Whether what follows ``head`` may still decide :func:`json_message` either way: it is under
    four bytes, or only blanks, NULs and byte order marks (a binary WebSocket message's first
    fragments may be empty or blank: red team 22). Conservative: such a head is held until it is
    not, or its message ends."""
    return len(head) < 4 or not head.strip(_JSON_BLANKS)


def json_still_undecided(held: bytes | bytearray, more: bytes) -> bool:
    """:func:`json_undecided` of ``held`` + ``more``, where ``held`` is a head found undecided: past
    its four bytes only ``more`` is looked at (a message of a million one-byte blank fragments,
    looked at whole each time, cost time with their square: red team 24)."""
    if len(held) >= 4:
        return not more.strip(_JSON_BLANKS)
    return json_undecided(bytes(held) + more)


def json_message(head: bytes) -> bool:
    """Whether bytes beginning with ``head`` begin as a JSON object, array or string, in the UTF
    ``json.loads`` reads bytes in (UTF-8, with or without a BOM; UTF-16 and UTF-32, told by a BOM or
    by their NULs: ``json.detect_encoding``), blanks aside. A WebSocket binary message that does is
    read as JSON by its client (``json.loads(await ws.recv())``). A head too short to tell (under
    four bytes) that may begin a BOM or UTF-16 counts as JSON."""
    start = head.lstrip(b" \t\r\n").removeprefix(b"\xef\xbb\xbf")
    if start[:1] in (b"{", b"[", b'"'):
        return True
    if not head or (head[:1] not in (b"\x00", b"\xff", b"\xfe") and head[1:2] != b"\x00"):
        return False  # (UTF-8: what json.loads reads without a BOM or NULs)
    if len(head) < 4 and (b"\x00" in head or any(b.startswith(head) for b in _BOMS)):
        return True
    window = head[:256]
    encoding = json.detect_encoding(window)
    width = 4 if encoding.startswith("utf-32") else 2 if encoding.startswith("utf-16") else 1
    text = window[: len(window) - len(window) % width].decode(encoding, "replace")
    return text.lstrip(" \t\r\n\ufeff")[:1] in ("{", "[", '"')


def _payload_texts(payload: bytes, tag: str = "", named: bool = False) -> Iterator[tuple[str, bytes]]:
    """(path, text) of a payload: each string leaf of it when it is JSON, else the payload. ``tag``:
    an event name's tag, begun every tagged path with (and the path of a payload that is not JSON,
    besides the plain one). ``named``: a JSON array whose first element is a string is an event
    and that string its name (Socket.IO)."""
    # (JSON may begin with whitespace, and bytes read as JSON with a byte order mark, or in UTF-16/32)
    if payload[:1] in (b"{", b"[") or json_message(payload):
        try:
            doc = _read_json(payload)
        except ValueError:
            doc = None
        except RecursionError:
            raise ScrubRefused("", "an event nested too deep to read") from None
        if doc is not None:
            leaves = _leaves(doc, tag)
            if named and isinstance(doc, list) and doc and isinstance(doc[0], str):
                # (the arguments by their position after the name: a handler's first, second...)
                tag, leaves = _event_tag(doc[0]), []
                for i, v in enumerate(doc):
                    if isinstance(v, str | dict | list):
                        _collect_leaves(v, f"[{i}]", f"{tag}[{i}]", f"[{i}]", leaves)
            for paths, text in leaves:
                for path in paths:
                    yield path, text
            return
    yield "", payload
    if tag:
        yield tag, payload


# The fields by which token streams tell their outputs apart: OpenAI's ``choices[].index`` (and a
# tool call's ``index``), Anthropic's content block ``index``, the Responses API's ``output_index``,
# ``content_index`` and ``item_id``, the AI SDK's part ``id`` and ``toolCallId``, an event's name
# (``event``: Pusher, Phoenix and many WebSocket APIs; ``target``: a SignalR invocation), and an event's
# ``type`` (clients dispatch on it: a refusal delta between two text deltas is not text), and the
# channel a multiplexed connection delivers a message to (Pusher's, Ably's and Centrifugo's
# ``channel``, Phoenix's ``topic``, Action Cable's ``identifier``: each subscription's handler
# appends its own). The first three are positions, which a client stitches by whatever else an event
# carries (OpenAI sends a tool call's ``id`` and ``type`` in its first chunk only; some servers mint
# a chunk ``id`` per chunk).
_OUTPUT_KEYS = (*_INDEX_KEY_NAMES, "item_id", "id", "toolCallId", "type", "event", "target", "channel", "topic",
                "identifier")  # fmt: skip
_INDEX_KEYS = frozenset(_INDEX_KEY_NAMES)


_PATH_SYNTAX = re.compile(r'[.\[\]<>="\\]')


def _part(name: str) -> str:
    """A key or output field value as a path writes it: as is, unless it holds the paths' own
    syntax, then as a JSON string (which no plain part begins with). A member named
    ``"delta.content"`` is not the ``content`` of ``delta``: written as is, it would join that
    path's stream and put its text between a value's halves (red team 8)."""
    return name if _PATH_SYNTAX.search(name) is None else json.dumps(name)


def _leaves(doc: object, tag: str = "") -> list[tuple[tuple[str, ...], bytes]]:
    """(paths, text) of each string leaf, in document order; the paths, distinct: the leaf's own
    (array positions), its tagged path (every enclosing object's output fields, ``_OUTPUT_KEYS``,
    named instead of array positions), and its indexed path (only the positional ones); a string
    that is itself a JSON object or array, also its leaves, under its paths (``<json>``). Streams
    that interleave several outputs, or move one to another position, are stitched per output, as
    their clients do -- by every output field, or by the indexes alone when an id comes and goes --
    and per path, as a client that ignores those fields would."""
    out: list[tuple[tuple[str, ...], bytes]] = []
    _collect_leaves(doc, "", tag, "", out)
    return out


_JSON_SPACE = " \t\r\n"  # (what JSON.parse skips around a document)
_JSON_FIRST = frozenset('{["' + _JSON_SPACE)  # (how a string that may be a document begins...)
_JSON_LAST = frozenset('}]"' + _JSON_SPACE)  # (...or ends: one of them, the cheap first question)
_JSON_ENDS = frozenset({("{", "}"), ("[", "]"), ('"', '"')})
_INNER = "<json>"  # (a step into a JSON string parsed again)
_NAMING_ITEMS = 4  # an array's first items that may name what follows them (Phoenix's topic is the third)
_NAME_MAX = 128  # characters: a longer string is text, not a name
_FLAG = "<!"  # (a member that is true, in a leaf's flagged path: ``<!thought>``)
_FOLD = "<nfkd>"  # (a path of a leaf, its texts folded: see _fold)
_REPAIRED = tuple(f"<mojibake{n}>" for n in range(1, LAYERS + 1))  # (its texts' mojibake undone, then folded)


def _fold(text: str) -> str:
    """What a client that cleans text reads: compatibility forms folded, accents stripped and Latin
    letters transliterated (NFKD, then what is not ASCII dropped: fullwidth ``U+FF53`` and ``U+015B``
    are both ``s``, ``U+0127`` is ``h``, as search indexes, slugify and RAG text cleaners make them;
    red teams 47 and 48), and with them every format character (a zero-width space between every
    two characters) and every other character that is not ASCII. (A client that drops an accented
    letter instead: the raw path's views read that.) A character that clients read differently
    (proxy.core.fold's CONTESTED: ``U+0138`` is ``k`` or ``q``) is kept, for the path's views to
    read each way (:func:`views`)."""
    if CONTESTED_TEXT.search(text) is None:
        return unicodedata.normalize("NFKD", transliterate_text(text)).encode("ascii", "ignore").decode()
    pieces = CONTESTED_TEXT.split(text)
    kept = CONTESTED_TEXT.findall(text)
    return "".join(_fold(p) + (kept[i] if i < len(kept) else "") for i, p in enumerate(pieces))


_FLAGS = re.compile(r"<![^>]*>")  # (what a flagged path has that its own path has not)
# The members real clients skip a text by: google-genai's ``Part.thought`` (``response.text``), TGI's
# ``Token.special`` (LangChain's ``if not token.special``). Any value either kind of client reads as
# true flags them: JavaScript's truthiness (``if (part.thought)``: ``"false"``, ``"0"``, ``{}`` are
# true) and a Python client's, lax (pydantic reads ``1``, ``1.0``, ``"yes"``, ``"on"`` as True) or
# not (a dataclass keeps the string). Only ``false``, ``0``, ``""`` and ``null`` are false to all of
# them. (Flagging is the safe side: a flagged text stays on every path that joins all texts.)
_FLAG_NAMES = frozenset({"thought", "special"})
_OUTPUT_KEY_SET = frozenset(_OUTPUT_KEYS)
_NO_POSITION = "an output's position that is no natural number (-1, true: a Python client's list reads it)"


def _is_flag(key: str, value: object) -> bool:
    """Whether a member flags the texts of its object apart: one of _FLAG_NAMES that is true to any
    client, or any member that is ``true`` or ``1`` (a bool to pydantic; truthy to JavaScript) --
    not an output field (``"index": 1`` is a position)."""
    if key in _FLAG_NAMES:
        return value is not None and value is not False and value != 0 and value != ""
    if value is True:
        return True
    if type(value) is bool or key in _OUTPUT_KEY_SET:
        return False
    # Last, and nothing after it: mypy reads ``value == 1`` as making ``value`` an int, which 1.0
    # is not (compiled, a use of ``value`` after it would be checked as one: TypeError).
    return value == 1


_UNFLAGGED = "<!>"  # (a path's texts that no flag marked, once one did: PathStitcher._skipped)
INNER_DEPTH = 2  # JSON strings parsed again inside one another (each level doubles the escapes)
# Arrays and objects nested deeper than this are refused, not read (no API nests its answers a
# tenth as deep). Python would run out of stack a few hundred levels further and raise; compiled,
# the recursion has no limit of its own: the two must decide alike (red team 51).
JSON_DEPTH = 256


def _collect_leaves(
    doc: object,
    path: str,
    tagged: str,
    indexed: str,
    out: list[tuple[tuple[str, ...], bytes]],
    flagged: str | None = None,
    depth: int = 0,
) -> None:
    """``flagged``: the leaf's own path with every enclosing object's members that are ``true``
    named in it (``<!thought>``; None while there are none: the own path). A client that skips
    what a flag marks -- a thought part (``"thought": true``, google-genai's ``response.text``), a
    special token (TGI's ``"special": true``, LangChain) -- joins the texts of the others: the
    stitcher follows those apart once a flagged text comes (:meth:`PathStitcher._skipped`); the own
    path still joins them all, as a client that skips none."""
    # (A list filled by recursion, not nested generators: a token stream's event is read a dozen
    # times a second per stream, and each level of ``yield from`` cost a frame per leaf.)
    if depth > JSON_DEPTH:
        raise ScrubRefused("", "an event nested too deep to read")
    if isinstance(doc, str):
        text = doc.encode("utf-8", "surrogatepass")
        if tagged == path:
            paths: tuple[str, ...] = (path,) if indexed == path else (path, indexed)
        else:
            paths = (path, tagged) if indexed in (path, tagged) else (path, tagged, indexed)
        if flagged is not None and flagged not in paths:
            paths = (*paths, flagged)
        out.append((paths, text))
        if not doc.isascii() and (folded := _fold(doc)) != doc:
            # (on every path: a client that stitches by output, or skips flagged texts, then cleans)
            out.append((tuple(p + _FOLD for p in paths), folded.encode("utf-8", "surrogatepass")))
            for layer, fixed in zip(_REPAIRED, repaired(without_controls(text)), strict=False):
                # (and one that repairs mojibake first, each layer of it a path of its own: a
                # character garbled across two texts is not read, see README)
                read = _fold(fixed.decode("utf-8", "replace")).encode()
                out.append((tuple(p + _FOLD + layer for p in paths), read))
        if doc[:1] in _JSON_FIRST or doc[-1:] in _JSON_LAST:
            # JSON in a JSON string: a client may parse it again (pusher-js's data, ably-js's
            # encoding: json) and stitch its leaves, under the string's paths -- with whitespace
            # around it (JSON.parse skips it: a server's ``json_encode($x) . "\n"``), and a string
            # too (``json_encode`` of a string: its text is what the client appends).
            bare = doc.strip(_JSON_SPACE)
            if len(bare) > 1 and (bare[0], bare[-1]) in _JSON_ENDS and path.count(_INNER) < INNER_DEPTH:
                try:
                    inner = _LENIENT_JSON.decode(bare)
                except ValueError:
                    return
                if isinstance(inner, dict | list | str):
                    inner_flagged = None if flagged is None else flagged + _INNER
                    _collect_leaves(inner, path + _INNER, tagged + _INNER, indexed + _INNER, out, inner_flagged,
                                    depth + 1)  # fmt: skip
    elif isinstance(doc, dict):
        for key in _OUTPUT_KEYS:
            value = doc.get(key)
            if value is None:
                continue
            # A position must be a natural number: a Python client indexes its list with what came
            # (the Anthropic SDK's ``content[event.index]``, events built by ``construct``), so
            # ``true`` is output 1 and ``-1`` whichever output is last so far -- which a later
            # output changes. No real API sends either: refused, not resolved. (Past 64 digits the
            # reader takes an integer as -1: refused too; a list has no such index either.)
            if isinstance(value, bool):
                if key in _INDEX_KEYS:
                    raise ScrubRefused("", _NO_POSITION)  # (``content[True]`` is ``content[1]`` to Python)
                continue
            if isinstance(value, float) and value.is_integer():
                value = int(value)  # (1.0 is 1 to a JavaScript client)
            if isinstance(value, int | str):
                if key in _INDEX_KEYS and isinstance(value, int) and value < 0:
                    raise ScrubRefused("", _NO_POSITION)  # (``content[-1]``: whichever output is last so far)
                tag = f"<{key}={_part(str(value))}>"  # (1 and "1" alike: one property to JavaScript)
                tagged += tag
                if key in _INDEX_KEYS:
                    indexed += tag
        # (C's loops first: ``1 == True`` and ``1.0 == True`` too, so then asked exactly)
        if True in doc.values() or "thought" in doc or "special" in doc:
            flags = "".join(_FLAG + _part(k) + ">" for k, v in doc.items() if _is_flag(k, v))
            if flags:
                flagged = (path if flagged is None else flagged) + flags
        for k, v in doc.items():
            if isinstance(v, str | dict | list):  # (numbers, booleans and nulls hold no text)
                # An object keyed "0", "1"... reads as an array to JavaScript's choices[0], lodash, gjson.
                if k.isdigit():
                    step, position = f"[{k}]", "[]"
                else:
                    step = position = "." + _part(k)
                _collect_leaves(v, path + step, tagged + position, indexed + position, out,
                                None if flagged is None else flagged + step, depth + 1)  # fmt: skip
    elif isinstance(doc, list):
        # The strings before an object or array name it (Socket.IO's ``["delta", {...}]``, Phoenix's
        # ``[join_ref, ref, topic, event, payload]``): its client calls the handler of those names.
        # Not ids and counters (all digits: Phoenix's refs count up).
        names = ""
        for i, v in enumerate(doc):
            if isinstance(v, str | dict | list):
                step = f"[{i}]"
                _collect_leaves(v, path + step, tagged + names + "[]", indexed + "[]", out,
                                None if flagged is None else flagged + step, depth + 1)  # fmt: skip
                if isinstance(v, str) and i < _NAMING_ITEMS and len(v) <= _NAME_MAX and not v.isdigit():
                    names += f"<[{i}]={_part(v)}>"


_SSE_START = re.compile(rb"(?:data|event|id|retry):|:")
_SSE_FIELDS = (b"data:", b"event:", b"id:", b"retry:")


def _sniff(head: bytes, final: bool) -> str | None:
    """ "sse" when a body begins as an event stream does (its first line a ``data:``, ``event:``,
    ``id:``, ``retry:`` or comment line), "body" otherwise; None while too few bytes tell."""
    start = head.lstrip(b"\xef\xbb\xbf \t\r\n")
    if not start:
        return "body" if final else None
    if _SSE_START.match(start):
        return "sse"
    if not final and len(start) < 6 and any(f.startswith(start) for f in _SSE_FIELDS):
        return None
    return "body"


# Where lines end, for the sniffer: CR and LF (SSE: CRLF, LF or a lone CR), and what else
# ``str.splitlines`` ends a line at (httpx's ``iter_lines``, which line-delimited JSON readers use).
_EOL = rb"(?:[\r\n\x0b\x0c\x1c-\x1e]|\xc2\x85|\xe2\x80[\xa8\xa9])"
_LS_PS = re.compile(rb"\xe2\x80[\xa8\xa9]")  # U+2028, U+2029 (a literal start: searched fast)
# What a line may begin with to begin a token stream: a ``data:`` field, or what begins as a JSON
# document -- an object or an array (readers skip blanks and a BOM), a string (unindented: every
# line of a pretty-printed document's properties begins with one, indented).
# A part line (:data:`_PART`) begins as one too.
_STARTS = rb"(?:data:|(?:\xef\xbb\xbf)?(?:[ \t]*+[{\[]|\")|" + _PART_OPEN + rb")"
_TOKEN_LINE = re.compile(_EOL + rb"(" + _STARTS + rb")")
# The same searches for a buffer whose lines all end in LF or CRLF (the usual case): a pattern that
# begins with a literal is searched for at memchr speed, one that begins with a class is tried at
# every byte (~250 us per 64 KiB of text).
_TOKEN_LINE_LF = re.compile(rb"\n(" + _STARTS + rb")")
_TOKEN_LINE_START = re.compile(_STARTS)
JSON_LINE_MAX = 1 << 16  # a line that begins as JSON is held this far to see whether it is a document


def _json_document(line: bytes) -> bool:
    """Whether ``line`` is a JSON object, array or string with text in it (what a line reader
    stitches), read as a lenient client reads it. A line of pretty-printed JSON that opens or
    closes a nesting is not: asked for first, cheaply. A part line (:data:`_PART`) is one when its
    value is."""
    if line.rstrip(b" \t")[-1:] not in (b"}", b"]", b'"'):
        return False
    try:
        doc = _read_json(_unprefixed(line))
    except RecursionError:
        return True  # (read as one, it is refused: too deep to check)
    except ValueError:
        return False
    return _has_text(doc)


def _has_text(doc: object, depth: int = 0) -> bool:
    """Whether ``doc`` has a string leaf (found without listing every leaf); deeper than
    JSON_DEPTH, taken to have one (what would read it refuses it)."""
    if isinstance(doc, str) or depth > JSON_DEPTH:
        return True
    if isinstance(doc, dict):
        return any(_has_text(v, depth + 1) for v in doc.values())
    return isinstance(doc, list) and any(_has_text(v, depth + 1) for v in doc)


def _filler(line: bytes) -> bool:
    """Whether a line a line-delimited JSON reader stitches nothing from, and skips, lies between
    two documents it does: a blank one, a comment (``: keep-alive``), a JSON document with no text
    (``{}``, ``{"done": false}``), a part line whose value is one (``d:{}``)."""
    line = _unprefixed(line.strip(b" \t"))
    if not line or line[:1] == b":":
        return True
    if line[:1] not in (b"{", b"[") or line[-1:] not in (b"}", b"]") or len(line) > JSON_LINE_MAX:
        return False
    try:
        return not _has_text(_read_json(line))
    except (ValueError, RecursionError):
        return False


def _after_fillers(buf: bytes, at: int, odd: bool) -> int:
    """Where the first line from ``at`` on begins that is no filler (:func:`_filler`), or is not
    complete yet (or len(buf)). Fillers are skipped up to JSON_LINE_MAX bytes: past that, the line
    there counts (a stated limit: two documents further apart are not stitched)."""
    pos = at
    while True:
        blanks = _BLANKS.match(buf, pos)
        pos = blanks.end() if blanks is not None else pos  # (it always matches: ``*+``)
        if pos == len(buf) or pos - at > JSON_LINE_MAX:
            return pos
        end = _line_end(buf, pos, odd)
        if end < 0 or not _filler(buf[pos:end]):
            return pos
        pos = end


def _odd_line_ends(buf: bytes) -> bool:
    """Whether a line of ``buf`` ends otherwise than in LF or CRLF (a lone CR, VT, FF, RS...). By
    single-byte finds (memchr): a search for the class would be tried at every byte (~800 us per
    64 KiB)."""
    find = buf.find
    if find(b"\r") >= 0 and buf.count(b"\r") != buf.count(b"\r\n"):  # (count is no memchr: asked last)
        return True
    if find(b"\x0b") >= 0 or find(b"\x0c") >= 0 or find(b"\x1c") >= 0 or find(b"\x1d") >= 0 or find(b"\x1e") >= 0:
        return True
    if buf.isascii():
        return False
    return (find(b"\x85") >= 0 and find(b"\xc2\x85") >= 0) or (find(b"\xe2") >= 0 and _LS_PS.search(buf) is not None)


def _next_token_line(buf: bytes, start: int, odd: bool | None = None) -> int | None:
    """Where the next line after ``start`` begins that may begin a token stream, if one does."""
    odd = _odd_line_ends(buf) if odd is None else odd
    if not odd and buf.find(b"\n", start) < 0:
        return None
    m = (_TOKEN_LINE if odd else _TOKEN_LINE_LF).search(buf, start)
    return m.start(1) if m else None


_BLANKS = re.compile(rb"(?:[ \t\r\n\x0b\x0c\x1c-\x1e]|\xc2\x85|\xe2\x80[\xa8\xa9])*+")  # blanks and line ends
# A whole line that may be a JSON document (begins with {, [ or " and ends with }, ] or ", blanks
# aside).
_DOC_OPEN = rb"(?:\xef\xbb\xbf)?(?:[ \t]*+[{\[]|\"|" + _PART_OPEN + rb")"
_DOC = rb"(" + _DOC_OPEN + rb"[^\r\n]*[}\]\"][ \t]*)(?=[\r\n])"
_DOC_LINE_LF = re.compile(rb"\n" + _DOC)
# (Where lines may also end at VT, NEL, U+2028...: no such end inside the line, a slower pattern.)
_DOC_LINE = re.compile(_EOL + rb"(" + _DOC_OPEN + rb"(?:(?!" + _EOL + rb")[\s\S])*[}\]\"][ \t]*)(?=" + _EOL + rb")")
_DATA_LINE = re.compile(_EOL + rb"(data:)")
_DATA_LINE_LF = re.compile(rb"\n(data:)")
_EOL_RE = re.compile(_EOL)


def _line_end(buf: bytes, start: int, odd: bool) -> int:
    """Where the line at ``start`` ends, or -1."""
    if odd:
        m = _EOL_RE.search(buf, start)
        return m.start() if m else -1
    end = buf.find(b"\n", start)
    return end - 1 if end > start and buf[end - 1] == 0x0D else end  # (CRLF)


def _after_line_end(buf: bytes, start: int, odd: bool) -> int:
    """Where the line after the one at ``start`` begins, or len(buf)."""
    if odd:
        m = _EOL_RE.search(buf, start)
        return m.end() if m else len(buf)
    i = buf.find(b"\n", start)
    return i + 1 if i >= 0 else len(buf)


def _last_line_start(buf: bytes, odd: bool) -> int:
    if odd:
        last = 0
        for m in _EOL_RE.finditer(buf, max(0, len(buf) - JSON_LINE_MAX - 8)):
            last = m.end()
        return last
    return max(buf.rfind(b"\n"), buf.rfind(b"\r")) + 1


class SniffingScrubber:
    """A streamed body whose Content-Type names no token stream. A client may read it as one all the
    same: an SSE client skips the lines that are no field it knows and stitches the ``data:``
    payloads; a line-delimited JSON reader stitches a field of the documents, one a line. So the
    body is scrubbed as an event stream from its first line if that line is an SSE field; else as
    a body up to the first line that is a ``data:`` field, or the first of two JSON document lines
    in a row (blank lines aside), and as a token stream either kind of client may read from there
    (:class:`EventScrubber`, "mixed"). What it holds back: the first bytes until the first line
    tells; a line's start that could still be ``data:`` or JSON (a few bytes); a line that begins
    as JSON, until it ends and the next line begins (up to JSON_LINE_MAX: a longer line is a body's,
    not followed by later lines -- a stated limit)."""

    def __init__(self, finder: Finder, on_hit: OnHit) -> None:
        self._finder = finder
        self._on_hit = on_hit
        self._body: BodyScrubber | None = None
        self._events: EventScrubber | None = None
        self._head = b""  # bytes not yet given to a scrubber: the first ones, or a line's start
        self._line_start = True  # the next byte the body scrubber gets begins a line

    def feed(self, chunk: bytes) -> bytes:
        if self._events is not None:
            return self._events.feed(chunk)
        buf = self._head + chunk if self._head else chunk
        self._head = b""
        if self._body is None:  # the first line decides, as soon as it can
            kind = _sniff(buf, final=False)
            if kind is None:
                self._head = buf
                return b""
            if kind == "sse":
                return self._to_events(b"", buf, "mixed")
            self._body = BodyScrubber(self._finder, self._on_hit)
        return self._body_until_tokens(buf)

    def _finish_events(self) -> bytes:
        # (A method of its own: where _events was found None, mypy does not see _to_events set it,
        # and the compiled code would check it as None.)
        events = self._events
        assert events is not None
        return events.finish()

    def _to_events(self, body: bytes, rest: bytes, kind: str) -> bytes:
        out = b""
        events = EventScrubber(self._finder, self._on_hit, kind)
        if self._body is not None:
            out = self._body.feed(body) + self._body.finish() if body else self._body.finish()
            events._seed(self._body)  # (the body's bytes read on as a body's: see _BodyReading)
        self._events = events
        return out + events.feed(rest)

    def _body_until_tokens(self, buf: bytes) -> bytes:
        # A line end cut by the chunk (NEL is two bytes, U+2028 three) waits for its rest.
        cut = 1 if buf[-1:] in (b"\xc2", b"\xe2") else 2 if buf[-2:] == b"\xe2\x80" else 0
        if not cut:
            return self._body_lines(buf)
        out = self._body_lines(buf[:-cut])
        if self._events is not None:
            return out + self._events.feed(buf[-cut:])
        self._head += buf[-cut:]
        return out

    def _body_lines(self, buf: bytes) -> bytes:
        assert self._body is not None
        odd = _odd_line_ends(buf)
        if self._line_start and not odd and buf.find(b"\n") < 0 and buf.find(b"\r") < 0:
            # One line, not complete (a large JSON document arrives so): hold it while it may yet
            # be a JSON line or a data: field, else it is a body's.
            if self._may_begin_tokens(buf):
                self._head = buf
                return b""
            self._line_start = False
            return self._body.feed(buf)
        first = 0 if self._line_start else _after_line_end(buf, 0, odd)  # the first whole line's start
        data = buf.find(b"data:", first)
        if data >= 0 and not (data == first and (first > 0 or self._line_start)):
            m = (_DATA_LINE if odd else _DATA_LINE_LF).search(buf, first)
            data = m.start(1) if m else -1
        # Before that, two JSON document lines in a row: line-delimited JSON from the first.
        hold = -1
        lines: Iterable[tuple[int, int]] = (
            (m.start(1), m.end())
            for m in (_DOC_LINE if odd else _DOC_LINE_LF).finditer(
                buf, max(first - 3, 0), data if data >= 0 else len(buf)
            )
        )
        if first == 0 and _TOKEN_LINE_START.match(buf) and not buf.startswith(b"data:"):
            end = _line_end(buf, 0, odd)  # (the first line: found by hand, a regex would scan it twice)
            if end >= 0 and buf[:end].rstrip(b" \t")[-1:] in (b"}", b"]", b'"'):
                lines = itertools.chain([(0, end)], lines)
        # (Two, blank lines aside: one document line alone is a pretty-printed document's last array
        # element as often as a stream's first line.)
        for at, line_end in lines:
            if at < first:
                continue
            nxt = _after_fillers(buf, line_end, odd)
            if nxt == len(buf):
                hold = at  # complete, and nothing after it yet: the last line, or not
                break
            nxt_end = _line_end(buf, nxt, odd)
            if nxt_end < 0:  # the next line is not complete yet: it may be the second document
                rest = buf[nxt:]
                if (self._may_begin_tokens(rest) or rest.lstrip(b" \t")[:1] == b":") and _json_document(
                    buf[at:line_end]
                ):
                    hold = at
                    break
                continue
            if _json_document(buf[nxt:nxt_end]) and _json_document(buf[at:line_end]):
                return self._to_events(buf[:at], buf[at:], "mixed")
        if hold < 0 and data >= 0:
            return self._to_events(buf[:data], buf[data:], "mixed")
        if hold < 0:
            last = _last_line_start(buf, odd)
            if (last > 0 or self._line_start) and self._may_begin_tokens(buf[last:]):
                hold = last  # a line's start that could still be a data: field or a JSON document
        if hold >= 0:
            self._head = buf[hold:]
            buf = buf[:hold]
            self._line_start = True
        elif buf:
            self._line_start = False
        return self._body.feed(buf) if buf else b""

    @staticmethod
    def _may_begin_tokens(line: bytes) -> bool:
        """Whether an incomplete line could still be a data: field or a JSON document."""
        if len(line) > JSON_LINE_MAX:
            return False
        return (
            (len(line) < 5 and b"data:".startswith(line))
            or _PART_BEGUN.match(line) is not None
            or not line.strip(b" \t").removeprefix(b"\xef\xbb\xbf")
            or b"\xef\xbb\xbf".startswith(line)
            or _TOKEN_LINE_START.match(line) is not None
        )

    def finish(self) -> bytes:
        if self._events is not None:
            return self._events.finish()
        head, self._head = self._head, b""
        if self._body is None:
            if _sniff(head, final=True) == "sse":
                return self._to_events(b"", head, "mixed") + self._finish_events()
            self._body = BodyScrubber(self._finder, self._on_hit)
        odd = _odd_line_ends(head)
        if head and self._line_start and _line_end(head, 0, odd) >= 0:
            # Held from a JSON document line: with a second one after it, the body's last line
            # (no line end after it), it is line-delimited JSON.
            lines = [
                ln for ln in (_LINE_SPLIT.split(head) if odd else head.split(b"\n")) if not _filler(ln.strip(b" \t\r"))
            ]
            if len(lines) >= 2 and _json_document(lines[0].rstrip(b"\r")) and _json_document(lines[1].rstrip(b"\r")):
                return self._to_events(b"", head, "mixed") + self._finish_events()
        out = self._body.feed(head) if head else b""  # (a last JSON line: nothing after it to stitch)
        return out + self._body.finish()


def scrub_whole(body: bytes, finder: Finder, on_hit: OnHit) -> bytes:
    """A complete body: as :func:`scrub_field`, or as :class:`SniffingScrubber` reads it when a
    token reader could find events in it (an SSE field first, a ``data:`` line, or a line after
    the first that begins as JSON)."""
    # A plain body (no byte any decoding starts from, no line end of any kind: one Hyperscan scan)
    # has no line after its first; the memchr's of _next_token_line cost twice that scan (~15 us
    # per 64 KiB), and _read_field asks the same question.
    plain = _plain(body, True)
    if _sniff(body[:64], final=True) == "sse" or (not plain and _next_token_line(body, 0) is not None):
        # Read as a body too, for refusals: a client may read the bytes so whatever a token reader
        # reads (red team 44: a PEM block after a ``data:`` line). Whole, as scrub_field reads it
        # (a stream reads it with the window of bytes before each event: _BodyReading).
        _read_field(body, finder, lambda _: None, plain)
        s = SniffingScrubber(finder, on_hit)
        return s.feed(body) + s.finish()
    return _read_field(body, finder, on_hit, plain)[0]

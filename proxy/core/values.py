"""The real-value finder, written once: every form of a secret value Sandgate looks for, in
requests going out (``secret_value_outbound``) and in everything flowing back to the agent (the
scrubbers in :mod:`proxy.core.scrub`).

The forms of a value V: V itself; V lowercased and uppercased; V percent-encoded (upper- and
lower-case hex);
V in hex (lower and upper); V in base64 and base64url at each of the three alignments it can have
inside a longer encoded string (``Basic base64("user:" + V)`` puts it at an offset) -- for those,
the part of the encoding that depends on V alone, so at most two bytes of V at each end of an
encoded run are not covered; the hex and base64 forms of V lowercased and of V uppercased; V's
UTF-16LE in base64 and base64url and its UTF-16BE in base64 (a UTF-7 run) at each alignment; and
V in UTF-7 as its standard encoder writes it; V in the other encodings of Python's ``base64`` and
``binascii`` at each alignment (base32, base32hex, base85, Z85, Ascii85, and uuencode
where V fits one line: :func:`_stdlib_forms`); base64 of base64 and hex of UTF-16LE
(:func:`_stacked_forms`); and, for a value that holds a backslash, V without
it (the quoted-pair view drops every backslash); and, for a value with a character some EBCDIC
code page writes otherwise than code page 500, V in that page as code page 500 reads it
(:func:`ebcdic_misreads`: the EBCDIC view is code page 500's). Each form is replaced by the same
form of the secret's placeholder. What flows back to the agent is also searched for runs of a value
(:func:`runs_of`): any RUN (16) characters in a row past a key's public prefix, or half the value
when that is shorter. (Mixed case, escapes, UTF-16, UTF-7 with short runs, EBCDIC and the like
are decoded views of the bytes searched, not forms: :mod:`proxy.core.scrub`.)

The finder that searches for them is :mod:`proxy.core.finder` (compiled); its names are
re-exported here.
"""

from __future__ import annotations

import base64
import binascii
import re
import struct
import urllib.parse
from collections.abc import Callable, Iterable, Iterator

from proxy.core.finder import Finder, Hit, Pattern, finder_in_steps, scan

__all__ = ["Finder", "Hit", "Pattern", "build_finder", "forms", "outbound_runs_of", "patterns_of", "scan"]


def _stable(encode: Callable[[bytes], bytes], group: int, chars: int, data: bytes, align: int) -> bytes:
    """The characters of ``encode`` (``group`` bytes to ``chars`` characters) that depend on
    ``data`` alone when ``align`` other bytes precede it: the groups made of data only."""
    encoded = encode(b"\0" * align + data)
    first = -(-align // group)  # the first group made of data only
    last = (align + len(data)) // group  # one past the last such group
    return encoded[first * chars : last * chars]


def _b64_stable(data: bytes, align: int, urlsafe: bool) -> bytes:
    """The base64 characters that depend on ``data`` alone when ``align`` other bytes precede it."""
    stable = _stable(base64.b64encode, 3, 4, data, align)
    return stable.translate(bytes.maketrans(b"+/", b"-_")) if urlsafe else stable


# uuencode's line body is base64's 6-bit groups written as chr(32 + n) (``binascii.b2a_uu``; with
# ``backtick=True`` a zero group is ````` rather than a space).
_B64_TO_UU = bytes.maketrans(b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/", bytes(range(32, 96)))
UU_LINE = 45  # the bytes one uuencoded line holds


def _stdlib_forms(v: bytes, p: bytes) -> Iterator[tuple[bytes, bytes, bool]]:
    """(form of ``v``, the same form of ``p``, late) in the other binary-to-text encodings of
    Python's ``base64`` and ``binascii``, at every alignment a value can have inside a longer
    encoded run (the groups made of it alone): base32 as ``b32encode`` writes it and base32hex as
    ``b32hexencode`` does (5 alignments), base85 (``b85encode``: git, Mercurial), Z85 (ZeroMQ's
    alphabet for base85's groups) and Ascii85 (``a85encode``: PDF, PostScript; a form
    holding a backslash also without them, as the quoted-pair view reads a JSON string's ``\\\\``)
    at 4, and uuencode as ``b2a_uu`` writes it at 3 where ``v`` fits one line (a longer value is
    cut over lines: no form).

    Base32's, base32hex's, base85's, Z85's and Ascii85's are late patterns (:attr:`Pattern.late`, see
    :func:`patterns_of`), each also without its first PART_HOLD - 1 characters or more (whole
    groups): a stream may let those first characters go at a segment's end (a text cut between two
    paths a client joins), and what follows still holds a form. Uuencode's, like base64's, begin
    with the encoding of the value's first bytes (a vendor's prefix: the same for every key), and
    are held from their first character; with a space (a zero group) also as ``backtick=True``
    writes it. (Not base32 lower-cased, which ``b32decode`` refuses unless asked to fold case.)"""
    for encode, group, chars, aligns in (
        (base64.b32encode, 5, 8, 5),
        (base64.b32hexencode, 5, 8, 5),
        (b85encode, 4, 5, 4),
        (_z85encode, 4, 5, 4),
        (a85encode, 4, 5, 4),
    ):
        cut = chars * -(-(PART_HOLD - 1) // chars)  # (whole groups, PART_HOLD - 1 characters or more)
        for align in range(aligns):
            fv, fp = _stable(encode, group, chars, v, align), _stable(encode, group, chars, p, align)
            for tv, tp in ((fv, fp.translate(_QUOTE_FREE)), (fv[cut:], fp[cut:].translate(_QUOTE_FREE))):
                yield tv, tp, True
                if b"\\" in tv:
                    yield tv.replace(b"\\", b""), tp, True
    for align in range(3):
        if align + len(v) <= UU_LINE:
            uv, up = _stable(_uuencode, 3, 4, v, align), _stable(_uuencode, 3, 4, p, align).translate(_QUOTE_FREE)
            yield uv, up, False
            if b" " in uv:  # (``b2a_uu(backtick=True)``, GNU uuencode: a zero group as a backtick)
                yield uv.replace(b" ", b"`"), up.replace(b" ", b"`"), False


def _stacked_forms(v: bytes, p: bytes) -> Iterator[tuple[bytes, bytes]]:
    """(form of ``v``, the same form of ``p``) in two binary-to-text encodings stacked, as stores
    and protocols write them: base64 of base64 at every alignment of each (a Kubernetes Secret's
    ``.dockerconfigjson``, whose ``auth`` is ``base64("user:" + token)``, base64ed again with the
    rest of the document), and hex of UTF-16LE, lower- and upper-case (SQL Server's ``0x...`` of an
    NVARCHAR). Late patterns, as the forms of :func:`_stdlib_forms` are, but not also without their
    first characters: such a form cut between two token paths after 5 characters or fewer is not
    read (those 11 more patterns a value cost a token stream's event ~5 %)."""
    for inner in range(3):
        iv, ip = _b64_stable(v, inner, False), _b64_stable(p, inner, False)
        for outer in range(3):
            yield _b64_stable(iv, outer, False), _b64_stable(ip, outer, False)
    wv, wp = (
        binascii.hexlify(v.decode("utf-8", "replace").encode("utf-16-le")),
        binascii.hexlify(p.decode("utf-8", "replace").encode("utf-16-le")),
    )
    yield wv, wp
    yield wv.upper(), wp.upper()


# HZ's shifts (RFC 1843): to GB2312 and back, and a line continuation; its decoder drops them.
HZ_SHIFT_BYTES = rb"~(?:[{}]|\r?\n)"
HZ_SHIFT = re.compile(HZ_SHIFT_BYTES)


# A replacement in place of a value's form stands where that form stood: inside a JSON string, a
# quoted header parameter. Ascii85's and uuencode's alphabets hold quotes and the backslash, which a
# placeholder's form may have where the value's had none (a JSON body turned invalid, or a string
# ended early): those become other characters of both alphabets (the form then decodes to other
# bytes than the placeholder's; never to the value's).
_QUOTE_FREE = bytes.maketrans(b"\"'\\", b"!#[")


# Z85 (ZeroMQ; ``base64.z85encode`` from Python 3.13) is base85 with another alphabet.
_B85_TO_Z85 = bytes.maketrans(
    b"0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz!#$%&()*+-;<=>?@^_`{|}~",
    b"0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ.-:+=^!/*?&<>()[]{}@%$#",
)


def _z85encode(data: bytes) -> bytes:
    return b85encode(data).translate(_B85_TO_Z85)


_B85 = b"0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz!#$%&()*+-;<=>?@^_`{|}~"
_A85 = bytes(range(33, 118))


def b85encode(data: bytes) -> bytes:
    """``base64.b85encode(data)``, without the table it keeps once called (below)."""
    return _85encode(data, _B85, False)


def a85encode(data: bytes) -> bytes:
    """``base64.a85encode(data)`` (a zero group as ``z``), without the table it keeps once called."""
    return _85encode(data, _A85, True)


def _85encode(data: bytes, alphabet: bytes, zeros: bool) -> bytes:
    """Base85 of ``data`` as ``base64``'s encoders write it (the last group cut to the characters
    its bytes need; ``zeros``: a zero group as ``z``, Ascii85's). base64's own build, at their first
    call, two tables of the 7,225 pairs of characters each, kept for the life of the process: ~0.7
    MiB of the sidecar's memory, for forms made once a policy (tests/proxy/core/test_values.py holds
    these to base64's)."""
    padding = -len(data) % 4
    chunks = []
    for (word,) in struct.iter_unpack("!I", data + b"\0" * padding):
        if zeros and not word:
            chunks.append(b"z")
            continue
        digits = bytearray(5)
        for i in range(4, -1, -1):
            word, digit = divmod(word, 85)
            digits[i] = alphabet[digit]
        chunks.append(bytes(digits))
    if padding:
        if chunks[-1] == b"z":
            chunks[-1] = alphabet[:1] * 5
        chunks[-1] = chunks[-1][:-padding]
    return b"".join(chunks)


def _uuencode(data: bytes) -> bytes:
    """A uuencoded line's characters, without its length character and line end."""
    return base64.b64encode(data).translate(_B64_TO_UU)


def forms(value: str, placeholder: str) -> list[tuple[bytes, bytes]]:
    """(form of the value, the same form of the placeholder), distinct forms only."""
    return [(p.find, p.replace) for p in patterns_of("", value, placeholder)]


def _forms(value: str, placeholder: str) -> dict[bytes, bytes]:
    """:func:`forms` but those of :func:`_stdlib_forms`, of any length."""
    v, p = value.encode(), placeholder.encode()
    out: dict[bytes, bytes] = {v: p, v.lower(): p.lower(), v.upper(): p.upper()}
    for lower in (False, True):
        qv, qp = urllib.parse.quote(value, safe=""), urllib.parse.quote(placeholder, safe="")
        if lower:
            qv, qp = _lower_escapes(qv), _lower_escapes(qp)
        out.setdefault(qv.encode(), qp.encode())
    # Encoded forms of the value as is and of its lower- and upper-cased copies (an upstream that
    # folds what it stores, then returns it encoded).
    for cv, cp in ((v, p), (v.lower(), p.lower()), (v.upper(), p.upper())):
        hv, hp = binascii.hexlify(cv), binascii.hexlify(cp)
        out.setdefault(hv, hp)
        out.setdefault(hv.upper(), hp.upper())
        for urlsafe in (False, True):
            for align in (0, 1, 2):
                out.setdefault(_b64_stable(cv, align, urlsafe), _b64_stable(cp, align, urlsafe))
    # A value that holds a backslash, without it: the quoted-pair view drops every backslash
    # (:func:`proxy.core.scrub._unquote_pairs`), ``\\`` too.
    if b"\\" in v:
        out.setdefault(v.replace(b"\\", b""), p)
    # A value that holds one of HZ's shifts (``~{``, ``~}``), without them: the shift view drops
    # them with a terminal's sequences (proxy.core.scrub._unshift), so a value with such a
    # sequence inside it reads there as this form, in any case (that view is searched lowercased too).
    hv = HZ_SHIFT.sub(b"", v)
    if hv != v:
        for cv, cp in ((hv, p), (hv.lower(), p.lower()), (hv.upper(), p.upper())):
            out.setdefault(cv, cp)
    # Text encodings a client decodes by itself: the value's UTF-16LE in base64 (PowerShell's
    # -EncodedCommand, NTLM, .NET blobs); its UTF-16BE in base64 (a UTF-7 run: modified base64,
    # no padding); and UTF-7 as its standard encoder writes it (``+`` as ``+-``). (EBCDIC is a view:
    # as forms, its bytes above 0x7F slowed the automaton ~2x for a policy of 256 secrets.)
    wv, wp = value.encode("utf-16-le"), placeholder.encode("utf-16-le")
    for urlsafe in (False, True):
        for align in (0, 1, 2):
            out.setdefault(_b64_stable(wv, align, urlsafe), _b64_stable(wp, align, urlsafe))
    bv, bp = value.encode("utf-16-be"), placeholder.encode("utf-16-be")
    for align in (0, 1, 2):
        out.setdefault(_b64_stable(bv, align, False), _b64_stable(bp, align, False))
    out.setdefault(value.encode("utf-7"), placeholder.encode("utf-7"))
    return out


# EBCDIC code pages a client may decode an answer in, besides 500 (the one proxy.core.scrub reads
# every body with a byte above 0x7F in): each reads some printable ASCII characters as other bytes
# than code page 500 does -- 37 (and 1140, 424, which agree with it there) ``| ! ^ [ ]``, 273
# ``{ ~ [ @ } \\ ]``, 1026 ``{ [ } ` ] $ @ ~ \\ # "``, 875 ``|``. Letters, digits, ``-``, ``_`` and
# ``.`` are the same in all of them.
EBCDIC_OTHERS = ("cp037", "cp273", "cp1026", "cp875")


def ebcdic_misreads(text: str) -> list[tuple[str, str]]:
    """(code page, ``text`` written in that code page as the code page 500 view reads it) for each
    code page of :data:`EBCDIC_OTHERS` that writes ``text`` (a value with a character above) other
    than code page 500 does, distinct readings only."""
    out: dict[str, str] = {}
    for codec in EBCDIC_OTHERS:
        try:
            seen = text.encode(codec).decode("cp500")
        except UnicodeEncodeError:
            continue
        if seen != text:
            out.setdefault(seen, codec)
    return [(codec, seen) for seen, codec in out.items()]


def _ebcdic_forms(value: str, placeholder: str) -> dict[bytes, bytes]:
    """The value's misreads (:func:`ebcdic_misreads`) as the view's bytes (latin-1), as is, lower-
    and upper-cased (the view is searched lowercased too: a value in mixed case), each replaced by
    the same misread of the placeholder (the same code page's, or the placeholder itself where
    that code page reads it as code page 500 does)."""
    out: dict[bytes, bytes] = {}
    for codec, seen in ebcdic_misreads(value):
        try:
            shown = placeholder.encode(codec).decode("cp500")
        except UnicodeEncodeError:
            shown = placeholder
        v, p = seen.encode("latin-1"), shown.encode("latin-1")
        for fv, fp in ((v, p), (v.lower(), p.lower()), (v.upper(), p.upper())):
            out.setdefault(fv, fp)
    return out


def patterns_of(name: str, value: str, placeholder: str) -> list[Pattern]:
    """The patterns of one secret's value: its :func:`forms`, each replaced by the same form of
    the placeholder. Base32's, base32hex's, base85's, Z85's and Ascii85's (:func:`_stdlib_forms`) are
    :attr:`Pattern.late`: at most alignments their first characters encode the value's random
    bytes, so almost any text's last byte begins one of a large policy's, and a token stream that
    keys each token by a path of its own (Hugging Face TGI) would have to remember, for every path
    it forgets, the rest of each (PathStitcher's MAX_RESTS: refused). On a path followed such a
    form is found whole (the window a stream keeps of what it sent reads it); cut between two
    paths a client joins, after PART_HOLD - 1 characters or fewer, its rest holds its tail form.
    What is let go: a form cut into pieces of PART_HOLD - 1 characters or fewer, each on a path
    of its own (a gap)."""
    common = _forms(value, placeholder)
    late: dict[bytes, bytes] = {}
    for fv, fp, is_late in _stdlib_forms(value.encode(), placeholder.encode()):
        if not is_late:
            common.setdefault(fv, fp)
        elif fv not in common:
            late.setdefault(fv, fp)
    for fv, fp in _stacked_forms(value.encode(), placeholder.encode()):
        if fv not in common:
            late.setdefault(fv, fp)
    misread = {f: r for f, r in _ebcdic_forms(value, placeholder).items() if f not in common and f not in late}
    return (
        [Pattern(name, f, r) for f, r in common.items() if len(f) >= 8]
        + [Pattern(name, f, r, late=True) for f, r in late.items() if f not in common and len(f) >= 8]
        + [Pattern(name, f, r, ebcdic=True) for f, r in misread.items() if len(f) >= 8]
    )


# Keys' public prefixes, vendor by vendor: every key of its kind begins so, so a run of one says
# nothing of the key (and docs and other keys show it). A list, not a pattern: a pattern would let
# a key's own random characters lengthen its "prefix" (``sk-proj-ab-cdef-...``: red team 14), and
# a hostile upstream knows the key, so it knows when that works. Longest first.
_PUBLIC_PREFIXES = tuple(
    sorted(
        (
            "sk-", "sk-proj-", "sk-svcacct-", "sk-admin-", "sk-None-", "sk-ant-", "sk-ant-api03-", "sk-ant-admin01-",
            "sk-or-v1-", "ghp_", "gho_", "ghu_", "ghs_", "ghr_", "github_pat_", "glpat-", "xoxb-", "xoxp-", "xoxa-",
            "xoxe-", "xapp-", "sk_live_", "sk_test_", "rk_live_", "rk_test_", "hf_", "npm_", "pypi-", "gsk_", "xai-",
            "AIza", "dop_v1_", "shpat_", "SG.",
            # PyPI's tokens are macaroons whose base64 begins with the index's name (red team 59:
            # two unrelated tokens shared those runs)
            "pypi-AgEIcHlwaS5vcmc", "pypi-AgENdGVzdC5weXBpLm9yZw",
        ),
        key=len,
        reverse=True,
    )
)  # fmt: skip
# A JSON Web Token (Supabase's anon and service_role keys): its header and claims are public (every
# HS256 token begins with the same header; a project's tokens share claims); the signature is not.
_JWT = re.compile(r"eyJ[A-Za-z0-9_-]*\.[A-Za-z0-9_-]+\.(?=[A-Za-z0-9_-]{16})")
RUN = 16  # a run of this many characters of a value (past its public prefix) is always found ...
RUN_MIN = 10  # ... or of half the value, when that is shorter, but never of fewer than this many
# A stream of segments (events, messages) holds a segment whose end could begin a run's piece only
# once that end is PART_HOLD characters long (whole forms: scrub.MIN_HOLD), so that texts ending in
# a few characters that happen to begin a piece are not delayed (with 256 values, 3 characters did
# 4 % of the time). The pieces cover runs PART_HOLD - 1 shorter than the run length: a run cut at a
# segment's end either leaves PART_HOLD characters there (held, then found whole) or fewer (let go,
# and what follows still holds a piece).
PART_HOLD = 6


def runs_of(value: str) -> list[bytes]:
    """Pieces of ``value`` past its public prefix, lowercased, chosen so that every run of
    :func:`run_length` or more of its characters there holds one: a truncated echo (an error that
    quotes the first 30 characters of a key), or a value cut in two anywhere (one half always holds
    such a run), is then found, in any case (a text with upper-case letters is also searched
    lowercased). A piece is refused where it is found, never replaced: replacing a run of a value
    split in two would hide from the token-stream stitcher the whole value its halves make.

    The pieces are ``m = c - step + 1`` characters long, at every ``step``-th offset and at the
    last one (``c`` the run length less PART_HOLD - 1, at least 8; ``step = c // 3``): a run of
    ``c`` characters starting at ``p`` holds the piece at the first offset from ``p`` on, which is
    at most ``step - 1`` further and ends within the run. About ``n / step`` pieces for ``n``
    characters (a 164-character key: ~50) instead of every run (``n - c``). A run of fewer than 7
    characters is never found."""
    return list(dict.fromkeys(piece.lower().encode() for piece in _run_pieces(value, value)))


def ebcdic_runs_of(value: str) -> list[bytes]:
    """The pieces of :func:`runs_of` of each of ``value``'s :func:`ebcdic_misreads`, as the code page
    500 view's bytes (latin-1; lowercased as that view is: ASCII letters only), but those that
    are pieces of ``value`` itself."""
    own = set(runs_of(value))
    out: dict[bytes, None] = {}
    for _, seen in ebcdic_misreads(value):
        for piece in _run_pieces(value, seen):
            b = piece.encode("latin-1").lower()
            if b not in own:
                out.setdefault(b)
    return list(out)


def _run_pieces(value: str, text: str) -> list[str]:
    """The pieces of :func:`runs_of` cut from ``text``: ``value`` or a reading of it as long."""
    secret = text[public_prefix(value) :]
    k = run_length(value)
    if k == 0:
        return []
    covered = max(8, k - PART_HOLD + 1)  # (see PART_HOLD)
    step = covered // 3
    m = covered - step + 1
    starts = list(range(0, len(secret) - m + 1, step))
    if starts[-1] != len(secret) - m:
        starts.append(len(secret) - m)
    return [secret[i : i + m] for i in starts]


def outbound_runs_of(value: str) -> list[bytes]:
    """The pieces of :func:`runs_of` that a request to any host is refused for (and a record or a
    log line redacted of): those of a value with RUN characters or more past its public prefix in
    each run (31 or more there), whose pieces are 9 characters -- one in 62**9 for a random key's
    to be in an ordinary request. A shorter value's pieces are 7 or 8 characters, and a value made
    of words (``sk-test-bench-...``) has pieces that ordinary requests hold (``-bench-``): requests
    are not refused for those, answers are."""
    return runs_of(value) if run_length(value) == RUN else []


def public_prefix(value: str) -> int:
    """The length of ``value``'s public prefix: a vendor's (:data:`_PUBLIC_PREFIXES`), or a JWT's
    header and claims; 0 when it has none."""
    jwt = _JWT.match(value)
    if jwt is not None:
        return jwt.end()
    return next((len(p) for p in _PUBLIC_PREFIXES if value.startswith(p)), 0)


def run_length(value: str) -> int:
    """The shortest run of ``value``'s characters (past its public prefix) that is always found:
    RUN, or half of them when that is shorter (a value cut in two anywhere leaves one half that
    long), but not under RUN_MIN; 0 for a value too short to have runs apart from its whole."""
    n = len(value) - public_prefix(value)
    k = max(RUN_MIN, min(RUN, (n + 1) // 2))
    return k if n > k else 0


def _lower_escapes(quoted: str) -> str:
    parts = quoted.split("%")
    return parts[0] + "".join("%" + q[:2].lower() + q[2:] for q in parts[1:])


def build_finder(
    values: Iterable[tuple[str, str, str]],
    pieces: Callable[[str], list[bytes]] | None = None,
    prefilter: bool = True,
    known: dict[tuple[str, str, str], list[Pattern]] | None = None,
) -> Iterator[Finder | None]:
    """Build a finder in steps: yields None between steps (the caller lets other work run there),
    then the finder. A step makes one value's patterns (~1-60 ms for 100 to 6,000 characters) or
    builds one automaton (:data:`~proxy.core.finder.SHARD_BYTES`). ``pieces``: the runs' pieces of
    a value to search too (:func:`outbound_runs_of`), refused where found. ``prefilter``: see
    :class:`Finder`. ``known``: the :func:`patterns_of` of a (name, value, placeholder) triple
    already made, taken from there; those made here are added (a caller that keeps it from one
    build to the next remakes only what a rotation changed; ``Finder.for_values`` takes it too)."""
    patterns: list[Pattern] = []
    for triple in values:
        name, value, ph = triple
        made = None if known is None else known.get(triple)
        if made is None:
            made = patterns_of(name, value, ph)
            if known is not None:
                known[triple] = made
            yield None
        patterns += made
        if pieces is not None:
            patterns += [Pattern(name, f, b"", part=True) for f in pieces(value)]
    yield from finder_in_steps(patterns, prefilter)

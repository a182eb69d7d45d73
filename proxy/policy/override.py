"""The methods a request names for itself besides its request line: the ``_method`` parameter.

Rails (Rack's ``MethodOverride``), Laravel and Symfony, Spring (``HiddenHttpMethodFilter``), Go's
gorilla/handlers, Phoenix (``Plug.MethodOverride``), ASP.NET Core (``UseHttpMethodOverride`` with a
form field) and Express (``method-override``) take a parameter of a ``POST`` for its method, so ``POST /items/7`` with ``_method=DELETE`` deletes (Salesforce's REST API reads
``_HttpMethod``). A rule's ``methods`` must judge the method the application will act on, so
every method named that way is judged too (:func:`proxy.policy.decide.overridden`). The header
forms (``X-HTTP-Method-Override`` and the like) never reach the upstream: the data path removes
them.

Where the name is read (red team 64 and after it: each of these took a ``DELETE`` past
``methods: [GET, POST]`` with the key):

- the query: pairs split at ``&`` and ``;`` (Rack 2 splits at both), names and values
  percent-decoded (``_%6Dethod``), ``+`` read as a blank;
- the body of a ``POST``: as a form when it has no Content-Type or an empty one (Rack reads such
  a body as one) or an ``application/x-www-form-urlencoded`` one, also in its declared charset when
  that does not read ASCII as ASCII (ASP.NET reads a UTF-16 form); as JSON when the Content-Type
  says ``/json`` or ``+json`` anywhere (Laravel's test; a top-level member, ``\\u`` escapes
  decoded); as ``multipart/*`` parts by every ``name`` parameter in their head (``name*=`` decoded,
  a folded ``Content-Disposition`` read whole, as Go and Rack read it).

A name is read as PHP registers it (Symfony and Laravel read PHP's ``$_GET``/``$_POST``): cut at
a NUL, leading blanks dropped (``+method`` is ``method``), a blank or ``.`` is ``_`` (``.method``), a ``[``
without a ``]`` after it is ``_`` (``[method``) and one with a ``]`` ends the name
(``_method[]``); case is ignored (ASP.NET reads form fields so). Names read as an override:
``_method``, ``_httpmethod``, and any name with both ``method`` and ``override`` in it. Plain
``method`` or ``payment_method`` are ordinary fields (JSON-RPC, Stripe) and are not read.

Everything here is over-inclusive on purpose: reading a name no framework reads can only refuse a
request whose named method the policy denies. A part whose name reads as an override but whose
value cannot be read is taken to name :data:`UNREADABLE`, which no rule allows.
"""

from __future__ import annotations

import json
import re
import urllib.parse
from collections.abc import Iterable, Sequence

__all__ = [
    "PROBE",
    "UNREADABLE",
    "body_methods",
    "body_names_methods",
    "query_methods",
    "read_as_override",
]

# Not a token: no rule's ``methods`` can hold either (the policy loader takes tokens only).
UNREADABLE = "?"  # named where it could not be read: a part the boundaries did not give, JSON that did not parse
PROBE = "\0"  # decide() with it: does any method, by its name alone, get refused here?

_NAMES = frozenset({"_method", "_httpmethod"})
_SEPARATORS = re.compile(r"[&;]")
_RACK_NAME = re.compile(r"[\[\]]*([^\[\]]+)")
_FORM = "application/x-www-form-urlencoded"
_BOUNDARY = re.compile(r"""(?i);\s*boundary\s*=\s*(?:"([^"]+)"|([^\s;,]+))""")
_CHARSET = re.compile(r"""(?i);\s*charset\s*=\s*(?:"([^"]+)"|([^\s;,]+))""")
# A Content-Disposition's name parameter, ``name*=`` (RFC 7578 / 2231) included; ``filename`` is
# not one (no word boundary inside it).
_NAME_PARAM = re.compile(rb"""(?i)\bname(\*?)\s*=\s*(?:"((?:[^"\\]|\\.)*)"|'([^']*)'|([^;\r\n]*))""")
_CONTENT_ID = re.compile(rb"(?im)content-id\s*:\s*([^\r\n]*)")  # Rack 2: a part's name when its disposition has none
_HEAD_LINE = re.compile(rb"(?i)content-(?:disposition|id)\s*:")


def php_name(raw: str) -> str:
    """``raw`` as PHP registers a parameter's name (the rules in the module docstring)."""
    name = raw.split("\0", 1)[0].lstrip(" \t")
    bracket = name.find("[")
    while bracket >= 0:
        if name.find("]", bracket + 1) >= 0:
            name = name[:bracket]
            break
        name = name[:bracket] + "_" + name[bracket + 1 :]
        bracket = name.find("[", bracket + 1)
    return name.rstrip().replace(" ", "_").replace(".", "_")


def rack_name(raw: str) -> str:
    """``raw`` as Rack 2 (``normalize_params``) and ``qs`` (Express, Koa) take a top-level name: the
    first run of characters that are no brackets, after any leading ones (``[_method]``,
    ``[]_method``, ``_method]``)."""
    m = _RACK_NAME.match(raw)
    return m.group(1) if m is not None else ""


def read_as_override(raw: str) -> bool:
    """Whether a parameter called ``raw`` (decoded) names the request's method to some framework."""
    for name in (php_name(raw).lower(), rack_name(raw).strip().lower()):
        if name in _NAMES or ("method" in name and "override" in name):
            return True
    return False


def _method(value: str) -> str | None:
    """The method a value names, as the frameworks read it (blanks dropped, upper-cased); None for
    an empty one (they keep the request's own)."""
    method = value.strip().upper()
    return method or None


def _pairs(text: str) -> Iterable[tuple[str, str]]:
    for pair in _SEPARATORS.split(text):
        if not pair:
            continue
        name, _, value = pair.partition("=")
        yield (
            urllib.parse.unquote_plus(name, encoding="latin-1"),
            urllib.parse.unquote_plus(value, encoding="latin-1"),
        )


def query_methods(query: str) -> list[str]:
    """The methods a query (or a form body, as text) names for the request."""
    if "%" not in query and "method" not in query.lower():  # (every name read holds "method" or an escape)
        return []
    found: list[str] = []
    for name, value in _pairs(query):
        if read_as_override(name) and (m := _method(value)) is not None:
            found.append(m)
    return found


def _readings(content_types: Sequence[str]) -> set[str]:
    """How the frameworks read a POST body with these Content-Type field values: "form", "json",
    "multipart" (each value's comma-separated pieces all counted: over-inclusive)."""
    if not content_types:
        return {"form"}  # Rack parses a POST body without a Content-Type as a form
    readings: set[str] = set()
    for value in content_types:
        lowered = value.lower()
        if "/json" in lowered or "+json" in lowered:
            readings.add("json")
        for piece in lowered.split(","):
            media = re.split(r"[;\s]", piece.strip(), maxsplit=1)[0]  # (PHP ends it at a blank too)
            if media in (_FORM, ""):  # (an empty one: Rack takes it for none)
                readings.add("form")
            elif media.startswith("multipart/"):
                readings.add("multipart")
    return readings


def _declared_charsets(content_types: Sequence[str]) -> set[str]:
    return {m.group(1) or m.group(2) for value in content_types for m in _CHARSET.finditer(value)}


def _charsets(content_types: Sequence[str]) -> set[str]:
    """The declared charsets a form is also read in (ASP.NET reads a form in its charset) that do
    not read ASCII as ASCII (UTF-16, UTF-32...): the bytes read as Latin-1 would not show the name."""
    found = set()
    for name in _declared_charsets(content_types):
        try:
            if "_method=".encode(name) != b"_method=":
                found.add(name)
        except (LookupError, UnicodeError, ValueError):
            continue
    return found


def body_names_methods(content_types: Sequence[str]) -> bool:
    """Whether a POST body with these Content-Type values may name its method (so it is held whole
    and read before it leaves, where the method matters)."""
    return bool(_readings(content_types))


def body_methods(content_types: Sequence[str], body: bytes) -> list[str]:
    """The methods a POST body with these Content-Type values names for the request."""
    readings = _readings(content_types)
    found: list[str] = []
    if "form" in readings:
        found += query_methods(body.decode("latin-1"))
        for charset in _charsets(content_types):
            try:
                found += query_methods(body.decode(charset, "replace"))
            except (LookupError, UnicodeError, ValueError):  # (a codec that fails even so: punycode)
                continue
    if "json" in readings:
        found += _json_methods(content_types, body)
    if "multipart" in readings:
        found += _multipart_methods(content_types, body)
    return found


def _ignored(_: str) -> int:
    return 0


def _json_methods(content_types: Sequence[str], body: bytes) -> list[str]:
    """The top-level members' methods, the body read in each charset a parser may read it in (its
    declared ones, which Express's body-parser decodes; the one its bytes show), bytes that are no
    text replaced as body-parser replaces them. A body that does not parse (here: PHP and Node
    parse integers of any length and nest deeper) is taken to name :data:`UNREADABLE` (red team 66)."""
    members: list[tuple[str, object]] = []

    def top(pairs: list[tuple[str, object]]) -> dict[str, object]:
        nonlocal members
        members = pairs  # the last object closed is the outermost one
        return {}

    texts = set()
    for charset in {json.detect_encoding(body), *_declared_charsets(content_types)}:
        try:
            texts.add(body.decode(charset, "replace").lstrip("\ufeff"))
        except (LookupError, UnicodeError, ValueError):
            continue  # (a charset no parser decodes)
    found: list[str] = []
    for text in texts:
        members = []
        try:
            doc = json.loads(
                text, object_pairs_hook=top, parse_int=_ignored, parse_float=_ignored, parse_constant=_ignored
            )
        except (ValueError, RecursionError):
            return [UNREADABLE]
        if isinstance(doc, dict):
            found += [
                m
                for name, value in members
                if read_as_override(name) and isinstance(value, str) and (m := _method(value))
            ]
    return found


def _boundaries(content_types: Sequence[str]) -> set[bytes]:
    """Every boundary a parser may take from these Content-Type values: a ``boundary`` parameter's,
    and PHP's, which follows the text "boundary" wherever it first appears (``xboundary=``) up to
    ``,`` or ``;``, a blank after ``=`` kept (red team 66)."""
    found = set()
    for value in content_types:
        for m in _BOUNDARY.finditer(value):
            found.add(m.group(1) or m.group(2))
        lowered = value.lower()
        at = lowered.find("boundary")
        while at >= 0:
            rest = value[at + len("boundary") :]
            eq = rest.find("=")
            if eq >= 0:
                v = rest[eq + 1 :]
                if v.startswith('"'):
                    found.add(v[1:].split('"', 1)[0])
                else:
                    raw = re.split(r"[,;]", v, maxsplit=1)[0]
                    found |= {raw, raw.strip()}
            at = lowered.find("boundary", at + 1)
    return {b.encode("latin-1", "replace") for b in found if b}


def _header_lines(body: bytes) -> list[bytes]:
    """The body's lines with continuations joined (a line that begins with a blank, or has no
    ``:``, continues the one before it, as PHP reads part heads); an empty line never does."""
    lines: list[bytes] = []
    for line in re.split(rb"\r?\n", body):
        if lines and line and (line[:1] in (b" ", b"\t") or b":" not in line):
            lines[-1] += b" " + line.strip()
        else:
            lines.append(line)
    return lines


def _names_an_override(head: bytes) -> bool:
    """Whether any ``name`` parameter in a part's head (or a Content-Disposition line) reads as an
    override. (Every one: which of two a parser takes differs.)"""
    return _override_at(head) is not None


def _override_at(head: bytes) -> int | None:
    """Where in ``head`` the first name that reads as an override is (:func:`_names_an_override`)."""
    for m in _NAME_PARAM.finditer(head):
        if m.group(2) is not None:
            raw = re.sub(rb"\\(.)", rb"\1", m.group(2))
        else:
            raw = (m.group(3) if m.group(3) is not None else m.group(4)).strip()  # (PHP: 'quoted' too)
        text = raw.decode("latin-1")
        if m.group(1):  # name*=charset'language'percent-encoded
            text = urllib.parse.unquote(text.split("'", 2)[-1], encoding="latin-1")
        if read_as_override(text):
            return m.start()
    for m in _CONTENT_ID.finditer(head):
        if read_as_override(m.group(1).decode("latin-1").strip(" \t<>")):
            return m.start()
    return None


def _multipart_methods(content_types: Sequence[str], body: bytes) -> list[str]:
    found: list[str] = []
    read: set[int] = set()  # where in the body the names read are (a part split by two boundaries counts once)
    for boundary in _boundaries(content_types):
        delimiter = b"--" + boundary
        at = body.find(delimiter)
        while at >= 0:
            start = at + len(delimiter)
            at = body.find(delimiter, start)
            part = body[start : at if at >= 0 else len(body)]
            head, sep, value = part.partition(b"\r\n\r\n")
            if not sep:
                head, sep, value = part.partition(b"\n\n")
            # (the whole head: a Content-Disposition folded over lines is read so by Go and Rack)
            where = _override_at(head)
            if where is None:
                continue
            read.add(start + where)
            if value.endswith(b"\r\n"):
                value = value[:-2]
            elif value.endswith(b"\n"):
                value = value[:-1]
            if (method := _method(value.decode("latin-1"))) is not None:
                found.append(method)
    heads = [line for line in _header_lines(body) if _HEAD_LINE.search(line)]
    if len(read) < sum(1 for line in heads if _names_an_override(line)):
        found.append(UNREADABLE)  # a part named so that the boundaries did not give: judged unreadable
    return found

"""A MIME part's base64 declaration, however many blanks around its colon (red team 44, finding 8).

The email parser strips every blank around a header field's value, line breaks of a folded field
among them; base64 in a part so declared is read skipping every byte outside the alphabet. The
declaration was recognised with up to 28 blanks before ``base64``: 29 or more, or a folded field,
and the part's broken base64 (a value in it) went out unread.
"""

from __future__ import annotations

import base64
import email
import email.policy

import pytest

from proxy.core import scrub
from proxy.core.scrub import BodyScrubber, ScrubRefused, scrub_field
from proxy.core.values import Finder

VALUE = "sk-Ik2zwEQhs7T9aLm0pXv4"
V = VALUE.encode()
FINDER = Finder.for_values([("s", VALUE, "sk-sandgate-placeholder")])

# What Python's email parser reads (each policy): blanks after the colon, any number.
SPACINGS = {
    "one": b": ",
    "29-blanks": b":" + b" " * 29,
    "4000-blanks": b":" + b" " * 4000,
    "tabs": b":\t" + b"\t" * 40,
    "mixed": b":" + b" \t" * 30,
}
# What it does not read, but other readers may (a folded field is RFC 5322's; blanks before the
# colon are its obsolete syntax): read as a declaration too, the side that fails safe.
LENIENT = {
    "before-colon": b" " * 40 + b": ",
    "folded": b":\r\n   ",
    "folded-twice": b":\r\n \r\n\t",
    "quoted": b":" + b" " * 50 + b'"',
}


def part(spacing: bytes, name: bytes = b"Content-Transfer-Encoding", decoys: int = 0) -> bytes:
    blob = base64.b64encode(b"key=" + V)
    broken = b"!".join(blob[i : i + 3] for i in range(0, len(blob), 3))  # (a byte outside the alphabet every 3)
    head = b"X-A: 1\r\n" * decoys  # (colons before it: past the gate's first tries)
    close = b'"' if spacing.endswith(b'"') else b""
    return b"Content-Type: text/plain\r\n" + head + name + spacing + b"base64" + close + b"\r\n\r\n" + broken + b"\r\n"


def client(body: bytes) -> bytes:
    payloads = [
        email.message_from_bytes(body, policy=p).get_payload(decode=True)
        for p in (email.policy.compat32, email.policy.default)
    ]
    assert payloads[0] == payloads[1]
    return payloads[0]


@pytest.mark.parametrize("spacing", SPACINGS)
@pytest.mark.parametrize("decoys", [0, 20])
def test_a_declared_part_is_read_as_base64_whatever_the_blanks(spacing: str, decoys: int) -> None:
    body = part(SPACINGS[spacing], decoys=decoys)
    assert V in client(body)  # (the client reads the value)
    assert scrub._mime_base64(body)
    with pytest.raises(ScrubRefused):
        scrub_field(body, FINDER, lambda _: None)


@pytest.mark.parametrize("spacing", SPACINGS)
@pytest.mark.parametrize("size", [7, 100, 1000])
def test_a_declared_part_in_a_stream_is_refused(spacing: str, size: int) -> None:
    """The declaration's blanks across reads, longer than what a stream keeps before its window."""
    body = part(SPACINGS[spacing]) + b"x" * 3000 + part(b": ", name=b"X-Other")  # (then more of the stream)
    s = BodyScrubber(FINDER, lambda _: None)
    with pytest.raises(ScrubRefused):
        for i in range(0, len(body), size):
            s.feed(body[i : i + size])
        s.finish()


@pytest.mark.parametrize("spacing", LENIENT)
def test_other_spellings_of_a_declaration_are_read_as_one(spacing: str) -> None:
    body = part(LENIENT[spacing], decoys=20)
    assert scrub._mime_base64(body)
    with pytest.raises(ScrubRefused):
        scrub_field(body, FINDER, lambda _: None)


@pytest.mark.parametrize(
    "text",
    [
        b"Content-Transfer-Encoding: 7bit\r\n\r\nbase64 is a word\r\n",
        b"X-Content-Transfer-Encoding-ish base64\r\n",
        b"content-transfer-encoding base64\r\n",  # (no colon)
        b"Transfer-Encoding: base64\r\n",
        b"base64\r\n",
        b": base64\r\n",
    ],
)
def test_what_is_not_a_declaration(text: bytes) -> None:
    assert not scrub._mime_base64(text)


def test_the_field_name_in_any_case() -> None:
    assert scrub._mime_base64(b"CONTENT-transfer-ENCODING:\r\n \tBASE64\r\n")

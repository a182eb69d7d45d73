"""Encoders a client may use that Python 3.12's ``base64`` lacks, written for the tests on their own
(the product's forms are checked against these, not against themselves)."""

from __future__ import annotations

import base64

__all__ = ["z85decode", "z85encode"]

_B85 = b"0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz!#$%&()*+-;<=>?@^_`{|}~"
_Z85 = b"0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ.-:+=^!/*?&<>()[]{}@%$#"


def z85encode(data: bytes) -> bytes:
    """``base64.z85encode`` (Python 3.13): base85's big-endian 4-byte groups in ZeroMQ's alphabet
    (ZeroMQ RFC 32), a last partial group written as ``b85encode`` writes it."""
    return base64.b85encode(data).translate(bytes.maketrans(_B85, _Z85))


def z85decode(data: bytes) -> bytes:
    return base64.b85decode(data.translate(bytes.maketrans(_Z85, _B85)))

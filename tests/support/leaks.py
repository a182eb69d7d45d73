"""The NO-LEAK oracle (SECURITY-CASES 0.3): every encoding of every real value, searched for."""

from __future__ import annotations

import base64
import urllib.parse


def encodings(value: str) -> set[str]:
    raw = value.encode()
    return {
        value,
        value.lower(),
        base64.b64encode(raw).decode().rstrip("="),
        base64.urlsafe_b64encode(raw).decode().rstrip("="),
        urllib.parse.quote(value, safe=""),
        raw.hex(),
        base64.b64encode(b"x:" + raw).decode().rstrip("="),
    }


# Other real values the session uses (Vault-held secrets, Vault tokens): registered by their tests.
EXTRA: list[tuple[str, str]] = []


def find_leaks(text: str) -> list[str]:
    from tests.conftest import ALL_SECRETS

    values = [(s.name, s.real) for s in ALL_SECRETS] + EXTRA
    return [f"{name}:{form[:12]}..." for name, value in values for form in encodings(value) if form in text]

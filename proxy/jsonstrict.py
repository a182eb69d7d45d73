"""JSON read strictly and totally: RFC 8259 text in, plain values or :class:`NotJson` out.

Python's ``json.loads`` takes ``NaN``, ``Infinity`` and ``-Infinity`` (and reads ``1e999`` as
infinity), which no JSON encoder writes (the API server's Go encoder cannot), and which
``json.dumps`` then writes back, making an answer that is not JSON either (red team 45: a webhook patch). It raises RecursionError on deep nesting and
TypeError on a wrong input type besides its ValueError. Every JSON reader of the project that takes
text from elsewhere (the webhook's review bodies, the API server's answers, the relay's, the proxy's
``--env-file``) reads it here, so that any input gets plain values or this one error.
"""

from __future__ import annotations

import json
import math
from typing import Any

__all__ = ["NotJson", "loads"]


class NotJson(ValueError):
    """The text is not JSON (the message says why, without quoting it)."""


def _refuse(constant: str) -> Any:
    raise NotJson(f"{constant} is not a JSON number")


def _finite(text: str) -> float:
    value = float(text)
    if math.isinf(value):  # (1e999: float() says inf, which JSON cannot say back)
        raise NotJson("a number too large for a double")
    return value


def loads(data: bytes | bytearray | str) -> Any:
    """``json.loads`` of ``data``, refusing what RFC 8259 does not allow; raises NotJson, nothing
    else (MemoryError aside: it says nothing about the input)."""
    try:
        return json.loads(data, parse_constant=_refuse, parse_float=_finite)
    except (NotJson, MemoryError):
        raise
    except RecursionError:
        raise NotJson("it nests too deep") from None
    except json.JSONDecodeError as e:
        raise NotJson(f"{e.msg} at line {e.lineno}, column {e.colno}") from None
    except UnicodeDecodeError:
        raise NotJson("not UTF-8, UTF-16 or UTF-32 text") from None
    except Exception as e:  # (ValueError: an integer of more digits than Python reads; TypeError)
        raise NotJson(f"cannot read it as JSON ({type(e).__name__})") from None

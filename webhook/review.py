"""The AdmissionReview v1 envelope as the API server sends it, checked once at the webhook's edge.

TypedDicts declare the shape (as kopf does) and pydantic checks it strictly. A body that is not
that shape is a broken webhook call: HTTP 400 with a JSON error naming the field. The objects
inside (``object``, ``oldObject``) are checked by whoever reads them: the injector for pods, the
policy validation for ConfigMaps; a bad object is refused with ``allowed: false``, not a 400.

JSON nesting is bounded before parsing (a 100,000-deep body must cost a scan, not a
RecursionError), and the size by the server (``MAX_BODY``). The body must be JSON as RFC 8259 says:
``NaN``, ``Infinity`` and ``-Infinity``, which Python's parser takes, are a 400 (red team 45: they
went on into the patch, which then was not JSON).
"""

from __future__ import annotations

import base64
import json
import re
from collections.abc import Sequence
from itertools import accumulate
from typing import Annotated, Any, Literal, NotRequired, TypedDict

from pydantic import ConfigDict, StringConstraints, TypeAdapter, ValidationError, with_config

from injector.shape import field_errors
from proxy import jsonstrict

__all__ = [
    "MAX_BODY",
    "MAX_DEPTH",
    "AdmissionRequest",
    "AdmissionReview",
    "BadReview",
    "identify",
    "json_depth",
    "parse_review",
    "response",
]

MAX_BODY = 3 * 1024 * 1024  # the API server's own request limit is 3 MiB
# The envelope is 3 levels, a pod about 12: 100 leaves room, and keeps every later step (pydantic,
# the injector's own bound of 64, deepcopy, the JSON-patch diff) far from the recursion limit.
MAX_DEPTH = 100

_STRICT = ConfigDict(strict=True)
_DNS_LABEL = r"^([a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?)?$"


@with_config(_STRICT)
class GroupVersionKind(TypedDict):
    group: str
    version: str
    kind: str


@with_config(_STRICT)
class GroupVersionResource(TypedDict):
    group: str
    version: str
    resource: str


@with_config(_STRICT)
class UserInfo(TypedDict):
    username: NotRequired[str]
    uid: NotRequired[str]
    groups: NotRequired[list[str] | None]
    extra: NotRequired[dict[str, list[str]] | None]


@with_config(_STRICT)
class AdmissionRequest(TypedDict):
    uid: Annotated[str, StringConstraints(min_length=1, max_length=128)]
    kind: GroupVersionKind
    resource: GroupVersionResource
    subResource: NotRequired[str]
    requestKind: NotRequired[GroupVersionKind | None]
    requestResource: NotRequired[GroupVersionResource | None]
    requestSubResource: NotRequired[str]
    name: NotRequired[str]
    namespace: NotRequired[Annotated[str, StringConstraints(pattern=_DNS_LABEL)]]
    operation: Literal["CREATE", "UPDATE", "DELETE", "CONNECT"]
    userInfo: UserInfo
    object: NotRequired[dict[str, Any] | None]
    oldObject: NotRequired[dict[str, Any] | None]
    dryRun: NotRequired[bool | None]
    options: NotRequired[dict[str, Any] | None]


@with_config(_STRICT)
class AdmissionReview(TypedDict):
    apiVersion: Literal["admission.k8s.io/v1"]
    kind: Literal["AdmissionReview"]
    request: AdmissionRequest


_REVIEW = TypeAdapter(AdmissionReview)
_HINTS = {"request.userInfo.groups": "a list of group names", "request.namespace": "a namespace name"}


class BadReview(Exception):
    """A webhook call the API server would not make: answered with ``status`` and a JSON error."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


_STRING = re.compile(rb'"[^"\\]*(?:\\.[^"\\]*)*"')
_NOT_BRACKETS = bytes(b for b in range(256) if b not in b"[]{}")
_STEPS = bytes.maketrans(b"[{]}", b"\x02\x02\x00\x00")


def json_depth(raw: bytes) -> int:
    """How deep the JSON text ``raw`` nests, without parsing it: strings removed, brackets counted.
    Exact for valid JSON; for anything else the real parse fails anyway."""
    brackets = _STRING.sub(b"", raw).translate(None, _NOT_BRACKETS)
    if not brackets:
        return 0
    return max(0, max(accumulate(step - 1 for step in brackets.translate(_STEPS))))


def parse_review(raw: bytes) -> AdmissionReview:
    """The checked envelope, or :class:`BadReview` (400) naming what is wrong."""
    if json_depth(raw) > MAX_DEPTH:
        raise BadReview(400, f"the body is nested deeper than {MAX_DEPTH} levels; no AdmissionReview is")
    try:
        doc = jsonstrict.loads(raw)  # (NaN and Infinity refused: they would go on into the patch)
    except jsonstrict.NotJson as e:
        raise BadReview(400, f"the body is not JSON: {e}") from None
    try:
        return _REVIEW.validate_python(doc)
    except ValidationError as e:
        problems = field_errors(e, hints=_HINTS, root="the body", limit=3)
        raise BadReview(400, "not an admission.k8s.io/v1 AdmissionReview: " + "; ".join(problems)) from None


def identify(raw: bytes) -> tuple[str | None, str]:
    """The request's uid (when the body is at least that much of a review) and its operation
    (``unknown`` unless it is one the API server sends), for answers made without the full check."""
    try:
        request = jsonstrict.loads(raw)["request"] if json_depth(raw) <= MAX_DEPTH else {}
        uid, operation = request.get("uid"), request.get("operation")
    except (jsonstrict.NotJson, KeyError, TypeError, AttributeError):
        return None, "unknown"
    uid = uid if isinstance(uid, str) and 0 < len(uid) <= 128 else None
    return uid, operation if operation in ("CREATE", "UPDATE", "DELETE", "CONNECT") else "unknown"


MAX_WARNINGS = 10
MAX_WARNING_CHARS = 256  # the API server may truncate longer ones; kubectl prints each on its own line


def response(
    uid: str,
    *,
    allowed: bool,
    message: str = "",
    code: int = 403,
    patch: list[dict[str, Any]] | None = None,
    warnings: Sequence[str] = (),
) -> dict[str, Any]:
    """The AdmissionReview the API server expects back: same uid, a verdict, maybe a JSON patch,
    maybe warnings (kubectl shows them as ``Warning: ...``)."""
    answer: dict[str, Any] = {"uid": uid, "allowed": allowed}
    if warnings:
        shown = [w if len(w) <= MAX_WARNING_CHARS else w[: MAX_WARNING_CHARS - 3] + "..." for w in warnings]
        if len(shown) > MAX_WARNINGS:
            shown = [*shown[: MAX_WARNINGS - 1], f"... and {len(shown) - MAX_WARNINGS + 1} more warnings"]
        answer["warnings"] = shown
    if not allowed:
        reason = "Forbidden" if code == 403 else "InternalError"
        answer["status"] = {"code": code, "reason": reason, "message": message}
    if patch:
        answer["patchType"] = "JSONPatch"
        answer["patch"] = base64.b64encode(json.dumps(patch, allow_nan=False).encode()).decode()
    return {"apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview", "response": answer}

"""The shape of a pod as the injector reads it, checked once at the injector's edge.

Kubernetes never sends a pod whose fields have the wrong JSON type, but the webhook answers
whatever reaches it, and a refusal that names the field beats a crash. :func:`check_pod` checks
every field the injector reads or rewrites (types included; ``null`` reads as absent, as Go's JSON
decoder reads it) and the nesting depth of the whole object; past it, ``mutate`` trusts the types.
Fields the injector never looks at are left to the API server.

:func:`field_errors` turns a pydantic ``ValidationError`` into messages that name the field, say
what to write, and never quote the value (a pod's env may hold a secret). The injector's config and
the webhook's AdmissionReview envelope use it too.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from typing import Annotated, Any, NotRequired, TypedDict

from pydantic import ConfigDict, StringConstraints, TypeAdapter, ValidationError, with_config

__all__ = [
    "DNS_LABEL_WORDS",
    "MAX_DEPTH",
    "Pod",
    "check_pod",
    "describe_error",
    "field_errors",
    "is_policy_name",
    "json_type",
    "nested_deeper_than",
]

# A real pod is ~12 levels deep (managedFields mirror its structure a few levels down): 64 leaves
# room and keeps deepcopy and the JSON-patch diff far from Python's recursion limit.
MAX_DEPTH = 64

_STRICT = ConfigDict(strict=True)
# What a ConfigMap's, and so a policy's, name can be.
_DNS_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$")
DNS_LABEL_WORDS = "lower-case letters, digits and '-', at most 63 characters"


def is_policy_name(name: str) -> bool:
    return _DNS_LABEL.match(name) is not None


# Refusals quote the names of containers, volumes and runtime classes; mutating admission runs
# before the API server validates them, so their length is bounded here (Kubernetes allows 253).
Name = Annotated[str, StringConstraints(max_length=253)]


@with_config(_STRICT)
class EnvVar(TypedDict):
    name: str
    value: NotRequired[str | None]
    valueFrom: NotRequired[dict[str, Any] | None]


@with_config(_STRICT)
class VolumeMount(TypedDict):
    name: Name
    mountPath: str


@with_config(_STRICT)
class VolumeDevice(TypedDict):
    name: Name


@with_config(_STRICT)
class ContainerPort(TypedDict):
    hostPort: NotRequired[int | None]


@with_config(_STRICT)
class Capabilities(TypedDict):
    add: NotRequired[list[str] | None]
    drop: NotRequired[list[str] | None]


@with_config(_STRICT)
class Profile(TypedDict):
    """A seccompProfile or appArmorProfile."""

    type: NotRequired[str | None]


@with_config(_STRICT)
class SELinuxOptions(TypedDict):
    user: NotRequired[str | None]
    role: NotRequired[str | None]
    type: NotRequired[str | None]
    level: NotRequired[str | None]


@with_config(_STRICT)
class SecurityContext(TypedDict):
    privileged: NotRequired[bool | None]
    allowPrivilegeEscalation: NotRequired[bool | None]
    capabilities: NotRequired[Capabilities | None]
    runAsUser: NotRequired[int | None]
    runAsGroup: NotRequired[int | None]
    seccompProfile: NotRequired[Profile | None]
    appArmorProfile: NotRequired[Profile | None]
    seLinuxOptions: NotRequired[SELinuxOptions | None]
    procMount: NotRequired[str | None]


@with_config(_STRICT)
class Container(TypedDict):
    name: Name
    env: NotRequired[list[EnvVar] | None]
    volumeMounts: NotRequired[list[VolumeMount] | None]
    securityContext: NotRequired[SecurityContext | None]
    ports: NotRequired[list[ContainerPort] | None]
    volumeDevices: NotRequired[list[VolumeDevice] | None]
    targetContainerName: NotRequired[Name | None]


@with_config(_STRICT)
class Sysctl(TypedDict):
    name: str


@with_config(_STRICT)
class PodSecurityContext(TypedDict):
    runAsUser: NotRequired[int | None]
    runAsGroup: NotRequired[int | None]
    fsGroup: NotRequired[int | None]
    supplementalGroups: NotRequired[list[int] | None]
    seccompProfile: NotRequired[Profile | None]
    appArmorProfile: NotRequired[Profile | None]
    seLinuxOptions: NotRequired[SELinuxOptions | None]
    sysctls: NotRequired[list[Sysctl] | None]


@with_config(_STRICT)
class PodDNSConfig(TypedDict):
    nameservers: NotRequired[list[str] | None]
    searches: NotRequired[list[str] | None]


@with_config(_STRICT)
class ProjectedVolume(TypedDict):
    sources: NotRequired[list[dict[str, Any]] | None]


@with_config(_STRICT)
class Volume(TypedDict):
    name: Name
    projected: NotRequired[ProjectedVolume | None]


@with_config(_STRICT)
class PodOS(TypedDict):
    name: NotRequired[str | None]


@with_config(_STRICT)
class PodSpec(TypedDict):
    hostNetwork: NotRequired[bool | None]
    hostPID: NotRequired[bool | None]
    hostIPC: NotRequired[bool | None]
    shareProcessNamespace: NotRequired[bool | None]
    automountServiceAccountToken: NotRequired[bool | None]
    runtimeClassName: NotRequired[Name | None]
    hostAliases: NotRequired[list[dict[str, Any]] | None]
    dnsPolicy: NotRequired[str | None]
    dnsConfig: NotRequired[PodDNSConfig | None]
    volumes: NotRequired[list[Volume] | None]
    securityContext: NotRequired[PodSecurityContext | None]
    initContainers: NotRequired[list[Container] | None]
    containers: NotRequired[list[Container] | None]
    ephemeralContainers: NotRequired[list[Container] | None]
    nodeSelector: NotRequired[dict[str, str] | None]
    tolerations: NotRequired[list[dict[str, Any]] | None]
    os: NotRequired[PodOS | None]
    resources: NotRequired[dict[str, Any] | None]


@with_config(_STRICT)
class ObjectMeta(TypedDict):
    name: NotRequired[str | None]
    namespace: NotRequired[str | None]
    labels: NotRequired[dict[str, str] | None]
    annotations: NotRequired[dict[str, str] | None]


@with_config(_STRICT)
class Pod(TypedDict):
    metadata: NotRequired[ObjectMeta | None]
    spec: NotRequired[PodSpec | None]


_POD = TypeAdapter(Pod)
_POD_MAPS = frozenset({"labels", "annotations", "nodeSelector"})
_STRING_MAP = "a map of strings to strings"
_POD_HINTS = {
    "metadata.labels": _STRING_MAP,
    "metadata.annotations": _STRING_MAP,
    "spec.nodeSelector": _STRING_MAP,
    "spec.volumes": "a list of {name, <volume source>}",
    "spec.securityContext.supplementalGroups": "a list of GIDs (integers)",
    "spec.securityContext.sysctls": "a list of {name, value}",
    "spec.dnsConfig.nameservers": "a list of IP addresses",
    "spec.dnsConfig.searches": "a list of DNS domains",
    "spec.hostAliases": "a list of {ip, hostnames}",
    "spec.tolerations": "a list of tolerations",
    "spec.volumes[].projected.sources": "a list of {<projection>: {...}}",
    "spec.os": "{name: linux}",
}
for _kind in ("initContainers", "containers", "ephemeralContainers"):
    _POD_HINTS |= {
        f"spec.{_kind}": "a list of containers ({name, image, ...})",
        f"spec.{_kind}[].env": "a list of {name, value|valueFrom}",
        f"spec.{_kind}[].volumeMounts": "a list of {name, mountPath}",
        f"spec.{_kind}[].ports": "a list of {containerPort, ...}",
        f"spec.{_kind}[].volumeDevices": "a list of {name, devicePath}",
        f"spec.{_kind}[].securityContext.capabilities.add": "a list of capability names",
        f"spec.{_kind}[].securityContext.capabilities.drop": "a list of capability names",
    }


def check_pod(pod: object, *, limit: int = 5) -> list[str]:
    """Every way ``pod`` is not a pod the injector can read (at most ``limit``, then a count)."""
    if nested_deeper_than(pod, MAX_DEPTH):
        return [f"the object is nested deeper than {MAX_DEPTH} levels; no pod is"]
    try:
        _POD.validate_python(pod)
    except ValidationError as e:
        return field_errors(e, hints=_POD_HINTS, maps=_POD_MAPS, limit=limit, root="the pod")
    return []


def nested_deeper_than(value: object, limit: int) -> bool:
    """Iterative, so a 100,000-deep value costs a walk, not a RecursionError."""
    stack: list[tuple[object, int]] = [(value, 0)]
    while stack:
        node, depth = stack.pop()
        if isinstance(node, dict):
            children: Any = node.values()
        elif isinstance(node, list):
            children = node
        else:
            continue
        if depth >= limit:
            return True
        stack.extend((child, depth + 1) for child in children)
    return False


def json_type(value: object) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, int | float):
        return "a number"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, list | tuple):
        return "a list"
    if isinstance(value, dict):
        return "an object"
    return type(value).__name__


_EXPECTED = {
    "list_type": "must be a list",
    "dict_type": "must be an object",
    "model_type": "must be an object",
    "string_type": "must be a string",
    "int_type": "must be an integer",
    "bool_type": "must be true or false",
    "float_type": "must be a number",
}


def _problem(error: Mapping[str, Any]) -> str:
    kind, ctx = error["type"], error.get("ctx") or {}
    if kind in _EXPECTED:
        return f"{_EXPECTED[kind]} (got {json_type(error.get('input'))})"
    if kind == "missing":
        return "is required"
    if kind == "extra_forbidden":
        return "is not a known field"
    if kind == "literal_error":
        return f"must be {ctx.get('expected')}"
    bounds = {
        "greater_than_equal": ("ge", ">="),
        "greater_than": ("gt", ">"),
        "less_than_equal": ("le", "<="),
        "less_than": ("lt", "<"),
    }
    if kind in bounds:
        key, op = bounds[kind]
        return f"must be {op} {ctx.get(key)}"
    if kind == "string_too_short":
        return (
            "must not be empty"
            if ctx.get("min_length") == 1
            else f"must be at least {ctx.get('min_length')} characters"
        )
    if kind == "string_too_long":
        return f"must be at most {ctx.get('max_length')} characters"
    if kind == "too_short":
        return (
            "must not be empty" if ctx.get("min_length") == 1 else f"must have at least {ctx.get('min_length')} items"
        )
    return str(error.get("msg", "is invalid")).lower()


def _is_item(rest: str, kind: str) -> bool:
    return rest == "[]" or (kind == "missing" and re.fullmatch(r"\[\]\.\w+", rest) is not None)


def _key(key: str) -> str:
    shown = json.dumps(key)[1:-1]  # control characters and quotes escaped: a key is tenant input
    return shown if len(shown) <= 40 else shown[:40] + "..."


def _paths(loc: tuple[int | str, ...], maps: frozenset[str]) -> list[tuple[str, str]]:
    """(concrete, generic) for each prefix of ``loc``: ``spec.containers[0].env`` and
    ``spec.containers[].env``; a map's keys show as ``[key]`` and generalise to ``[]``."""
    out, concrete, generic, parent = [], "", "", ""
    for part in loc:
        if isinstance(part, int):
            concrete, generic = f"{concrete}[{part}]", f"{generic}[]"
        elif parent in maps:
            concrete, generic = f"{concrete}[{_key(part)}]", f"{generic}[]"
            part = ""
        else:
            sep = "." if concrete else ""
            concrete, generic = f"{concrete}{sep}{part}", f"{generic}{sep}{part}"
        parent = part if isinstance(part, str) else ""
        out.append((concrete, generic))
    return out


def field_errors(
    error: ValidationError,
    *,
    hints: Mapping[str, str] | None = None,
    maps: frozenset[str] = frozenset(),
    limit: int = 5,
    root: str = "the document",
) -> list[str]:
    """One message per problem, at most ``limit`` (and a count of the rest), each naming the field."""
    errors = error.errors(include_url=False, include_context=True, include_input=True)
    out = [describe_error(e, hints=hints, maps=maps, root=root) for e in errors[:limit]]
    if len(errors) > limit:
        out.append(f"and {len(errors) - limit} more")
    return out


def describe_error(
    error: Mapping[str, Any], *, hints: Mapping[str, str] | None = None, maps: frozenset[str] = frozenset(), root: str
) -> str:
    """One pydantic error as ``<field> <problem>``; the value itself is never quoted.

    ``hints`` maps a generic path (``spec.containers[].env``) to what the field must be; an error
    at that path, or in one of its items, says so: ``spec.containers[0].env must be a list of
    {name, value|valueFrom} (got a string)``. ``maps`` names the fields whose keys are data
    (``metadata.annotations[sandgate.dev/policy]``).
    """
    hints = hints or {}
    paths = _paths(tuple(error["loc"]), maps)
    where = paths[-1][0] if paths else root
    hinted = [(c, g) for c, g in paths if g in hints]
    if hinted and hinted[-1][0] == where and error["type"] != "missing":
        got = f" (got {json_type(error.get('input'))})" if error["type"] in _EXPECTED else ""
        return f"{where} must be {hints[hinted[-1][1]]}{got}"
    if hinted and _is_item(paths[-1][1].removeprefix(hinted[-1][1]), error["type"]):
        # A bad item of a hinted list or map, or an item missing a field: show the whole's shape.
        anc_concrete, anc_generic = hinted[-1]
        return f"{where} {_problem(error)} - {anc_concrete} must be {hints[anc_generic]}"
    return f"{where} {_problem(error)}"

"""The API server's ValidatingAdmissionPolicy admission, reduced to what the chart's policies use.

No API server runs here, so the chart's CEL is evaluated by cel-python (``celpy``: an implementation
of the CEL specification, independent of Kubernetes' cel-go) over the variables the API server
binds: ``object``, ``oldObject`` (null where the operation has none), ``request`` and
``namespaceObject`` (made from the namespace labels the caller passes). What this does not model is
said so: only ``resourceRules`` with groups, resources and operations, and a ``namespaceSelector``
(read as the API server reads a LabelSelector); no ``resourceNames``, no object selectors
(:func:`decide` refuses a policy that uses them), no params, no ``variables``, no audit
annotations, no defaulting of the objects, and no Kubernetes CEL library beyond the standard
macros. A runtime error refuses, as ``failurePolicy: Fail`` does.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from typing import Any

import celpy

__all__ = ["Decision", "Request", "decide", "holds", "selects"]


@dataclass(frozen=True)
class Request:
    operation: str  # CREATE | UPDATE | DELETE | CONNECT
    resource: str  # e.g. "mutatingwebhookconfigurations", "namespaces", "pods"
    username: str
    groups: tuple[str, ...] = ()
    group: str = ""  # the API group
    name: str = ""
    namespace: str = ""
    subresource: str = ""

    def cel(self) -> dict[str, Any]:
        return {"operation": self.operation, "name": self.name, "namespace": self.namespace,
                "subResource": self.subresource, "resource": {"group": self.group, "resource": self.resource},
                "userInfo": {"username": self.username, "groups": list(self.groups)}}  # fmt: skip


@dataclass(frozen=True)
class Decision:
    applies: bool  # matched by the policy's constraints and conditions
    allowed: bool
    messages: tuple[str, ...] = ()


_ENV = celpy.Environment()


@functools.cache
def _program(expression: str) -> Any:
    return _ENV.program(_ENV.compile(expression))


def _run(expression: str, activation: dict[str, Any]) -> bool | None:
    """True or False, or None where the API server would have had an error (which refuses)."""
    try:
        value = _program(expression).evaluate(activation)
    except Exception:  # celpy's parse and evaluation errors alike
        return None
    return bool(value) if isinstance(value, celpy.celtypes.BoolType) else None


def _activation(request: Request, obj: Any, old: Any, labels: dict[str, str] | None = None) -> dict[str, Any]:
    namespace = {"metadata": {"name": request.namespace, "labels": labels}} if labels is not None else None
    return {"object": celpy.json_to_cel(obj), "oldObject": celpy.json_to_cel(old),
            "request": celpy.json_to_cel(request.cel()), "namespaceObject": celpy.json_to_cel(namespace)}  # fmt: skip


def holds(expression: str, request: Request, obj: Any, old: Any) -> bool | None:
    """One expression (a webhook's matchCondition too): True, False, or None for an error."""
    return _run(expression, _activation(request, obj, old))


def _matches(rules: list[dict[str, Any]], request: Request) -> bool:
    for rule in rules:
        unsupported = set(rule) - {"apiGroups", "apiVersions", "operations", "resources", "scope"}
        if unsupported:
            raise NotImplementedError(f"resourceRules {sorted(unsupported)}: not modelled")
        groups, resources, operations = rule["apiGroups"], rule["resources"], rule["operations"]
        resource = f"{request.resource}/{request.subresource}" if request.subresource else request.resource
        if (("*" in groups or request.group in groups) and ("*" in resources or resource in resources)
                and ("*" in operations or request.operation in operations)):  # fmt: skip
            return True
    return False


def selects(selector: dict[str, Any], labels: dict[str, str]) -> bool:
    """A LabelSelector (matchLabels, matchExpressions In/NotIn/Exists/DoesNotExist) over ``labels``."""
    if any(labels.get(key) != value for key, value in (selector.get("matchLabels") or {}).items()):
        return False
    for e in selector.get("matchExpressions") or []:
        present, value = e["key"] in labels, labels.get(e["key"])
        ok = {"In": present and value in e.get("values", []), "NotIn": not present or value not in e.get("values", []),
              "Exists": present, "DoesNotExist": not present}[e["operator"]]  # fmt: skip
        if not ok:
            return False
    return True


def decide(
    policy: dict[str, Any], request: Request, obj: Any, old: Any, *, namespace_labels: dict[str, str] | None = None
) -> Decision:
    spec = policy["spec"]
    constraints = spec["matchConstraints"]
    unsupported = set(constraints) - {"resourceRules", "matchPolicy", "namespaceSelector"}
    if unsupported or "paramKind" in spec or "variables" in spec:
        raise NotImplementedError(f"{sorted(unsupported)}, params, variables: not modelled")
    if not _matches(constraints["resourceRules"], request):
        return Decision(applies=False, allowed=True)
    if "namespaceSelector" in constraints:
        if namespace_labels is None:
            raise ValueError("this policy selects namespaces: pass the namespace's labels")
        if not selects(constraints["namespaceSelector"], namespace_labels):
            return Decision(applies=False, allowed=True)
    activation = _activation(request, obj, old, namespace_labels)
    for condition in spec.get("matchConditions") or []:
        matched = _run(condition["expression"], activation)
        if matched is None:
            return Decision(applies=True, allowed=False, messages=(f"matchCondition {condition['name']}: error",))
        if not matched:
            return Decision(applies=False, allowed=True)
    failed = tuple(
        v.get("message") or v["expression"]
        for v in spec["validations"]
        if _run(v["expression"], activation) is not True
    )
    return Decision(applies=True, allowed=not failed, messages=failed)

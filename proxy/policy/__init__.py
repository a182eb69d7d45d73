"""Pure policy model: parse, canonicalise, decide. Imports no I/O library (import-linter enforces it)."""

from proxy.policy.decide import RequestFacts, decide
from proxy.policy.hosts import HostError, canonical_host
from proxy.policy.load import PolicyError, PolicyInvalid, load_policy, parse_policy
from proxy.policy.model import Decision, Mode, Policy, Reason, SecretBinding, Verdict

__all__ = [
    "Decision",
    "HostError",
    "Mode",
    "Policy",
    "PolicyError",
    "PolicyInvalid",
    "Reason",
    "RequestFacts",
    "SecretBinding",
    "Verdict",
    "canonical_host",
    "decide",
    "load_policy",
    "parse_policy",
]

"""Hypothesis strategies for EgressPolicy documents: mostly well-formed, with a mistake here and there.

Each field is a good value most of the time, a value only the loader can refuse (a non-canonical
host, an uncovered binding) some of the time, and junk (wrong types, huge strings, deep lists)
rarely, so generated documents cover valid policies, semantic errors and structural errors alike.
"""

from __future__ import annotations

from typing import Any

from hypothesis import strategies as st

_scalars = (
    st.none()
    | st.booleans()
    | st.integers(-(10**30), 10**30)
    | st.floats(allow_nan=True, allow_infinity=True)
    | st.text(max_size=30)
    | st.sampled_from(["", "*", "*.com", "api.example.com:443", "https://x.org", "GET", "PSOT", "{}", "\n"])
    | st.just("x" * 5000)
    | st.binary(max_size=5)
)
junk: st.SearchStrategy[Any] = st.recursive(
    _scalars,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8) | st.integers(), inner, max_size=4),
    max_leaves=25,
)


def mostly(good: st.SearchStrategy[Any], odds: int = 30) -> st.SearchStrategy[Any]:
    """``good``, and junk about once in ``odds`` draws (Hypothesis favours the ends of a range, so
    the junk branch is in its middle)."""
    return st.integers(0, odds - 1).flatmap(lambda i: junk if i == odds // 2 else good)


def _pick(*values: Any) -> st.SearchStrategy[Any]:
    return st.sampled_from(values)


def varied(
    good: tuple[Any, ...], loader_only: tuple[Any, ...] = (), malformed: tuple[Any, ...] = ()
) -> st.SearchStrategy[Any]:
    """Mostly a good value; sometimes one only the loader refuses (a rule no schema can state);
    now and then one that breaks the field's type or pattern. (Weights by sampling: Hypothesis's
    one_of would treat repeated branches as one.)"""
    kinds = ["good"] * 16 + ["loader_only"] * (3 if loader_only else 0) + ["malformed"] * (1 if malformed else 0)
    pools = {"good": good, "loader_only": loader_only, "malformed": malformed}
    return st.sampled_from(kinds).flatmap(lambda kind: st.sampled_from(pools[kind]))


def _list(item: st.SearchStrategy[Any], max_size: int = 3) -> st.SearchStrategy[Any]:
    return st.lists(item, max_size=max_size)


def _rule() -> st.SearchStrategy[dict[str, Any]]:
    return st.fixed_dictionaries(
        {
            "host": mostly(
                varied(
                    ("api.example.com", "b.example.com", "*.example.com", "10.0.0.1", "::1"),
                    ("API.example.com", "a.example.com:443", "*.co.uk", "https://a.example.com", "a.example.com."),
                    ("", 5),
                )
            )
        },
        optional={
            "ports": mostly(st.lists(varied((443, 8443, 443.0), (), (0, 70000, 443.5, True, "443")), min_size=1, max_size=3)),
            "methods": mostly(st.lists(varied(("GET", "POST", "VERSION-CONTROL", "PSOT"), (), ("get", "GET\n", "-GET")), min_size=1, max_size=3)),
            "paths": mostly(st.lists(varied(("/v1/*", "/"), (), ("v1", "/a?b", "/é", "/a b")), min_size=1, max_size=2)),
        },
    )  # fmt: skip


_SOURCES = (
    {"env": "KEY"},
    {"file": "/k"},
    {"vault": {"mount": "s", "path": "p", "key": "k"}},
)


def _secret() -> st.SearchStrategy[dict[str, Any]]:
    return st.fixed_dictionaries(
        {
            "name": mostly(varied(("openai", "gh", "openai-org"), (), ("Bad Name", ""))),
            "source": mostly(varied(_SOURCES, ({"vault": {"mount": "/", "path": "p", "key": "k"}},), ({"env": "K", "file": "/k"}, {}))),
            "hosts": mostly(
                st.lists(varied(("api.example.com", "b.example.com"), ("api.example.com:8443", "[::1]:443", "*.x.com", "c.example.com", "https://b.example.com"), ("",)), min_size=1, max_size=3)
            ),
        },
        optional={
            "placeholder": mostly(varied(("sk-sandgate-openai", "sk-sandgate-gh-12345"), ("sk-sandgate-openai-org",), ("short", "has space here"))),
            "headers": mostly(
                st.lists(
                    varied(("authorization", "X-Api-Key"), ("host",), ("x api",))
                    | st.fixed_dictionaries(
                        {"name": _pick("authorization", "x-token")},
                        optional={"format": mostly(varied(("token {}", "{}", "Bearer {}"), (), ("{} {}", " {}", "tök {}")))},
                    ),
                    min_size=1,
                    max_size=3,
                )
            ),
            "query": mostly(st.booleans()),
            "agentEnv": mostly(st.lists(varied(("OPENAI_API_KEY", "GH"), (), ("1BAD",)), max_size=2)),
        },
    )  # fmt: skip


def policy_documents() -> st.SearchStrategy[Any]:
    spec = st.fixed_dictionaries(
        {"allow": mostly(st.none() | st.lists(_rule(), max_size=3))},
        optional={
            "mode": mostly(varied(("enforce", "report"), (), ("audit",))),
            "secrets": mostly(st.none() | st.lists(_secret(), max_size=3)),
        },
    )
    doc = st.fixed_dictionaries(
        {
            "apiVersion": mostly(st.just("sandgate.dev/v1alpha1"), odds=30),
            "kind": mostly(st.just("EgressPolicy"), odds=30),
            "metadata": mostly(
                st.fixed_dictionaries(
                    {"name": mostly(varied(("t", "coding-agent"), (), ("t\n", "T")))},
                    optional={"namespace": mostly(varied(("agents",), (), ("-x",))), "labels": mostly(st.dictionaries(st.text(max_size=5), st.text(max_size=5), max_size=2))},
                ),
                odds=30,
            ),
            "spec": mostly(spec, odds=30),
        }
    )  # fmt: skip
    return mostly(doc, odds=40)


def share(doc: Any, data: st.DataObject) -> Any:
    """Replace some sub-structures with a reference to an earlier one: the dump then has aliases."""
    seen: list[Any] = []

    def walk(v: Any) -> Any:
        if isinstance(v, (list, dict)) and seen and data.draw(st.integers(0, 9)) == 0:
            return data.draw(st.sampled_from(seen))
        if isinstance(v, list):
            out: Any = [walk(x) for x in v]
        elif isinstance(v, dict):
            out = {k: walk(x) for k, x in v.items()}
        else:
            return v
        seen.append(out)
        return out

    return walk(doc)

"""Read untrusted policy YAML totally: bytes in, plain Python values or :class:`PolicyInvalid` out.

A policy file is written by people and arrives through ConfigMaps, so whatever its bytes are the
proxy's reload watcher, the webhook and ``sandgate policy`` must get an answer, never an exception
of another type. This module owns every limit that makes that true:

- size: at most :data:`MAX_BYTES` (1 MiB, what a ConfigMap holds);
- encoding: UTF-8, a byte order mark tolerated; anything else is named with its line and column;
- shape: at most :data:`MAX_DEPTH` nested collections, counted through aliases; aliases expand to
  at most :data:`MAX_ALIAS_NODES` nodes (a "billion laughs" document is refused before it is built),
  and an alias may not refer to the collection it sits in (PyYAML would build a cycle);
- values: only what JSON can say. Timestamps stay strings (YAML 1.2 and editors read them so),
  integers too long for Python's int parser and malformed ``!!float`` / ``!!int`` / ``!!bool``
  (``!!int `` empty, ``!!bool 1``) become errors with their position, a key that is a collection
  (``!!seq :``, ``!!omap x: 1``) is one, and a key written twice in one mapping is an error (PyYAML
  keeps the last one silently: a second ``allow:`` would replace the first); and a number YAML 1.1
  reads otherwise than YAML 1.2 (``0673``, octal; ``7:23``, base 60; ``4_43``) is an error too;
- totality: any other exception a constructor raises (PyYAML's raise KeyError, IndexError and
  TypeError on some tagged scalars: red team 45) becomes an error at its node's position, and one
  raised anywhere else in the load an error without one. Only MemoryError passes: it says nothing
  about the input (which the limits above keep small), and whoever asked may well succeed again.

The C loader (libyaml) is used when PyYAML was built with it; the pure-Python one otherwise.
"""

from __future__ import annotations

from collections.abc import Callable, Generator, Hashable
from dataclasses import dataclass
from types import GeneratorType
from typing import Any

import yaml
from yaml.constructor import ConstructorError, SafeConstructor
from yaml.nodes import MappingNode, Node, ScalarNode

from proxy.policy.errors import PolicyError, PolicyInvalid, show

__all__ = ["C_LOADER", "LOADER", "PureLoader", "MAX_ALIAS_NODES", "MAX_BYTES", "MAX_DEPTH", "decode", "load_documents"]

MAX_BYTES = 1 << 20
MAX_DEPTH = 32  # a policy needs 6 (spec.secrets[i].source.vault.key)
MAX_ALIAS_NODES = 10_000

_BOMS = (
    (b"\x00\x00\xfe\xff", "UTF-32"),
    (b"\xff\xfe\x00\x00", "UTF-32"),
    (b"\xfe\xff", "UTF-16"),
    (b"\xff\xfe", "UTF-16"),
)
_YAML_TAG = "tag:yaml.org,2002:"
_MERGE_TAG = _YAML_TAG + "merge"


def decode(data: bytes | str, source: str) -> str:
    """The text of a policy file: UTF-8 (one leading BOM dropped), at most :data:`MAX_BYTES`."""
    if isinstance(data, str):
        try:
            raw = data.encode("utf-8")
        except UnicodeEncodeError as e:
            line, column = _position(data, e.start)
            raise PolicyInvalid.one(
                "file",
                f"line {line}, column {column}: U+{ord(data[e.start]):04X} is half of a surrogate pair, "
                "not a character; the text was decoded wrongly before it reached Sandgate",
                source,
            ) from None
        _check_size(len(raw), source)
        return data.removeprefix("\ufeff")
    _check_size(len(data), source)
    for bom, encoding in _BOMS:
        if data.startswith(bom):
            raise PolicyInvalid.one(
                "file", f"is {encoding} (it starts with that byte order mark): save it as UTF-8", source
            )
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as e:
        line, column = _position(data, e.start)
        raise PolicyInvalid.one(
            "file",
            f"is not UTF-8: byte 0x{data[e.start]:02x} at line {line}, column {column} ({e.reason}); "
            "save the file as UTF-8",
            source,
        ) from None
    return text.removeprefix("\ufeff")


def _check_size(n: int, source: str) -> None:
    if n > MAX_BYTES:
        raise PolicyInvalid.one(
            "file",
            f"is {n} bytes; a policy is at most {MAX_BYTES} bytes (1 MiB, what a ConfigMap holds): split the "
            "allowlist across sandbox kinds",
            source,
        )


def _position(text: str | bytes, offset: int) -> tuple[int, int]:
    """1-based line and column (in characters) of ``offset``, an index into ``text``."""
    if isinstance(text, bytes):
        head = text[:offset]
        start = head.rfind(b"\n") + 1
        return head.count(b"\n") + 1, len(head[start:].decode("utf-8", "replace")) + 1
    start = text.rfind("\n", 0, offset) + 1
    return text.count("\n", 0, offset) + 1, offset - start + 1


class _Constructors(SafeConstructor):
    """JSON's values only, each failure a ConstructorError with its position (see module doc)."""

    def construct_yaml_int(self, node: ScalarNode) -> int:
        try:
            value = super().construct_yaml_int(node)
        except (ValueError, IndexError):  # (IndexError: "!!int " empty, "!!int _")
            raise ConstructorError(
                None, None, f"{show(node.value)} is not an integer Python can read; quote it", node.start_mark
            ) from None
        _only_in_yaml11(node, str(value))
        return value

    def construct_yaml_float(self, node: ScalarNode) -> float:
        _only_in_yaml11(node, "a number")
        try:
            return super().construct_yaml_float(node)
        except (ValueError, IndexError):
            raise ConstructorError(
                None, None, f"{show(node.value)} is not a number; quote it", node.start_mark
            ) from None

    def construct_yaml_bool(self, node: ScalarNode) -> bool:
        value = self.construct_scalar(node)
        if not isinstance(value, str) or value.lower() not in self.bool_values:
            raise ConstructorError(
                None, None, f"{show(node.value)} is not a boolean (true or false); quote it", node.start_mark
            )
        return bool(self.bool_values[value.lower()])

    def construct_yaml_timestamp(self, node: ScalarNode, values: Any = None) -> str:  # type: ignore[override]
        return self.construct_scalar(node)

    def construct_mapping(self, node: MappingNode, deep: bool = False) -> dict[Any, Any]:
        if isinstance(node, MappingNode):
            seen: set[Any] = set()
            for key_node, _ in node.value:
                if key_node.tag == _MERGE_TAG or not isinstance(key_node, ScalarNode):
                    continue  # merge keys may be overridden; collection keys fail in the base class
                key = self.construct_object(key_node)
                if not isinstance(key, Hashable):  # a scalar tagged !!seq, !!map, !!set, !!omap, !!pairs
                    raise ConstructorError(
                        "while reading a mapping",
                        node.start_mark,
                        f"a key may not be a list, a mapping or a set (it is tagged {_tag(key_node)}): "
                        "write the key as a plain string",
                        key_node.start_mark,
                    )
                if key in seen:
                    raise ConstructorError(
                        "while reading a mapping",
                        node.start_mark,
                        f"the key {show(key)} appears twice; YAML would keep only the last one: merge them",
                        key_node.start_mark,
                    )
                seen.add(key)
        return super().construct_mapping(node, deep)


_Constructor = Callable[..., Any]


def _only_in_yaml11(node: ScalarNode, reads_as: str) -> None:
    """Raise a ConstructorError when ``node``, a number to YAML 1.1 (``reads_as``), reads otherwise
    in YAML 1.2 (:func:`_yaml11_only`)."""
    form = _yaml11_only(str(node.value))
    if form is not None:
        raise ConstructorError(
            None, None, f"{show(node.value)} is {reads_as} only in YAML 1.1 ({form}); YAML 1.2, which editors and JSON"
            " Schema tools read, says otherwise: write the number in decimal, or quote it for text",
            node.start_mark,
        )  # fmt: skip


def _yaml11_only(text: str) -> str | None:
    """How a number's text reads otherwise in YAML 1.2 than in YAML 1.1, which PyYAML implements,
    or None (red team 63: ``ports: [0673]`` opened port 443, octal, where the author and any YAML
    1.2 reader meant 673; ``7:23`` is 443 in base 60 and text in YAML 1.2; so is ``4_43``)."""
    body = text.strip().lstrip("+-")
    if "_" in body:
        return "an underscore between digits"
    if ":" in body:
        return "base 60"
    if body[:2] in ("0b", "0B"):
        return "binary"
    if len(body) > 1 and body[0] == "0" and body[1].isdigit() and body.isdigit():
        return "octal, for its leading zero"  # (a float's leading zero, 00.5, reads alike in both)
    return None


def _total(constructor: _Constructor) -> _Constructor:
    """``constructor``, with any exception other than a YAML error (and MemoryError) turned into a
    ConstructorError at the node's position, also where it is a generator whose rest runs later
    (PyYAML finishes collections after the document's other nodes: red team 45)."""

    def construct(self: SafeConstructor, *args: Any) -> Any:
        node: Node = args[-1]  # (a multi-constructor is also given the tag's suffix first)
        try:
            data = constructor(self, *args)
        except (yaml.YAMLError, MemoryError):
            raise
        except Exception as e:
            raise _unreadable(node, e) from None
        if isinstance(data, GeneratorType):
            return _total_rest(data, node)
        return data

    return construct


def _total_rest(generator: Generator[Any, None, None], node: Node) -> Generator[Any, None, None]:
    try:
        yield from generator
    except (yaml.YAMLError, MemoryError):
        raise
    except Exception as e:
        raise _unreadable(node, e) from None


def _unreadable(node: Node, e: Exception) -> ConstructorError:
    return ConstructorError(
        None,
        None,
        f"cannot read this value tagged {_tag(node)} ({type(e).__name__}); remove the tag or quote the value",
        node.start_mark,
    )


def _tag(node: Node) -> str:
    """A node's tag as it is written: ``!!seq`` for YAML's own."""
    tag = str(node.tag)
    return "!!" + tag.removeprefix(_YAML_TAG) if tag.startswith(_YAML_TAG) else show(tag)


# The base class's table maps tags to its own functions, not to method names: re-register ours,
# every one made total.
_Constructors.yaml_constructors = {
    tag: _total(constructor)
    for tag, constructor in {
        **SafeConstructor.yaml_constructors,
        "tag:yaml.org,2002:int": _Constructors.construct_yaml_int,
        "tag:yaml.org,2002:float": _Constructors.construct_yaml_float,
        "tag:yaml.org,2002:bool": _Constructors.construct_yaml_bool,
        "tag:yaml.org,2002:timestamp": _Constructors.construct_yaml_timestamp,
    }.items()
}
_Constructors.yaml_multi_constructors = {
    prefix: _total(constructor) for prefix, constructor in SafeConstructor.yaml_multi_constructors.items()
}


# Our constructors come right after the parser in the method resolution order, before SafeConstructor.
class PureLoader(yaml.SafeLoader, _Constructors):
    """PyYAML's own parser."""


C_LOADER: type[Any] | None = None
if getattr(yaml, "__with_libyaml__", False):

    class CLoader(yaml.CSafeLoader, _Constructors):
        """libyaml's parser: about ten times faster, and iterative."""

    C_LOADER = CLoader

LOADER: type[Any] = C_LOADER or PureLoader


@dataclass(slots=True)
class _Open:
    anchor: str | None
    nodes_before: int
    depth: int
    reach: int  # the deepest collection depth reached inside, aliases expanded


def _check_shape(text: str, loader: type[Any]) -> None:
    """Walk the event stream (iterative in both parsers) before anything is built."""
    stack: list[_Open] = []
    anchors: dict[str, tuple[int, int]] = {}  # anchor -> (collection depth of the node, its expanded size)
    nodes = alias_nodes = 0
    for event in yaml.parse(text, Loader=loader):
        if isinstance(event, yaml.DocumentStartEvent):
            anchors.clear()
        elif isinstance(event, yaml.CollectionStartEvent):
            depth = len(stack) + 1
            if depth > MAX_DEPTH:
                raise _Shape(f"nested more than {MAX_DEPTH} levels deep; a policy needs 6", event.start_mark)
            stack.append(_Open(event.anchor, nodes, depth, depth))
            nodes += 1
        elif isinstance(event, yaml.CollectionEndEvent):
            done = stack.pop()
            if done.anchor is not None:
                anchors[done.anchor] = (done.reach - done.depth + 1, nodes - done.nodes_before)
            if stack:
                stack[-1].reach = max(stack[-1].reach, done.reach)
        elif isinstance(event, yaml.ScalarEvent):
            nodes += 1
            if event.anchor is not None:
                anchors[event.anchor] = (0, 1)
        elif isinstance(event, yaml.AliasEvent):
            if any(o.anchor == event.anchor for o in stack):
                raise _Shape(
                    f"the alias *{event.anchor} refers to a collection that contains it (a cycle)", event.start_mark
                )
            if event.anchor not in anchors:
                continue  # undefined: the composer reports it with its position
            sub_depth, size = anchors[event.anchor]
            if len(stack) + sub_depth > MAX_DEPTH:
                raise _Shape(f"nested more than {MAX_DEPTH} levels deep once aliases are expanded", event.start_mark)
            nodes += size
            alias_nodes += size
            if alias_nodes > MAX_ALIAS_NODES:
                raise _Shape(
                    f"aliases expand to more than {MAX_ALIAS_NODES} nodes (a YAML bomb?); write the values out",
                    event.start_mark,
                )
            if stack:
                stack[-1].reach = max(stack[-1].reach, len(stack) + sub_depth)


class _Shape(yaml.MarkedYAMLError):
    def __init__(self, problem: str, mark: Any) -> None:
        super().__init__(problem=problem, problem_mark=mark)


def load_documents(text: str, source: str, *, where: str = "", loader: type[Any] | None = None) -> list[Any]:
    """Every document of a YAML stream as plain values; empty documents (a stray ``---``) dropped.

    ``where`` prefixes positions in messages (e.g. ``"data.policy.yaml "`` for a ConfigMap's key).
    Raises :class:`PolicyInvalid` with field ``yaml`` for anything that is not readable YAML, and
    nothing else (MemoryError aside: see the module doc).
    """
    loader = loader or LOADER
    try:
        _check_shape(text, loader)
        docs = list(yaml.load_all(text, Loader=loader))
    except yaml.MarkedYAMLError as e:
        raise PolicyInvalid([PolicyError("yaml", _marked(e, where))], source) from None
    except yaml.reader.ReaderError as e:
        # libyaml counts bytes of the UTF-8 text, PyYAML's reader characters
        line, column = _position(text.encode() if loader is C_LOADER else text, e.position)
        what = f"character U+{e.character:04X}" if isinstance(e.character, int) else f"character {e.character!r}"
        raise PolicyInvalid(
            [PolicyError("yaml", f"{where}line {line}, column {column}: {what} is not allowed in YAML; remove it")],
            source,
        ) from None
    except yaml.YAMLError as e:  # libyaml reports some problems without a position
        raise PolicyInvalid([PolicyError("yaml", f"{where}not valid YAML: {e}")], source) from None
    except MemoryError:
        raise
    except Exception as e:  # (the constructors' own are placed above: this is what no test found yet)
        raise PolicyInvalid(
            [PolicyError("yaml", f"{where}cannot read it as YAML ({type(e).__name__})")], source
        ) from None
    return [d for d in docs if d is not None]


def _marked(e: yaml.MarkedYAMLError, where: str) -> str:
    mark = e.problem_mark or e.context_mark
    at = f"{where}line {mark.line + 1}, column {mark.column + 1}: " if mark is not None else where
    text = at + (e.problem or e.context or "not valid YAML")
    if e.context and e.problem and e.context_mark is not None:
        text += f" ({e.context} at line {e.context_mark.line + 1}, column {e.context_mark.column + 1})"
    elif e.context and e.problem:
        text += f" ({e.context})"
    return text

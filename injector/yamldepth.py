"""How deep a YAML document nests, found without building it.

PyYAML composes documents recursively (a few hundred levels end in a RecursionError) and its
scanner slows down quadratically on deep flow collections: the injector's config and the policies
the webhook parses are bounded first. The walk reads events with the same pure-Python SafeLoader
that ``yaml.safe_load`` uses (so both see the same grammar) and stops at the first level past the
limit, so an adversarial document costs little.
"""

from __future__ import annotations

import yaml

__all__ = ["yaml_deeper_than"]

_OPEN = (yaml.MappingStartEvent, yaml.SequenceStartEvent)
_CLOSE = (yaml.MappingEndEvent, yaml.SequenceEndEvent)


def yaml_deeper_than(text: str, limit: int) -> bool:
    """True when a collection in ``text`` is nested more than ``limit`` deep. A syntax error (or
    any other failure of the walk) is left to the real parse: it stops there too, before nesting
    deeper than the walk saw."""
    depth = 0
    try:
        for event in yaml.parse(text, Loader=yaml.SafeLoader):
            if isinstance(event, _OPEN):
                depth += 1
                if depth > limit:
                    return True
            elif isinstance(event, _CLOSE):
                depth -= 1
    except MemoryError:
        raise
    except Exception:  # (YAMLError; anything else the scanner raises is the real, total, parse's to name)
        return False
    return False

"""Short names for operators, as used in YAML configs and on the command line."""

from __future__ import annotations

import difflib

from operators.base import Operator
from operators.errors import ConfigError

_REGISTRY: dict[str, type[Operator]] = {}


def register(cls: type[Operator]) -> type[Operator]:
    """Class decorator: make an operator available under `cls.name`."""
    if cls.name in _REGISTRY and _REGISTRY[cls.name] is not cls:
        raise RuntimeError(f"operator name {cls.name!r} registered twice")
    _REGISTRY[cls.name] = cls
    return cls


def get(name: str) -> type[Operator]:
    try:
        return _REGISTRY[name]
    except KeyError:
        close = difflib.get_close_matches(name, _REGISTRY, n=1)
        hint = f"; did you mean {close[0]!r}?" if close else ""
        raise ConfigError(
            f"unknown operator {name!r}{hint} Known operators: {', '.join(sorted(_REGISTRY))} (see `sluice operators`)"
        ) from None


def all_operators() -> dict[str, type[Operator]]:
    return dict(sorted(_REGISTRY.items()))

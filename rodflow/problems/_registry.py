from __future__ import annotations

import inspect
from collections.abc import Callable

from .._problem import Problem

_REGISTRY: dict[str, Callable[..., Problem]] = {}


def register(name: str):
    """Decorator: register `factory(**options) -> Problem` under `name`."""

    def deco(factory):
        _REGISTRY[name] = factory
        return factory

    return deco


def available() -> list[str]:
    return sorted(_REGISTRY)


def options(name: str) -> dict[str, object]:
    """The options a problem accepts, with their defaults."""
    factory = _lookup(name)
    return {
        k: p.default
        for k, p in inspect.signature(factory).parameters.items()
        if p.default is not inspect.Parameter.empty
    }


def _lookup(name: str):
    if name not in _REGISTRY:
        raise ValueError(
            f"unknown problem {name!r}; choose one of: {', '.join(available())} "
            "(or pass your own loss function to rodflow.compare)."
        )
    return _REGISTRY[name]


def get(name: str, **opts) -> Problem:
    """Build the built-in problem `name` with the given options (unset options keep defaults)."""
    factory = _lookup(name)
    accepted = options(name)
    unknown = sorted(set(opts) - set(accepted))
    if unknown:
        raise ValueError(
            f"problem {name!r} has no option {', '.join(unknown)}; its options are: "
            f"{', '.join(f'{k} (default {v})' for k, v in accepted.items()) or 'none'}."
        )
    return factory(**{k: v for k, v in opts.items() if v is not None})

from __future__ import annotations

import inspect
import numbers
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
    return factory(**{k: _typed(name, k, v, accepted[k]) for k, v in opts.items() if v is not None})


def _typed(problem: str, key: str, value, default):
    """`value` checked against the type of the option's default: an integer option takes only
    whole numbers, a float option only numbers."""
    if isinstance(default, bool) or default is None or isinstance(value, bool):
        return value
    if isinstance(default, int):
        if isinstance(value, numbers.Integral) or (isinstance(value, float) and value.is_integer()):
            return int(value)
        raise ValueError(f"problem {problem!r} option `{key}` must be a whole number, got {value!r}.")
    if isinstance(default, float):
        if isinstance(value, numbers.Real):
            return float(value)
        raise ValueError(f"problem {problem!r} option `{key}` must be a number, got {value!r}.")
    return value


def _parse_value(text: str):
    for conv in (int, float):
        try:
            return conv(text)
        except ValueError:
            pass
    return text


def parse_options(extra: list[str]) -> dict:
    """Command-line `--key value` / `--key=value` pairs (what argparse left over) -> problem
    options (`--x-star 1.8` -> `{"x_star": 1.8}`; numbers are parsed as int, then float)."""
    opts, i = {}, 0
    while i < len(extra):
        tok = extra[i]
        if not tok.startswith("--"):
            raise ValueError(f"unexpected argument {tok!r}; problem options look like `--width 64`.")
        key, _, val = tok[2:].partition("=")
        if not val:
            if i + 1 >= len(extra) or extra[i + 1].startswith("--"):
                raise ValueError(f"option `--{key}` needs a value, e.g. `--{key} 64`.")
            val = extra[i + 1]
            i += 1
        opts[key.replace("-", "_")] = _parse_value(val)
        i += 1
    return opts

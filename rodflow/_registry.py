"""The registry: optimisers and flows by name, their options, and the check that a flow
supports an optimiser. `compare`, `sweep` and the CLI read everything from here."""

from __future__ import annotations

import dataclasses
import typing
from collections.abc import Mapping

from . import _maps as maps
from .flows import AbstractFlow, CentralFlow, MomentumRodFlow, MomentumStableFlow, RodFlow, StableFlow

MAPS: dict[str, type[maps.AbstractMap]] = {
    cls.name: cls for cls in (maps.GradientDescent, maps.HeavyBall, maps.Nesterov, maps.RMSProp, maps.Adam,
                              maps.NAdam, maps.ScalarRMSProp, maps.ScalarAdam, maps.AdamW)
}
FLOWS: dict[str, type[AbstractFlow]] = {
    cls.name: cls for cls in (StableFlow, RodFlow, CentralFlow, MomentumStableFlow, MomentumRodFlow)
}
DEFAULT_FLOWS = ("discrete", "stable", "rod")


def register_flow(name: str, cls: type[AbstractFlow]) -> None:
    """Make a flow class available by name to `compare`, `sweep` and the CLI."""
    if not (isinstance(cls, type) and issubclass(cls, AbstractFlow)):
        raise ValueError(f"`cls` must be a subclass of rodflow.AbstractFlow, got {cls!r}.")
    FLOWS[name] = cls


def options(cls: type) -> dict[str, dataclasses.Field]:
    """The options of a map or flow class: its dataclass fields."""
    return {f.name: f for f in dataclasses.fields(cls)}


def option_types(cls: type) -> dict[str, typing.Any]:
    """The evaluated type annotation of each option of `cls`."""
    hints = {}
    for klass in reversed(cls.__mro__):
        if "__annotations__" in vars(klass):
            hints.update(typing.get_type_hints(klass))
    return {name: hints.get(name, typing.Any) for name in options(cls)}


def _build(kind: str, table: dict, name: str, opts: dict):
    if name not in table:
        raise ValueError(f"unknown {kind} {name!r}; choose from: {', '.join(table)}.")
    cls = table[name]
    given = {k: v for k, v in opts.items() if v is not None}
    bad = sorted(set(given) - set(options(cls)))
    if bad:
        have = ", ".join(options(cls)) or "none"
        raise ValueError(f"{kind} {name!r} has no option {', '.join(bad)} (its options: {have}).")
    return cls(**given)


def make_map(name: str, **opts) -> maps.AbstractMap:
    """An optimiser map by name (see `rodflow.MAPS`) with the given options (`None` = default);
    an option the optimiser does not have is an error."""
    return _build("optimizer", MAPS, name, opts)


def make_flow(name: str, **opts) -> AbstractFlow:
    """A flow by name (see `rodflow.FLOWS`) with the given options (`None` = default)."""
    return _build("flow", FLOWS, name, opts)


def resolve_flows(flows) -> dict[str, AbstractFlow]:
    """Names, flow instances, or a `{label: flow}` mapping -> `{label: flow}` (the discrete run
    is implicit)."""
    if isinstance(flows, Mapping):
        return {str(label): f if isinstance(f, AbstractFlow) else make_flow(f)
                for label, f in flows.items() if label != "discrete"}
    if isinstance(flows, str):
        flows = [f for f in flows.split(",") if f]
    out: dict[str, AbstractFlow] = {}
    for f in flows:
        if isinstance(f, AbstractFlow):
            out[f.name if f.name not in out else f"{f.name}{len(out)}"] = f
        elif f in FLOWS:
            out[f] = FLOWS[f]()
        elif f != "discrete":
            raise ValueError(f"unknown flow {f!r} in `flows`; choose from: discrete, {', '.join(FLOWS)} "
                             "(or pass an AbstractFlow instance).")
    return out


def check_supported(flows: dict[str, AbstractFlow], opt_map: maps.AbstractMap) -> None:
    """One-line `ValueError` for the first flow that cannot model `opt_map`."""
    for label, flow in flows.items():
        flow.check_supported(opt_map, label)

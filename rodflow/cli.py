"""Command line: `rodflow compare ...`, `rodflow sweep ...`, `rodflow plot RUN_DIR` (and
`rodflow problems`).

Every option comes from the library: the run settings from [`rodflow.Settings`][], the
optimisers and their hyper-parameters from `rodflow.MAPS`, the flows and their configuration
(`--<flow>-<option>`, e.g. `--rod-dt 0.5`, `--central-k 2`) from `rodflow.FLOWS`.

Exit codes: 0 success; 2 bad input (one-line message, no traceback); 3 the run finished but GD or
a flow became non-finite (the step is reported, metrics and figure are still written).
"""

from __future__ import annotations

import argparse
import dataclasses
import shlex
import sys
import types
import typing
from pathlib import Path

import diffrax
import numpy as np

SOLVERS = {"euler": diffrax.Euler, "heun": diffrax.Heun, "midpoint": diffrax.Midpoint,
           "ralston": diffrax.Ralston, "bosh3": diffrax.Bosh3, "tsit5": diffrax.Tsit5,
           "dopri5": diffrax.Dopri5}
# Settings the CLI spells its own way (out: runs/<problem>; --no-progress, --no-figure; K|auto)
_SETTINGS_SPECIAL = ("out", "progress", "figure", "start_step")


class _Parser(argparse.ArgumentParser):
    def __init__(self, *args, **kwargs):
        # no prefix matching: `--n` is a problem option, not an abbreviation of `--no-progress`
        kwargs.setdefault("allow_abbrev", False)
        super().__init__(*args, **kwargs)

    def error(self, message):  # argparse's own errors: one line, exit 2
        self.exit(2, f"rodflow: error: {message}\n")


def _argument(hint, default, help_text: str) -> dict | None:
    """argparse keywords for an option of type `hint` (`None`: not settable from the CLI)."""
    if typing.get_origin(hint) not in (None, typing.Union, typing.Literal, types.UnionType):
        return None  # e.g. a callable
    args = set(typing.get_args(hint)) - {type(None)}
    if len(args) == 1 and typing.get_origin(next(iter(args))) is typing.Literal:  # Literal[...] | None
        return _argument(next(iter(args)), default, help_text)
    if hint is bool or args == {bool}:
        return dict(action=argparse.BooleanOptionalAction, help=help_text)
    if typing.get_origin(hint) is typing.Literal:
        choices = typing.get_args(hint)
        if all(isinstance(c, int) and not isinstance(c, bool) for c in choices):
            return dict(type=int, choices=choices, help=help_text)
        return dict(choices=choices, help=help_text)
    if (isinstance(default, diffrax.AbstractSolver) or hint is diffrax.AbstractSolver
            or args == {diffrax.AbstractSolver}):
        return dict(choices=tuple(SOLVERS), help=help_text)
    for kind in (int, float, str):
        if hint is kind or args == {kind} or (kind is float and args == {float, int}):
            return dict(type=kind, metavar=kind.__name__.upper(), help=help_text)
    return None


def _default(f: dataclasses.Field):
    return None if f.default is dataclasses.MISSING else f.default


def _add_library_options(p: argparse.ArgumentParser) -> None:
    from . import _registry as reg
    from ._settings import Settings

    hints = reg.option_types(Settings)
    for name, f in reg.options(Settings).items():
        if name not in _SETTINGS_SPECIAL:
            text = f.metadata.get("help", "")
            if "(default" not in text:
                text = f"{text} (default {_default(f)})"
            kw = _argument(hints[name], _default(f), text)
            p.add_argument(f"--{name.replace('_', '-')}", dest=f"set__{name}", default=None,
                           required=name == "steps", **kw)
    p.add_argument("--start-step", dest="set__start_step", default=None, metavar="K|auto",
                   help=reg.options(Settings)["start_step"].metadata["help"] + " (default 0)")
    p.add_argument("--flows", default="discrete,stable,rod",
                   help=f"comma-separated runs: discrete, {', '.join(reg.FLOWS)} "
                        "(default discrete,stable,rod)")
    p.add_argument("--x64", action="store_true", help="simulate in float64 (default float32)")
    p.add_argument("--out", type=Path, default=None, help="output directory (default runs/<problem>)")
    p.add_argument("--no-progress", action="store_true", help="hide the progress bar")
    p.add_argument("--no-figure", action="store_true", help="do not draw the figure")
    g = p.add_argument_group("optimizer (the discrete run and the map the flows model)")
    g.add_argument("--optimizer", default="gd", choices=tuple(reg.MAPS), help="default gd")
    seen: dict[str, list[str]] = {}
    for mname, cls in reg.MAPS.items():
        for name in reg.options(cls):
            seen.setdefault(name, []).append(mname)
    for name, owners in seen.items():
        cls = reg.MAPS[owners[0]]
        kw = _argument(reg.option_types(cls)[name], None, f"({', '.join(owners)})")
        if kw is not None:
            g.add_argument(f"--{name.replace('_', '-')}", dest=f"opt__{name}", default=None, **kw)
    for fname, cls in reg.FLOWS.items():
        g = p.add_argument_group(f"flow {fname!r}")
        hints = reg.option_types(cls)
        for name, f in reg.options(cls).items():
            kw = _argument(hints[name], _default(f), f.metadata.get("help", f"default {_default(f)!r}"))
            if kw is not None:
                flags = [f"--{fname}-{name.replace('_', '-')}"]
                if fname == "rod" and name == "eps_floor":
                    flags.append("--eps-floor")  # the historical spelling
                g.add_argument(*flags, dest=f"flow__{fname}__{name}", default=None, **kw)


def _add_schedule_options(p: argparse.ArgumentParser, sweep: bool = False) -> None:
    g = p.add_argument_group("learning-rate schedule (optax's schedules and parameter names)"
                             + ("; the sweep varies its peak: --lrs are the peaks" if sweep else ""))
    g.add_argument("--lr-schedule", default="constant", choices=tuple(SCHEDULES),
                   help="constant (default); linear: optax.linear_schedule(--lr-init, --lr, "
                        "--transition-steps); warmup-constant: optax.warmup_constant_schedule(--lr-init, "
                        "--lr, "
                        "--warmup-steps); "
                        "warmup-cosine: optax.warmup_cosine_decay_schedule(--lr-init, --lr, --warmup-steps, "
                        "--decay-steps, --lr-end); cosine-decay: optax.cosine_decay_schedule(--lr, "
                        "--decay-steps, alpha=--lr-end/--lr)")
    g.add_argument("--lr-init", type=float, default=None, help=_SCHEDULE_HELP["lr_init"])
    g.add_argument("--lr-end", type=float, default=None, help=_SCHEDULE_HELP["lr_end"])
    for flag in ("warmup_steps", "transition_steps", "decay_steps"):
        g.add_argument(f"--{flag.replace('_', '-')}", type=int, default=None, help=_SCHEDULE_HELP[flag])


def _given(args, prefix: str) -> dict:  # the options given on the command line, by prefix
    return {k[len(prefix):]: v for k, v in vars(args).items() if k.startswith(prefix) and v is not None}


def _settings(args, out: Path):
    from ._settings import Settings

    opts = _given(args, "set__")
    start = opts.get("start_step")
    if start is not None and start != "auto":
        try:
            opts["start_step"] = int(start)
        except ValueError as e:
            raise ValueError(f"`--start-step` must be a step number or 'auto', got {start!r}.") from e
    return Settings(**opts, out=out, progress=not args.no_progress,
                    figure=not args.no_figure)


def _flows(args) -> list:
    from ._registry import make_flow, resolve_flows

    names = [f for f in args.flows.split(",") if f]
    if not names:
        raise ValueError("`--flows` is empty; give e.g. `--flows discrete,stable,rod`.")
    resolve_flows(names)  # validates names
    per_flow: dict[str, dict] = {}
    for key, value in _given(args, "flow__").items():
        fname, name = key.split("__")
        if fname not in names:
            raise ValueError(f"`--{fname}-{name.replace('_', '-')}` configures the flow {fname!r}, which is "
                             f"not in `--flows` ({args.flows}).")
        solver = name == "solver"
        per_flow.setdefault(fname, {})[name] = SOLVERS[value]() if solver else value
    return [make_flow(n, **per_flow.get(n, {})) for n in names if n != "discrete"]


def _optimizer(args):
    from ._registry import make_map

    return make_map(args.optimizer, **_given(args, "opt__"))


def _common(args, extra, default_out: str):
    import jax

    if args.x64:
        jax.config.update("jax_enable_x64", True)
    _join_processes(args)
    from . import problems
    from .problems._registry import parse_options

    problem = problems.get(args.problem, **parse_options(extra))
    out = args.out if args.out is not None else Path("runs") / default_out
    args.out = out  # for the message on an interruption
    return problem, dict(flows=_flows(args), optimizer=_optimizer(args), settings=_settings(args, out)), out


def _add_parallel_options(p: argparse.ArgumentParser, sweep: bool) -> None:
    g = p.add_argument_group("devices and processes (see the README's \"Scaling out\")")
    if sweep:
        g.add_argument("--devices", type=int, default=None,
                       help="devices to run on (default all): a grid x data mesh of devices/data-devices x "
                            "data-devices")
        g.add_argument("--data-devices", type=int, default=1,
                       help="devices each grid point's examples are split over (default 1)")
    else:
        g.add_argument("--devices", type=int, default=None,
                       help="split the examples over N devices (data parallel; default 1)")
    g.add_argument("--distributed", action="store_true",
                   help="join a multi-process run (jax.distributed.initialize): with --coordinator, "
                        "--num-processes and --process-id, or their JAX_* environment variables, or a "
                        "cluster JAX detects (SLURM, Open MPI)")
    g.add_argument("--coordinator", default=None, metavar="HOST:PORT",
                   help="address of process 0 (implies --distributed)")
    g.add_argument("--num-processes", type=int, default=None,
                   help="number of processes (implies --distributed)")
    g.add_argument("--process-id", type=int, default=None,
                   help="this process's id, 0-based (implies --distributed)")


def _join_processes(args) -> None:
    given = (args.coordinator, args.num_processes, args.process_id)
    if args.distributed or any(v is not None for v in given):
        from ._parallel import distributed_initialize

        distributed_initialize(args.coordinator, args.num_processes, args.process_id)


def _report(result, out: Path, name: str, figure: str, args) -> int:
    """Print the table and where it was written (process 0 only in a multi-process run); exit code
    3 if a run became non-finite."""
    from ._parallel import is_writer

    if is_writer():
        print(result.table())
        print(f"wrote {out / name}" + ("" if args.no_figure else f" and {out / figure}"))
        for msg in result.diverged():
            print(f"rodflow: {msg}", file=sys.stderr)
    return 3 if result.diverged() else 0


# --lr-schedule NAME: the optax schedule, and which of the schedule's flags it takes (`--lr` is
# its peak, or its end value for `linear`)
SCHEDULES = {
    "constant": (),
    "linear": ("lr_init", "transition_steps"),
    "warmup-constant": ("lr_init", "warmup_steps"),
    "warmup-cosine": ("lr_init", "warmup_steps", "decay_steps", "lr_end"),
    "cosine-decay": ("decay_steps", "lr_end"),
}
_SCHEDULE_FLAGS = ("lr_init", "warmup_steps", "transition_steps", "decay_steps", "lr_end")


def make_schedule(name: str, lr: float, **given):
    """The schedule of `--lr-schedule NAME` with peak (or end value) `lr` and the flags
    `given` (`lr_init`, `warmup_steps`, `transition_steps`, `decay_steps`, `lr_end`; `None`
    where not given): an optax schedule with a description for `metrics.json`, or `None` for
    `constant`. One-line `ValueError`s name the flag and the fix."""
    import optax

    from ._schedule import named

    if name not in SCHEDULES:
        raise ValueError(f"`--lr-schedule` must be one of {', '.join(SCHEDULES)}, got {name!r}.")
    wanted = SCHEDULES[name]
    for flag in _SCHEDULE_FLAGS:
        if given.get(flag) is not None and flag not in wanted:
            users = [n for n, w in SCHEDULES.items() if flag in w]
            raise ValueError(f"`--{flag.replace('_', '-')}` is not used by `--lr-schedule {name}`; drop it "
                             f"or use --lr-schedule {' or '.join(users)}.")
    for flag in wanted:
        if given.get(flag) is None:
            raise ValueError(f"`--lr-schedule {name}` needs `--{flag.replace('_', '-')}` "
                             f"({_SCHEDULE_HELP[flag]}).")
    v = {k: given[k] for k in wanted}
    for flag, value in v.items():
        kind = int if flag.endswith("steps") else float
        if not (value > 0) or (kind is int and int(value) != value):
            want = "integer" if kind is int else "number"
            raise ValueError(f"`--{flag.replace('_', '-')}` must be a positive {want}, got {value!r}.")
    if name == "constant":
        return None
    if name == "linear":
        fn, params = optax.linear_schedule(v["lr_init"], lr, v["transition_steps"]), dict(
            init_value=v["lr_init"], end_value=lr, transition_steps=v["transition_steps"])
    elif name == "warmup-constant":
        fn = optax.warmup_constant_schedule(v["lr_init"], lr, v["warmup_steps"])
        params = dict(init_value=v["lr_init"], peak_value=lr, warmup_steps=v["warmup_steps"])
    elif name == "warmup-cosine":
        if v["decay_steps"] <= v["warmup_steps"]:
            raise ValueError(f"`--decay-steps` ({v['decay_steps']}) is the schedule's whole length (optax's "
                             f"decay_steps, warm-up included) and must exceed `--warmup-steps` "
                             f"({v['warmup_steps']}).")
        fn = optax.warmup_cosine_decay_schedule(v["lr_init"], lr, v["warmup_steps"], v["decay_steps"],
                                                v["lr_end"])
        params = dict(init_value=v["lr_init"], peak_value=lr, warmup_steps=v["warmup_steps"],
                      decay_steps=v["decay_steps"], end_value=v["lr_end"])
    else:  # cosine-decay: from lr down to lr_end
        fn = optax.cosine_decay_schedule(lr, v["decay_steps"], alpha=v["lr_end"] / lr)
        params = dict(init_value=lr, decay_steps=v["decay_steps"], end_value=v["lr_end"])
    return named(fn, name, **params)


_SCHEDULE_HELP = {
    "lr_init": "the step size at step 0, e.g. --lr-init 0.01",
    "warmup_steps": "steps of the linear warm-up from --lr-init to --lr, e.g. --warmup-steps 500",
    "transition_steps": "steps of the linear change from --lr-init to --lr, e.g. --transition-steps 500",
    "decay_steps": "optax's decay_steps: the schedule's length, warm-up included, e.g. --decay-steps 1500",
    "lr_end": "the step size at the end of the decay, e.g. --lr-end 0.01",
}


def _schedule(args, lr: float):
    return make_schedule(args.lr_schedule, lr, **{k: getattr(args, k) for k in _SCHEDULE_FLAGS})


def _cmd_compare(args, extra) -> int:
    from ._api import compare

    schedule = _schedule(args, args.lr)
    problem, kw, out = _common(args, extra, args.problem)
    lr = args.lr if schedule is None else schedule
    return _report(compare(problem, lr=lr, devices=args.devices, **kw), out, "metrics.json", "compare.png",
                   args)


def parse_lr_range(text: str) -> list[float]:
    """`"start:stop:count"` -> `count` step sizes evenly spaced from start to stop inclusive."""
    try:
        start, stop, count = text.split(":")
        start, stop, count = float(start), float(stop), int(count)
    except ValueError as e:
        raise ValueError(f"`--lr-range` must look like start:stop:count (e.g. 0.02:0.1:16), "
                         f"got {text!r}.") from e
    if count < 1:
        raise ValueError(f"`--lr-range` count must be >= 1, got {count}.")
    return np.linspace(start, stop, count).tolist()


def _numbers(text: str, name: str, kind) -> list:
    try:
        return [kind(v) for v in text.split(",") if v]
    except ValueError as e:
        raise ValueError(f"`--{name}` must be comma-separated {'integers' if kind is int else 'numbers'}, "
                         f"got {text!r}.") from e


def _cmd_sweep(args, extra) -> int:
    from ._api import sweep

    if (args.lrs is None) == (args.lr_range is None):
        raise ValueError("give exactly one of `--lrs a,b,c` or `--lr-range start:stop:count`.")
    lrs = _numbers(args.lrs, "lrs", float) if args.lrs is not None else parse_lr_range(args.lr_range)
    seeds = None if args.seeds is None else _numbers(args.seeds, "seeds", int)
    # a schedule is built with its peak at the largest of --lrs and scaled to each one's peak
    schedule = _schedule(args, max(lrs)) if lrs else None
    problem, kw, out = _common(args, extra, f"{args.problem}-sweep")
    return _report(sweep(problem, lrs=lrs, seeds=seeds, devices=args.devices, data_devices=args.data_devices,
                         schedule=schedule, **kw), out, "sweep.json", "sweep.png", args)


def _cmd_plot(args, extra) -> int:
    """Redraw the figure of a run folder (`compare` or `sweep`) from its saved files."""
    from ._result import Comparison, load
    from .plot import plot_comparison, plot_sweep

    result = load(args.run_dir)
    is_compare = isinstance(result, Comparison)
    default = args.run_dir / ("compare.png" if is_compare else "sweep.png")
    target = args.out if args.out is not None else default
    if target.is_dir():
        raise ValueError(f"`--out` ({target}) is a folder; give a file path such as {target / default.name}.")
    if target.exists() and not args.overwrite:
        raise ValueError(f"{target} already exists; pass --overwrite to replace it"
                         + ("" if args.out is not None else " or --out PATH to write elsewhere") + ".")
    if not target.parent.is_dir():
        raise ValueError(f"`--out` ({target}): the folder {target.parent} does not exist.")
    try:
        (plot_comparison if is_compare else plot_sweep)(result, target)
    except OSError as e:
        raise ValueError(f"cannot write {target} ({e.strerror or e}).") from e
    print(f"wrote {target}")
    return 0


def _cmd_problems(args, extra) -> int:
    from . import problems
    from .problems._registry import _lookup, options

    for name in problems.available():
        doc = (_lookup(name).__doc__ or "").strip().splitlines()
        opts = ", ".join(f"--{k.replace('_', '-')} {v}" for k, v in options(name).items())
        print(f"{name:<18} {doc[0] if doc else ''}\n{'':<18} options: {opts or 'none'}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    p = _Parser(prog="rodflow", description=__doc__.split("\n")[0])
    sub = p.add_subparsers(dest="command", required=True, parser_class=_Parser)
    c = sub.add_parser("compare", help="GD and its flows on one problem at one step size",
                       description="Unrecognised --key value options are passed to the problem "
                                   "(e.g. --width 64 --depth 2 --n 500 --seed 0).")
    c.add_argument("--problem", required=True, help="built-in problem name (see `rodflow problems`)")
    c.add_argument("--lr", "--lr-peak", dest="lr", type=float, required=True,
                   help="step size eta > 0 (with --lr-schedule: the schedule's peak, or its end value for "
                        "linear)")
    _add_schedule_options(c)
    _add_parallel_options(c, sweep=False)
    _add_library_options(c)
    c.set_defaults(func=_cmd_compare)
    sw = sub.add_parser("sweep", help="one compiled, vmapped run over many step sizes (and seeds)",
                        description="Unrecognised --key value options are passed to the problem.")
    sw.add_argument("--problem", required=True, help="built-in problem name (see `rodflow problems`)")
    sw.add_argument("--lrs", default=None, help="comma-separated step sizes")
    sw.add_argument("--lr-range", default=None, help="start:stop:count, evenly spaced")
    sw.add_argument("--seeds", default=None, help="comma-separated initialisation seeds")
    _add_schedule_options(sw, sweep=True)
    _add_parallel_options(sw, sweep=True)
    _add_library_options(sw)
    sw.set_defaults(func=_cmd_sweep)
    pl = sub.add_parser("plot", help="redraw the figure of a run folder written by compare or sweep",
                        description="Reads the folder's metrics.json or sweep.json and its series "
                                    "(rodflow.load) and draws the figure again.")
    pl.add_argument("run_dir", type=Path, metavar="RUN_DIR", help="a folder written by compare or sweep")
    pl.add_argument("--out", type=Path, default=None,
                    help="figure file (default RUN_DIR/compare.png or RUN_DIR/sweep.png); its suffix "
                         "picks the format")
    pl.add_argument("--overwrite", action="store_true", help="replace the figure file if it exists")
    pl.set_defaults(func=_cmd_plot)
    pr = sub.add_parser("problems", help="list built-in problems and their options")
    pr.set_defaults(func=_cmd_problems)
    return p


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    try:
        args, extra = parser.parse_known_args(argv)
        if extra and args.command not in ("compare", "sweep"):
            parser.error(f"unrecognised arguments: {' '.join(extra)}")
    except SystemExit as e:  # argparse: --help (0) or a usage error (2, already printed)
        return int(e.code or 0)
    try:
        return args.func(args, extra)
    except ValueError as e:
        print(f"rodflow: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(_interrupted(args, sys.argv[1:] if argv is None else argv), file=sys.stderr)
        return 130


def _interrupted(args, argv: list[str]) -> str:
    """What an interrupted run saved, and the exact command that continues it."""
    out = getattr(args, "out", None)
    ckpt = None if out is None else Path(out) / "checkpoint.npz"
    if ckpt is None or not ckpt.exists():
        return "rodflow: interrupted before the first chunk finished; nothing was saved."
    again = [a for a in argv if a not in ("--overwrite", "--resume")] + ["--resume"]
    if "--out" not in argv:
        again += ["--out", str(out)]
    return (f"rodflow: interrupted; the finished chunks are saved in {ckpt}. Continue with: "
            f"rodflow {shlex.join(again)}")


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())

"""Command line: `rodflow compare ...` (and `rodflow problems`).

Exit codes: 0 success; 2 bad input (one-line message, no traceback); 3 the run finished but GD or
a flow became non-finite (the step is reported, metrics and figure are still written).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

SOLVERS = ("euler", "heun", "midpoint", "ralston", "bosh3", "tsit5", "dopri5")


class _Parser(argparse.ArgumentParser):
    def __init__(self, *args, **kwargs):
        # no prefix matching: `--n` is a problem option, not an abbreviation of `--no-progress`
        kwargs.setdefault("allow_abbrev", False)
        super().__init__(*args, **kwargs)

    def error(self, message):  # argparse's own errors: one line, exit 2
        self.exit(2, f"rodflow: error: {message}\n")


def _parse_value(text: str):
    for conv in (int, float):
        try:
            return conv(text)
        except ValueError:
            pass
    return text


def _problem_options(extra: list[str]) -> dict:
    """`--key value` / `--key=value` pairs left over by argparse -> problem options."""
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


def _solver(name: str | None):
    if name is None:
        return None
    import diffrax

    table = {"euler": diffrax.Euler, "heun": diffrax.Heun, "midpoint": diffrax.Midpoint,
             "ralston": diffrax.Ralston, "bosh3": diffrax.Bosh3, "tsit5": diffrax.Tsit5,
             "dopri5": diffrax.Dopri5}
    return table[name]()


def _add_run_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--problem", required=True, help="built-in problem name (see `rodflow problems`)")
    p.add_argument("--steps", type=int, required=True, help="number of optimiser steps N")
    p.add_argument("--flows", default="discrete,stable,rod",
                   help="comma-separated runs: discrete, stable, rod (default), central, "
                        "stable-momentum, rod-momentum (heavy ball, RMSProp, Adam)")
    p.add_argument("--x64", action="store_true", help="simulate in float64 (default float32)")
    p.add_argument("--out", type=Path, default=None, help="output directory (default runs/<problem>)")
    p.add_argument("--sharpness-every", type=int, default=10, help="sharpness measured every K steps")
    p.add_argument("--top-k", type=int, default=1, help="number of Hessian eigenvalues tracked")
    p.add_argument("--eig-method", default="auto", choices=("auto", "lobpcg", "power", "dense"))
    p.add_argument("--chunk", type=int, default=500, help="steps per compiled chunk / checkpoint")
    p.add_argument("--save-every", type=int, default=None, help="keep parameter snapshots every K steps")
    p.add_argument("--start-step", default="0",
                   help="warm start: the flows start at this step from the discrete run's state, "
                        "'auto' = after the momentum transient (rodflow.transient_steps); default 0")
    p.add_argument("--resume", action="store_true", help="continue from OUT/checkpoint.npz")
    p.add_argument("--no-progress", action="store_true", help="hide the progress bar")
    p.add_argument("--no-figure", action="store_true", help="do not draw the figure")
    g = p.add_argument_group("optimizer (the discrete run and the map the flows model)")
    g.add_argument("--optimizer", default="gd",
                   choices=("gd", "heavy-ball", "nesterov", "rmsprop", "adam", "nadam", "scalar-rmsprop",
                            "scalar-adam"), help="default gd")
    g.add_argument("--beta", type=float, default=None, help="momentum (heavy-ball, nesterov; default 0.9)")
    g.add_argument("--beta1", type=float, default=None, help="first-moment decay (adam family; default 0.9)")
    g.add_argument("--beta2", type=float, default=None,
                   help="second-moment decay (default 0.999 adam family, 0.99 rmsprop)")
    g.add_argument("--eps", type=float, default=None, help="adaptive optimisers' eps (default 1e-8)")
    g.add_argument("--bias-correction", action=argparse.BooleanOptionalAction, default=None,
                   help="bias correction (default: on for adam/nadam, off for rmsprop)")
    g = p.add_argument_group("rod flow")
    g.add_argument("--rod-solver", choices=SOLVERS, default=None, help="default euler")
    g.add_argument("--rod-dt", type=float, default=None, help="default 0.5 (initial step if adaptive)")
    g.add_argument("--rod-rtol", type=float, default=None, help="adaptive step control tolerance")
    g.add_argument("--rod-variant", choices=("exact", "taylor"), default=None)
    g.add_argument("--eps-floor", type=float, default=None,
                   help="noise floor (default: machine epsilon of the dtype; 0 disables)")
    g.add_argument("--rod-smooth-nu", action="store_true", default=None,
                   help="keep the second moment nu as a smooth variable (no rod component)")
    g = p.add_argument_group("stable flow")
    g.add_argument("--stable-solver", choices=SOLVERS, default=None, help="default tsit5")
    g.add_argument("--stable-rtol", type=float, default=None, help="default 1e-6")


def _flows(args) -> list:
    from ._compare import flow_from_options, resolve_flows

    names = [f for f in args.flows.split(",") if f]
    if not names:
        raise ValueError("`--flows` is empty; give e.g. `--flows discrete,stable,rod`.")
    resolve_flows(names)  # validates names
    rod_opts = dict(solver=_solver(args.rod_solver), dt=args.rod_dt, rtol=args.rod_rtol,
                    variant=args.rod_variant, eps_floor=args.eps_floor, smooth_nu=args.rod_smooth_nu)
    stable_opts = dict(solver=_solver(args.stable_solver), rtol=args.stable_rtol)
    out = []
    for n in names:
        if n == "discrete":
            continue
        opts = {"rod": rod_opts, "stable": stable_opts}.get(n, {})
        out.append(flow_from_options(n, **opts))
    return out


def _optimizer(args):
    from ._maps import make_map

    return make_map(args.optimizer, beta=args.beta, beta1=args.beta1, beta2=args.beta2, eps=args.eps,
                    bias_correction=args.bias_correction)


def _start_step(args, optimizer) -> int:
    from ._maps import transient_steps

    if args.start_step == "auto":
        return transient_steps(optimizer)
    try:
        return int(args.start_step)
    except ValueError as e:
        raise ValueError(f"`--start-step` must be a step number or 'auto', got {args.start_step!r}.") from e


def _cmd_compare(args, extra) -> int:
    import jax

    if args.x64:
        jax.config.update("jax_enable_x64", True)
    from . import problems
    from ._compare import compare

    problem = problems.get(args.problem, **_problem_options(extra))
    out = args.out if args.out is not None else Path("runs") / args.problem
    optimizer = _optimizer(args)
    result = compare(
        problem, lr=args.lr, steps=args.steps, flows=_flows(args), optimizer=optimizer,
        sharpness_every=args.sharpness_every, top_k=args.top_k, eig_method=args.eig_method,
        chunk=args.chunk, save_every=args.save_every, start_step=_start_step(args, optimizer),
        out=out, resume=args.resume,
        progress=not args.no_progress, figure=not args.no_figure,
    )
    print(result.table())
    print(f"wrote {out / 'metrics.json'}" + ("" if args.no_figure else f" and {out / 'compare.png'}"))
    diverged = [(n, m["diverged_at"]) for n, m in result.metrics["flows"].items()
                if m.get("diverged_at") is not None]
    for name, step in diverged:
        print(f"rodflow: {name} became non-finite at step {step}", file=sys.stderr)
    return 3 if diverged else 0


def _cmd_sweep(args, extra) -> int:
    import jax

    if args.x64:
        jax.config.update("jax_enable_x64", True)
    from . import problems
    from ._sweep import parse_lr_range, sweep

    if (args.lrs is None) == (args.lr_range is None):
        raise ValueError("give exactly one of `--lrs a,b,c` or `--lr-range start:stop:count`.")
    if args.lrs is not None:
        try:
            lrs = [float(v) for v in args.lrs.split(",") if v]
        except ValueError as e:
            raise ValueError(f"`--lrs` must be comma-separated numbers, got {args.lrs!r}.") from e
    else:
        lrs = parse_lr_range(args.lr_range)
    seeds = None
    if args.seeds is not None:
        try:
            seeds = [int(v) for v in args.seeds.split(",") if v]
        except ValueError as e:
            raise ValueError(f"`--seeds` must be comma-separated integers, got {args.seeds!r}.") from e
    problem = problems.get(args.problem, **_problem_options(extra))
    out = args.out if args.out is not None else Path("runs") / f"{args.problem}-sweep"
    optimizer = _optimizer(args)
    result = sweep(
        problem, lrs=lrs, seeds=seeds, steps=args.steps, flows=_flows(args), optimizer=optimizer,
        sharpness_every=args.sharpness_every, top_k=args.top_k, eig_method=args.eig_method,
        chunk=args.chunk, save_every=args.save_every, start_step=_start_step(args, optimizer),
        devices=args.devices, out=out,
        resume=args.resume, progress=not args.no_progress, figure=not args.no_figure,
    )
    print(result.table())
    print(f"wrote {out / 'sweep.json'}" + ("" if args.no_figure else f" and {out / 'sweep.png'}"))
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
    c.add_argument("--lr", type=float, required=True, help="step size eta > 0")
    _add_run_options(c)
    c.set_defaults(func=_cmd_compare)
    sw = sub.add_parser("sweep", help="one compiled, vmapped run over many step sizes (and seeds)",
                        description="Unrecognised --key value options are passed to the problem.")
    sw.add_argument("--lrs", default=None, help="comma-separated step sizes")
    sw.add_argument("--lr-range", default=None, help="start:stop:count, evenly spaced")
    sw.add_argument("--seeds", default=None, help="comma-separated initialisation seeds")
    sw.add_argument("--devices", type=int, default=None, help="devices to shard over (default all)")
    _add_run_options(sw)
    sw.set_defaults(func=_cmd_sweep)
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


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())

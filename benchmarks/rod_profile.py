"""Where Rod Flow's time goes (issue 16): the rod's vector field against a GD step, on one
problem, each variant a jit-compiled `lax.scan` of `--steps` steps (best of 3 calls).

    python benchmarks/rod_profile.py [--problem mlp-digits] [--steps 200] [--x64]
        [--out benchmarks/results/rod_profile.json]

Variants of the small-rod switch in `rod_average` (finite differences above `rho_switch`, the
exact HVP limit below): `cond` (the library's, a `lax.cond` when unbatched), `loops` (the earlier
one-iteration `lax.while_loop` per branch, defined here: XLA hoists a branch that does not depend
on the loop's carry out of the loop, so both ran every time), `finite` (no switch). Each
evaluates the vector field twice per step (Euler, dt 0.5), as the default rod does.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import jax


def main(argv=None):
    ap = argparse.ArgumentParser()
    ap.add_argument("--problem", default="mlp-digits")
    ap.add_argument("--steps", type=int, default=200)
    ap.add_argument("--x64", action="store_true")
    ap.add_argument("--out", type=Path, default=Path("benchmarks/results/rod_profile.json"))
    args = ap.parse_args(argv)
    if args.x64:
        jax.config.update("jax_enable_x64", True)
    import jax.numpy as jnp

    import rodflow
    from rodflow._io import write_json
    from rodflow.flows import _rod_base
    from rodflow.flows._base import FlowArgs

    prob = rodflow.problems.get(args.problem)
    lr = jnp.asarray(prob.lr_hint, prob.dtype)
    fargs, flow, N = FlowArgs(prob, lr), rodflow.RodFlow(), args.steps
    y0 = flow.init(prob.x0, fargs)
    grad = jax.grad(prob.loss_flat)

    def best_ms(fn, x):
        jax.block_until_ready(fn(x))
        times = []
        for _ in range(3):
            t0 = time.perf_counter()
            jax.block_until_ready(fn(x))
            times.append(time.perf_counter() - t0)
        return 1e3 * min(times) / N

    def scan(step):
        return jax.jit(lambda x: jax.lax.scan(lambda x, _: (step(x), None), x, None, length=N)[0])

    out = {"command": "python " + " ".join(sys.argv), "problem": args.problem, "dim": prob.dim,
           "dtype": str(prob.dtype), "jax": jax.__version__, "ms_per_step": {}}
    ms = out["ms_per_step"]
    ms["gd"] = best_ms(scan(lambda x: x - lr * grad(x)), prob.x0)
    ms["two_gradients"] = best_ms(scan(lambda x: x - lr * 0.5 * (grad(x) + grad(x + 1e-3))), prob.x0)
    ms["two_gradients_vmapped"] = best_ms(
        scan(lambda x: x - lr * jnp.mean(jax.vmap(grad)(jnp.stack([x, x + 1e-3])), axis=0)), prob.x0)

    library = _rod_base.AbstractRodFlow.rod_average

    def gated(pred, fn, default):  # the earlier switch: a while_loop of at most one iteration
        def body(carry):
            return jnp.asarray(True), jax.tree.map(lambda a, b: jnp.where(pred, a, b), fn(), carry[1])

        return jax.lax.while_loop(lambda c: pred & ~c[0], body, (jnp.asarray(False), default))[1]

    def loops(self, fn, c, rho, v):
        def finite():
            fp, fm = fn(c + rho * v), fn(c - rho * v)
            return (jax.tree.map(lambda p, m: 0.5 * (p + m), fp, fm),
                    jax.tree.map(lambda p, m: (p - m) / (2.0 * rho), fp, fm))

        pred = rho > _rod_base.rho_switch_at(c, self.rho_switch)
        zeros = jax.tree.map(lambda s: jnp.zeros(s.shape, s.dtype), jax.eval_shape(finite))
        on = gated(pred, finite, zeros)
        off = gated(~pred, lambda: jax.jvp(fn, (c,), (v,)), zeros)
        return jax.tree.map(lambda p, q: jnp.where(pred, p, q), on, off)

    def finite_only(self, fn, c, rho, v):
        fp, fm = fn(c + rho * v), fn(c - rho * v)
        return (jax.tree.map(lambda p, m: 0.5 * (p + m), fp, fm),
                jax.tree.map(lambda p, m: (p - m) / (2.0 * rho), fp, fm))

    def euler(y):
        for _ in range(2):
            f = flow.vector_field(0.0, y, fargs)
            y = jax.tree.map(lambda a, b: a + 0.5 * b, y, f)
        return y

    variants = (("rod_field_cond", library), ("rod_field_loops", loops), ("rod_field_finite", finite_only))
    for name, impl in variants:
        _rod_base.AbstractRodFlow.rod_average = impl
        ms[name] = best_ms(scan(euler), y0)
    _rod_base.AbstractRodFlow.rod_average = library
    out["over_gd"] = {k: v / ms["gd"] for k, v in ms.items()}
    write_json(args.out, out)
    print(json.dumps(out, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())

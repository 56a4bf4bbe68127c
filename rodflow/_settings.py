"""`Settings`: how a run is measured, chunked and saved; one object shared by `compare`, `sweep`
and the command line."""

from __future__ import annotations

import dataclasses
import math
from pathlib import Path
from typing import Literal

import equinox as eqx
import numpy as np

from ._spectrum import METHODS

EIG_ITERS = 40  # default eigensolver iterations per measurement (LOBPCG, power iteration)
KRYLOV_BLOCKS = 8  # default blocks of the Krylov estimator (eig_method="krylov")


class EigConfig(eqx.Module):
    """Eigensolver settings for the sharpness measurements (static: part of the compiled program)."""

    k: int = eqx.field(static=True, default=1)
    method: str = eqx.field(static=True, default="auto")
    max_iters: int = eqx.field(static=True, default=EIG_ITERS)


def check_positive(name: str, value, kind=float) -> None:
    """Raise `ValueError` naming `name` unless `value` is a positive number (integer if
    `kind is int`); 0-d NumPy/JAX arrays are accepted."""
    ok = not isinstance(value, (bool, str)) and np.ndim(value) == 0
    if ok:
        try:
            value = float(value)
        except (TypeError, ValueError):
            ok = False
    if not ok or not (value > 0) or not np.isfinite(value) or (kind is int and int(value) != value):
        want = "a positive integer" if kind is int else "a positive number"
        raise ValueError(f"`{name}` must be {want}, got {value!r}.")


MAX_STEPS = 2**31 - 2**20


def default_eig_iters(method: str) -> int:
    """`eig_iters` when not given: Krylov blocks for `"krylov"`, iterations otherwise."""
    return KRYLOV_BLOCKS if method == "krylov" else EIG_ITERS


def _help(text: str) -> dict:
    return {"help": text}


@dataclasses.dataclass(frozen=True)
class Settings:
    """Run settings shared by [`rodflow.compare`][], [`rodflow.sweep`][] and the CLI (every field
    is a keyword argument of both functions and a `--option` of the CLI).

    - `steps`: number of optimiser steps `N`; every flow is integrated over `t in [0, N]`
      (`[start_step, N]` with a warm start).
    - `sharpness_every`: measure the sharpness every this many steps (EoS onset resolution).
    - `top_k`, `eig_method`, `eig_iters`: eigensolver settings (see [`rodflow.top_eigenpairs`][]).
      The default, LOBPCG warm-started to a relative residual of `1e-4` in at most `eig_iters=40`
      iterations, is accurate to about `1e-6`. `eig_method="krylov"` with `eig_iters=M` (1 to 8;
      default 8, within 0.3% of LOBPCG at every measurement on the runs measured) costs a fixed
      `M top_k` Hessian-vector products per measurement and has no convergence loop: on
      `mlp-digits` the discrete run then costs 2.2-2.9x a GD step at `M = 3` or 4 instead of
      7-11x, off by a median 1.5e-4 / 3e-5 and at most 3% at EoS, but more right after a
      catapult (docs, benchmarks: "Cost of a step"). Its first measurement (of each run and
      flow) starts from the top eigenvectors converged by the default eigensolver at the start.
      `M = 1` (one Rayleigh quotient and one power step per measurement) is the cheapest:
      1.9-2.1x a GD step on `mlp-digits`, off by a median 0.2-0.4% and at most 5.4% from the EoS
      onset (like power iteration it follows the eigenvalue of largest magnitude), but useless
      on a run whose top eigenvector turns within `sharpness_every` steps (`cnn-digits`: up to
      100%).
    - `chunk`: steps per compiled chunk; after each chunk results go to the host (and to
      `out/checkpoint.npz` when `out` is given).
    - `memory_mb`: device memory (MB) for a chunk's per-step buffers (GD's centre at every step
      of the chunk, for every grid point, handed to the flows). When `chunk` steps would not fit,
      the run uses the largest multiple of `sharpness_every` that does (at least one block):
      a 64-point sweep of a 1M-parameter float32 model fits 8 steps in the default 4096 MB, so it
      runs one block of 10 per chunk. The chunk does not change the numbers.
    - `save_every`: keep flat parameter snapshots every this many steps (a multiple of
      `sharpness_every`); `None` keeps none.
    - `start_step`: warm start. The flows start at step `K = start_step` from the discrete
      run's state there (`(z_K + z_{K+1})/2` and its step, as at step 0), and are measured from
      `K` on (their series are nan before it). Use it to leave out an opening transient that no
      flow models: heavy ball and Adam started at rest ring (complex eigenvalues of modulus
      `sqrt(beta)`) for about `2 ln(100)/ln(1/beta)` steps (88 for `beta = 0.9`), and a run whose
      sharpness starts above the threshold catapults (the oscillation grows by `|lr lambda - 1|`
      per step, up to ~3x at four times the threshold) and settles within a few tens of steps.
      `"auto"` starts the flows after both: [`rodflow.transient_steps`][] of the optimiser, and
      the first measured step (every `sharpness_every`) at which the sharpness is back at or
      below the threshold (the latest over a sweep's grid); `metrics["start_step_auto"]` records
      both. Default 0: every flow starts at step 0.
    - `matmul_precision`: the precision of float32 matrix products and convolutions, set for the
      whole run (`jax.default_matmul_precision`). Default `"highest"`: full float32. On NVIDIA GPUs
      from Ampere on, XLA's `"default"` runs float32 products in TF32 (10-bit mantissa), whose
      rounding is thousands of times float32's; GD's rounding noise seeds the EoS instability and
      the rod's noise floor is derived from the machine epsilon, so a run in TF32 would simulate
      another optimiser. CPUs compute in full precision whatever the setting. Recorded in
      `metrics.json`.
    - `out`: directory for the results (`metrics.json` / `sweep.json` and `runs.json`,
      `series.npz`, `params.npz`, the figure; [`rodflow.load`][] reads them back) and the
      checkpoint; `None` writes nothing.
    - `resume`: continue from `out/checkpoint.npz` if it exists (same settings required).
    - `overwrite`: replace the run already in `out`. Without `resume` or `overwrite`, a folder
      that holds an earlier run is refused before anything is computed.
    - `progress`: show a progress bar.
    - `figure`: draw the figure into `out`.
    """

    steps: int = dataclasses.field(metadata=_help("number of optimiser steps N"))
    sharpness_every: int = dataclasses.field(default=10, metadata=_help("sharpness measured every K steps"))
    top_k: int = dataclasses.field(default=1, metadata=_help("number of Hessian eigenvalues tracked"))
    eig_method: Literal["auto", "lobpcg", "power", "krylov", "dense"] = dataclasses.field(
        default="auto", metadata=_help("eigensolver for the sharpness"))
    eig_iters: int | None = dataclasses.field(
        default=None,
        metadata=_help("eigensolver iterations per measurement; krylov: blocks of the Krylov space, 1-8 "
                       f"(default {EIG_ITERS}; krylov {KRYLOV_BLOCKS})"))
    chunk: int = dataclasses.field(default=500, metadata=_help("steps per compiled chunk / checkpoint"))
    memory_mb: float = dataclasses.field(
        default=4096.0,
        metadata=_help("device memory (MB) for a chunk's per-step buffers; cuts `chunk` to fit"))
    save_every: int | None = dataclasses.field(default=None,
                                               metadata=_help("keep parameter snapshots every K steps"))
    start_step: int | Literal["auto"] = dataclasses.field(
        default=0, metadata=_help("warm start: the flows start at this step from the discrete run's state; "
                                  "'auto' = after the momentum transient and after a catapult from "
                                  "initialisation"))
    matmul_precision: Literal["highest", "high", "default"] = dataclasses.field(
        default="highest", metadata=_help("precision of float32 matrix products and convolutions on GPU/TPU "
                                          "('default' lets them run in TF32/bfloat16 passes)"))
    out: str | Path | None = dataclasses.field(default=None, metadata=_help("output directory"))
    resume: bool = dataclasses.field(default=False, metadata=_help("continue from OUT/checkpoint.npz"))
    overwrite: bool = dataclasses.field(default=False, metadata=_help("replace the run already in OUT"))
    progress: bool = dataclasses.field(default=False, metadata=_help("show a progress bar"))
    figure: bool = dataclasses.field(default=True, metadata=_help("draw the figure"))

    def __post_init__(self):
        check_positive("steps", self.steps, int)
        if self.steps > MAX_STEPS:
            raise ValueError(f"`steps` must be at most {MAX_STEPS} (step counters are 32-bit), "
                             f"got {self.steps}.")
        auto = isinstance(self.start_step, str) and self.start_step == "auto"
        integer = isinstance(self.start_step, (int, np.integer)) and not isinstance(self.start_step, bool)
        if not auto and (not integer or not 0 <= self.start_step < self.steps):
            raise ValueError(f"`start_step` must be an integer step in [0, steps) = [0, {self.steps}) at "
                             f"which the flows start from the discrete run's state, or 'auto', got "
                             f"{self.start_step!r}.")
        if self.eig_iters is None:  # by method (the Krylov estimator's blocks are a fixed cost)
            object.__setattr__(self, "eig_iters", default_eig_iters(self.eig_method))
        for name in ("sharpness_every", "chunk", "top_k", "eig_iters"):
            check_positive(name, getattr(self, name), int)
        mb = self.memory_mb
        if isinstance(mb, bool) or not isinstance(mb, (int, float)) or not mb > 0:
            raise ValueError(f"`memory_mb` must be a positive number of megabytes, got {mb!r}.")
        if self.matmul_precision not in ("highest", "high", "default"):
            raise ValueError(f"`matmul_precision` must be one of highest, high, default, got "
                             f"{self.matmul_precision!r}.")
        if self.eig_method not in METHODS:
            raise ValueError(f"`eig_method` must be one of {', '.join(METHODS)}, got {self.eig_method!r}.")
        if self.save_every is not None:
            check_positive("save_every", self.save_every, int)
            if self.save_every % self.sharpness_every:
                raise ValueError(f"`save_every` ({self.save_every}) must be a multiple of "
                                 f"`sharpness_every` ({self.sharpness_every}).")

    @classmethod
    def from_options(cls, settings: Settings | None, options: dict) -> Settings:
        """`settings` (or the defaults) with the keyword `options` replacing fields; an unknown
        option is a `TypeError` naming it. Another `eig_method` without `eig_iters` takes that
        method's default iterations if `settings` had its own method's default."""
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(options) - names)
        if unknown:
            raise TypeError(f"unknown option(s) {', '.join(unknown)}; the run settings are: "
                            f"{', '.join(sorted(names))}.")
        if settings is None:
            if "steps" not in options:
                raise TypeError("missing the run setting `steps` (number of optimiser steps).")
            return cls(**options)
        method = options.get("eig_method", settings.eig_method)
        if ("eig_iters" not in options and method != settings.eig_method
                and settings.eig_iters == default_eig_iters(settings.eig_method)):
            options = {**options, "eig_iters": None}  # another method, iterations by default: its own
        return dataclasses.replace(settings, **options)

    def fitted(self, grid: int, dim: int, itemsize: int) -> Settings:
        """These settings with `chunk` cut (to a multiple of `sharpness_every`, at least one
        block) so that a chunk's per-step device buffers fit in `memory_mb`: the discrete run
        hands the flows GD's centre at every step of the chunk, `grid x chunk x dim` numbers,
        counted twice (the scan's stacked output and the flows' copy)."""
        per_step = 2 * grid * dim * itemsize
        fits = int(self.memory_mb * 2**20 // per_step)
        if fits >= self.chunk:
            return self
        return dataclasses.replace(self, chunk=max(self.sharpness_every, fits - fits % self.sharpness_every))

    # -- derived ---------------------------------------------------------------------------------
    @property
    def eig(self) -> EigConfig:
        return EigConfig(k=int(self.top_k), method=self.eig_method, max_iters=int(self.eig_iters))

    @property
    def plan(self) -> tuple[int, int]:
        """(number of chunks, blocks of `sharpness_every` steps per chunk) covering steps 0..N
        with little padding."""
        n_blocks = math.ceil((self.steps + 1) / self.sharpness_every)
        n_chunks = math.ceil(n_blocks / max(1, self.chunk // self.sharpness_every))
        return n_chunks, math.ceil(n_blocks / n_chunks)

    @property
    def chunk_len(self) -> int:
        return self.plan[1] * self.sharpness_every

    def key(self, start_step: int) -> dict:
        """The settings that change a number (a checkpoint written with others is refused)."""
        key = dict(steps=int(self.steps), every=int(self.sharpness_every), chunk=self.chunk_len,
                   save_every=self.save_every, eig=[int(self.top_k), self.eig_method, int(self.eig_iters)])
        if start_step:
            key["start_step"] = int(start_step)
        if self.matmul_precision != "highest":
            key["matmul_precision"] = self.matmul_precision
        return key

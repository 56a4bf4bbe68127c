from __future__ import annotations

from typing import ClassVar

import diffrax

from ._base import AbstractFlow, FlowArgs, check_solver_config


class StableFlow(AbstractFlow):
    r"""The optimiser's flow without oscillation. For GD this is gradient flow,

    $$\frac{dw}{dt} = -\eta\, \nabla L(w),$$

    with time in steps. It starts at GD's first centre `m_0 = (x_0 + x_1)/2`, the same point as
    the rod's centre, so every flow is compared with GD from the same state.

    Default integrator: `Tsit5` with `rtol = 1e-6` (adaptive): gradient flow can become stiff
    once its sharpness passes `2/lr`, where a fixed-step Euler scheme would be GD itself.
    """

    name: ClassVar[str] = "stable"
    solver: diffrax.AbstractSolver = diffrax.Tsit5()
    dt: float = 0.5
    rtol: float | None = 1e-6
    atol: float | None = 1e-9

    def __check_init__(self):
        check_solver_config(self)

    def init(self, x0, args: FlowArgs):
        return x0 + 0.5 * args.delta(x0)

    def vector_field(self, t, y, args: FlowArgs):
        return args.delta(y)

    def centre(self, y):
        return y

    def predicted_loss(self, y, args: FlowArgs):
        return args.problem.loss_flat(y)

    def cost_per_rhs(self):
        return {"grads": 1, "hvps": 0}

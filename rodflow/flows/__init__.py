"""Flows: continuous-time models of the discrete optimiser, as diffrax vector fields.

Every flow declares the map capabilities it needs (`requires`) and says why it cannot model a
map (`unsupported`); every state is a NamedTuple whose fields are named after the maths.
"""

from ._base import AbstractFlow as AbstractFlow
from ._base import FlowArgs as FlowArgs
from ._central import CentralFlow as CentralFlow
from ._central import CentralState as CentralState
from ._cone_qp import solve_cone_qp as solve_cone_qp
from ._momentum import AbstractSecondOrderFlow as AbstractSecondOrderFlow
from ._momentum import MomentumStableFlow as MomentumStableFlow
from ._momentum import MomentumState as MomentumState
from ._momentum import SecondOrder as SecondOrder
from ._momentum import alternating_rate as alternating_rate
from ._momentum_rod import MomentumRodFlow as MomentumRodFlow
from ._momentum_rod import MomentumRodState as MomentumRodState
from ._rod import RodFlow as RodFlow
from ._rod import RodState as RodState
from ._rod import rod_map as rod_map
from ._rod import rod_vector_field_cartesian as rod_vector_field_cartesian
from ._rod_base import AbstractRodFlow as AbstractRodFlow
from ._stable import StableFlow as StableFlow
from ._stable import StableState as StableState

"""Flows: continuous-time models of the discrete optimiser, as diffrax vector fields."""

from ._base import AbstractFlow as AbstractFlow
from ._base import FlowArgs as FlowArgs
from ._central import CentralFlow as CentralFlow
from ._cone_qp import solve_cone_qp as solve_cone_qp
from ._momentum import MomentumRodFlow as MomentumRodFlow
from ._momentum import MomentumStableFlow as MomentumStableFlow
from ._momentum import alternating_rate as alternating_rate
from ._rod import RodFlow as RodFlow
from ._rod import rod_map as rod_map
from ._rod import rod_vector_field_cartesian as rod_vector_field_cartesian
from ._stable import StableFlow as StableFlow

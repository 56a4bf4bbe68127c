"""Flows: continuous-time models of the discrete optimiser, as diffrax vector fields."""

from ._base import AbstractFlow as AbstractFlow
from ._base import FlowArgs as FlowArgs
from ._rod import RodFlow as RodFlow
from ._stable import StableFlow as StableFlow

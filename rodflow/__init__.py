"""rodflow: gradient descent at the edge of stability, and the flows that model it."""

import importlib.metadata

from . import flows as flows
from . import problems as problems
from ._api import compare as compare
from ._api import sweep as sweep
from ._derivatives import hvp as hvp
from ._derivatives import rod_curvature_grad as rod_curvature_grad
from ._maps import AbstractMap as AbstractMap
from ._maps import AbstractMomentumMap as AbstractMomentumMap
from ._maps import AbstractPlainGradientMap as AbstractPlainGradientMap
from ._maps import AbstractPreconditionedMap as AbstractPreconditionedMap
from ._maps import Adam as Adam
from ._maps import AdamW as AdamW
from ._maps import GradientDescent as GradientDescent
from ._maps import HeavyBall as HeavyBall
from ._maps import MapState as MapState
from ._maps import NAdam as NAdam
from ._maps import Nesterov as Nesterov
from ._maps import OptaxMap as OptaxMap
from ._maps import RMSProp as RMSProp
from ._maps import ScalarAdam as ScalarAdam
from ._maps import ScalarRMSProp as ScalarRMSProp
from ._maps import scale_by_moments as scale_by_moments
from ._maps import transient_steps as transient_steps
from ._parallel import distributed_initialize as distributed_initialize
from ._problem import Problem as Problem
from ._registry import FLOWS as FLOWS
from ._registry import MAPS as MAPS
from ._registry import make_flow as make_flow
from ._registry import make_map as make_map
from ._registry import register_flow as register_flow
from ._result import Comparison as Comparison
from ._result import SweepResult as SweepResult
from ._result import load as load
from ._settings import Settings as Settings
from ._spectrum import top_eigenpairs as top_eigenpairs
from .flows import AbstractFlow as AbstractFlow
from .flows import CentralFlow as CentralFlow
from .flows import MomentumRodFlow as MomentumRodFlow
from .flows import MomentumStableFlow as MomentumStableFlow
from .flows import RodFlow as RodFlow
from .flows import StableFlow as StableFlow

try:
    __version__ = importlib.metadata.version("rodflow")
except importlib.metadata.PackageNotFoundError:  # pragma: no cover
    __version__ = "0.0.0"

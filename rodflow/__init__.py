"""rodflow: gradient descent at the edge of stability, and the flows that model it."""

import importlib.metadata

from . import flows as flows
from . import problems as problems
from ._compare import Comparison as Comparison
from ._compare import compare as compare
from ._compare import register_flow as register_flow
from ._derivatives import hvp as hvp
from ._derivatives import rod_curvature_grad as rod_curvature_grad
from ._maps import AbstractMap as AbstractMap
from ._maps import Adam as Adam
from ._maps import GradientDescent as GradientDescent
from ._maps import HeavyBall as HeavyBall
from ._maps import NAdam as NAdam
from ._maps import Nesterov as Nesterov
from ._maps import OptaxMap as OptaxMap
from ._maps import RMSProp as RMSProp
from ._maps import ScalarAdam as ScalarAdam
from ._maps import ScalarRMSProp as ScalarRMSProp
from ._maps import make_map as make_map
from ._maps import scale_by_moments as scale_by_moments
from ._maps import transient_steps as transient_steps
from ._problem import Problem as Problem
from ._spectrum import top_eigenpairs as top_eigenpairs
from ._sweep import SweepResult as SweepResult
from ._sweep import sweep as sweep
from .flows import AbstractFlow as AbstractFlow
from .flows import CentralFlow as CentralFlow
from .flows import MomentumRodFlow as MomentumRodFlow
from .flows import MomentumStableFlow as MomentumStableFlow
from .flows import RodFlow as RodFlow
from .flows import StableFlow as StableFlow

register_flow("central", CentralFlow)
register_flow("stable-momentum", MomentumStableFlow)
register_flow("rod-momentum", MomentumRodFlow)

try:
    __version__ = importlib.metadata.version("rodflow")
except importlib.metadata.PackageNotFoundError:  # pragma: no cover
    __version__ = "0.0.0"

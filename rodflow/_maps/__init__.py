"""One-step maps `F(z) = z + delta(z)` of the discrete optimiser.

GD is `optax.sgd(lr)`: `F(x) = x - lr * g(x)`, on `z = x`. An optimiser with state (heavy ball,
Nesterov, RMSProp, Adam, NAdam, AdamW, ...) is a map on the joint vector
`z = (flat params, flat float optimiser state)`, typed as [`MapState`][] `(params, momentum,
nu)`; every flow is built from `delta` on `z` and the capabilities a map declares, so adding an
optimiser means adding one class. The rod flows on `z` only need `delta` (and its derivatives).

- `_base`: the interface ([`AbstractMap`][]), the typed state and the capabilities.
- `_optax`: optax optimisers on `z` ([`AbstractOptaxMap`][], the generic [`OptaxMap`][]).
- `_sgd`: GD, heavy ball, Nesterov. `_moments`, `_adam`: the RMSProp / Adam family.
"""

from ._adam import Adam as Adam
from ._adam import AdamW as AdamW
from ._adam import NAdam as NAdam
from ._adam import RMSProp as RMSProp
from ._adam import ScalarAdam as ScalarAdam
from ._adam import ScalarRMSProp as ScalarRMSProp
from ._base import AbstractMap as AbstractMap
from ._base import AbstractMomentumMap as AbstractMomentumMap
from ._base import AbstractPlainGradientMap as AbstractPlainGradientMap
from ._base import AbstractPreconditionedMap as AbstractPreconditionedMap
from ._base import MapState as MapState
from ._base import check_final as check_final
from ._base import preconditioned_eigenpairs as preconditioned_eigenpairs
from ._base import smooth_join as smooth_join
from ._base import transient_steps as transient_steps
from ._moments import AbstractAdamFamilyMap as AbstractAdamFamilyMap
from ._moments import AbstractMomentsMap as AbstractMomentsMap
from ._moments import MomentsState as MomentsState
from ._moments import scale_by_moments as scale_by_moments
from ._optax import AbstractOptaxMap as AbstractOptaxMap
from ._optax import OptaxMap as OptaxMap
from ._sgd import AbstractSGDMomentumMap as AbstractSGDMomentumMap
from ._sgd import GradientDescent as GradientDescent
from ._sgd import HeavyBall as HeavyBall
from ._sgd import Nesterov as Nesterov

"""Built-in problems, by name. `rodflow.problems.get("mlp-digits", width=64)` returns a Problem."""

from . import _digits, _toy, _zoo  # noqa: F401  (registers the built-ins)
from ._registry import available as available
from ._registry import get as get
from ._registry import register as register
from .models import CNN as CNN
from .models import MLP as MLP
from .models import ResNet as ResNet
from .models import Transformer as Transformer
from .models import ViT as ViT

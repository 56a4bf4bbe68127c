"""Built-in problems, by name. `rodflow.problems.get("mlp-digits", width=64)` returns a Problem."""

from . import _digits, _toy  # noqa: F401  (registers the built-ins)
from ._registry import available as available
from ._registry import get as get
from ._registry import register as register
from .models import MLP as MLP

"""`--x64` changes the precision only: a seed gives the same initial parameters in both dtypes."""

import io
import subprocess
import sys

import jax
import numpy as np
import pytest

import rodflow

# small versions of three network families (dense, convolutional, attention; every built-in
# network builds its parameters through the same `problems._init.dtype_independent`)
NETWORKS = {"mlp-digits": {"n": 20}, "cnn-digits": {"n": 20, "width": 4},
            "transformer-sort": {"n": 20, "d": 8, "layers": 1}}

_X0 = """
import io, sys, json, jax
jax.config.update("jax_enable_x64", False)
import numpy as np, rodflow
out = {}
for name, opts in json.loads(sys.argv[1]).items():
    out[name] = np.asarray(rodflow.problems.get(name, seed=3, **opts).x0)
buf = io.BytesIO(); np.savez(buf, **out); sys.stdout.buffer.write(buf.getvalue())
"""


@pytest.mark.skipif(not jax.config.jax_enable_x64, reason="the test process must run in float64")
def test_float32_and_float64_problems_start_from_the_same_parameters():
    import json

    raw = subprocess.run([sys.executable, "-c", _X0, json.dumps(NETWORKS)], check=True,
                         capture_output=True).stdout
    x32 = np.load(io.BytesIO(raw))  # built by a float32 process
    for name, opts in NETWORKS.items():
        x64 = np.asarray(rodflow.problems.get(name, seed=3, **opts).x0)
        assert x32[name].dtype == np.float32 and x64.dtype == np.float64, name
        # drawn in float32 and cast: equal exactly, not merely up to float32 rounding
        np.testing.assert_array_equal(x64, x32[name].astype(np.float64), err_msg=name)
        other_seed = np.asarray(rodflow.problems.get(name, seed=4, **opts).x0)
        assert not np.array_equal(other_seed, x64), name  # the seed is honoured

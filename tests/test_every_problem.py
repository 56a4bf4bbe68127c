"""`rodflow compare --flows discrete,stable,central,rod` on every built-in problem (issue 4),
on tiny sizes. Marked slow: compiling Central Flow for eleven problems takes about 17 minutes on a
2-core CPU; run with
`pytest -m slow tests/test_every_problem.py`."""

from __future__ import annotations

import gc
import json

import jax
import pytest
from test_models import _write_cifar

import rodflow.problems as P
from rodflow.cli import main

TINY = {
    "quadratic": {},
    "quartic": {},
    "eos-toy": {},
    "mlp-digits": dict(n=8, width=4),
    "mlp-teacher": dict(n=8, d_in=4, d_out=2, teacher_width=4, width=6),
    "cnn-digits": dict(n=4, width=2, hidden=4),
    "resnet-digits": dict(n=3, widths="2,2,3"),
    "vit-digits": dict(n=4, patch=4, d=8, heads=2, layers=1),
    "transformer-sort": dict(n=4, length=2, vocab=3, d=8, heads=2, layers=1),
    "mlp-cifar10": dict(n=6, classes="3,5", width=4),
    "cnn-cifar10": dict(n=6, classes="3,5", width=2, hidden=4),
}


@pytest.fixture(autouse=True)
def _release_compiled_programs():
    # Eleven problems x four flows compile ~50 large programs in one process. Without releasing
    # them, XLA aborted ("Fatal Python error: Aborted") while compiling for the last problem,
    # cnn-cifar10, which passes when run alone.
    yield
    jax.clear_caches()
    gc.collect()


def test_every_builtin_problem_is_covered():
    assert set(TINY) == set(P.available())


@pytest.mark.slow
@pytest.mark.parametrize("name", list(TINY))
def test_compare_with_all_four_flows(tmp_path, name):
    opts = dict(TINY[name])
    if "cifar10" in name:
        opts["data_dir"] = str(_write_cifar(tmp_path / "cifar-10-batches-py", per_file=4))
    lr = P.get(name, **opts).lr_hint
    cli_opts = [a for k, v in opts.items() for a in (f"--{k.replace('_', '-')}", str(v))]
    out = tmp_path / "run"
    rc = main(["compare", "--problem", name, "--lr", str(lr), "--steps", "4",
               "--flows", "discrete,stable,central,rod", "--out", str(out), "--no-progress", "--no-figure",
               *cli_opts])
    assert rc == 0
    m = json.loads((out / "metrics.json").read_text())
    assert m["problem"] == name
    assert set(m["flows"]) == {"discrete", "stable", "central", "rod"}
    for f in ("stable", "central", "rod"):
        assert m["flows"][f]["diverged_at"] is None
        assert m["flows"][f]["grad_evals"] > 0

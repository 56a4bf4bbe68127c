"""The notebooks run top to bottom (on small sizes)."""

import os
from pathlib import Path

import nbformat
import pytest
from nbclient import NotebookClient

NOTEBOOKS = sorted((Path(__file__).parent.parent / "notebooks").glob("*.ipynb"))


# the quickstart runs in the default suite; the two network notebooks (about 50 s each on a loaded
# 2-core CPU) with -m slow
@pytest.mark.parametrize("path", [p if p.name.startswith("01_") else pytest.param(p, marks=pytest.mark.slow)
                                  for p in NOTEBOOKS], ids=[p.name for p in NOTEBOOKS])
def test_notebook_runs(path, monkeypatch):
    nb = nbformat.read(path, as_version=4)
    # saved without outputs
    assert all(not c.get("outputs") for c in nb.cells if c.cell_type == "code"), "clear outputs"
    monkeypatch.setenv("RODFLOW_NB_STEPS", os.environ.get("RODFLOW_NB_STEPS", "150"))
    monkeypatch.setenv("RODFLOW_NB_N", "100")
    monkeypatch.setenv("MPLBACKEND", "Agg")
    client = NotebookClient(nb, timeout=600, kernel_name="python3",
                            resources={"metadata": {"path": str(path.parent)}})
    client.execute()
    errors = [o for c in nb.cells for o in c.get("outputs", []) if o.get("output_type") == "error"]
    assert not errors

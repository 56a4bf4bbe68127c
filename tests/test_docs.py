"""The documentation: the site builds in strict mode, nothing points outside the repository, and
the README stays short with its two commands on the first screen."""

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
DOC_FILES = sorted([ROOT / "README.md", ROOT / "mkdocs.yml"] + [
    p for p in (ROOT / "docs").rglob("*") if p.is_file() and p.suffix in (".md", ".py", ".js")])


def test_mkdocs_build_strict(tmp_path):
    # strict: any warning (a broken link or anchor, an unresolved cross-reference to the API, a
    # docstring mkdocstrings cannot render) fails the build
    env = dict(os.environ, NO_MKDOCS_2_WARNING="1", JAX_PLATFORMS="cpu")
    site = tmp_path / "site"
    proc = subprocess.run([sys.executable, "-m", "mkdocs", "build", "--strict", "--site-dir", str(site)],
                          cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, f"mkdocs build --strict failed:\n{proc.stderr[-6000:]}"
    # the generated parts are there: API from the docstrings, the CLI from the parser, the
    # figures and notebooks from outside docs/
    assert 'id="rodflow.RodFlow"' in (site / "api" / "flows" / "index.html").read_text()
    cli = (site / "cli" / "index.html").read_text()
    assert "--rod-order" in cli and "usage: rodflow sweep" in cli
    assert (site / "benchmarks" / "results" / "eos_tracking.png").is_file()
    assert (site / "notebooks" / "01_quickstart_eos_toy" / "index.html").is_file()


def test_no_reference_outside_the_repository():
    for path in DOC_FILES:
        text = path.read_text()
        for needle in ("../shared", "shared/design", "/work/"):
            assert needle not in text, f"{path.relative_to(ROOT)} refers to {needle!r}, outside the repo"


def test_readme_is_short_and_starts_with_the_two_commands():
    lines = (ROOT / "README.md").read_text().splitlines()
    assert len(lines) <= 160
    first_screen = "\n".join(lines[:45])
    test_command = 'python3 -m pip install -q -e ".[dev]" && python3 -m pytest -q'
    assert "Rod Flow" in first_screen
    assert "python3 -m pip install -e . && rodflow compare --problem mlp-digits" in first_screen
    assert test_command in first_screen
    assert test_command in (ROOT / ".ci" / "run").read_text()

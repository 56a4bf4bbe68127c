"""mkdocs hooks (see `hooks:` in mkdocs.yml); no plugin of their own, no extra dependency.

- The benchmark figures (`benchmarks/results/**/*.png`) and the notebooks (`notebooks/*.ipynb`)
  stay where they are in the repository and are added to the site under the same paths, so a
  page links them as `../benchmarks/results/eos_tracking.png` or
  `../notebooks/01_quickstart_eos_toy.ipynb` (mkdocs-jupyter renders the notebooks, without
  executing them).
- The CLI reference is generated from the parser: the marker `<!-- cli -->` in a page becomes
  `rodflow --help` and every subcommand's `--help`, as `rodflow.cli.build_parser()` prints them.
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path

from mkdocs.plugins import event_priority
from mkdocs.structure.files import File

ROOT = Path(__file__).resolve().parent.parent
CLI_MARKER = "<!-- cli -->"
HELP_COLUMNS = "80"  # argparse wraps the help text to $COLUMNS; fixed, so the page is stable


def _repo_files(pattern: str, under: str) -> list[Path]:
    return sorted(p for p in (ROOT / under).glob(pattern) if p.is_file())


@event_priority(100)  # before mkdocs-jupyter's on_files, which wraps the .ipynb files as pages
def on_files(files, config):
    for path in _repo_files("**/*.png", "benchmarks/results") + _repo_files("*.ipynb", "notebooks"):
        uri = path.relative_to(ROOT).as_posix()
        if files.get_file_from_path(uri) is None:
            # a plain File whose source folder is the repository root (not File.generated: the
            # notebook pages need `src_dir`, from which mkdocs-jupyter reads them)
            files.append(File(uri, src_dir=str(ROOT), dest_dir=config["site_dir"],
                              use_directory_urls=config["use_directory_urls"]))
    return files


def _subcommands(parser: argparse.ArgumentParser) -> dict[str, argparse.ArgumentParser]:
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            return dict(action.choices)
    return {}


def cli_reference() -> str:
    """`rodflow --help` and each subcommand's help, as Markdown sections."""
    previous = os.environ.get("COLUMNS")
    os.environ["COLUMNS"] = HELP_COLUMNS
    try:
        from rodflow.cli import build_parser

        parser = build_parser()
        parts = [f"## `rodflow`\n\n```text\n{parser.format_help().rstrip()}\n```\n"]
        for name, sub in _subcommands(parser).items():
            parts.append(f"## `rodflow {name}`\n\n```text\n{sub.format_help().rstrip()}\n```\n")
    finally:
        if previous is None:
            os.environ.pop("COLUMNS", None)
        else:
            os.environ["COLUMNS"] = previous
    return "\n".join(parts)


def on_page_markdown(markdown, page, config, files):
    if CLI_MARKER in markdown:
        markdown = markdown.replace(CLI_MARKER, cli_reference())
    return markdown

"""What a model version records about where it came from (the lineage contract of DESIGN.md)."""

from __future__ import annotations

import subprocess
from functools import cache
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path


def _git(*args: str) -> str:
    root = Path(__file__).resolve().parent.parent
    return subprocess.run(
        ["git", *args], cwd=root, capture_output=True, text=True, check=True, timeout=10
    ).stdout.strip()


@cache
def code_version() -> str:
    """The git commit of the code (``+dirty`` when uncommitted changes exist), else the version."""
    try:
        commit = _git("rev-parse", "HEAD")
        dirty = _git("status", "--porcelain", "--untracked-files=no")
        return f"{commit}+dirty" if dirty else commit
    except (OSError, subprocess.SubprocessError):
        try:
            return f"mlops-assets=={version('mlops-assets')}"
        except PackageNotFoundError:
            return "unknown"

"""Where a result came from: spurbench version and the git commit of the code that ran."""

from __future__ import annotations

import subprocess
from datetime import datetime, timezone
from functools import cache
from pathlib import Path

import bench


@cache
def git_commit() -> str | None:
    here = Path(bench.__file__).resolve().parent.parent
    try:
        out = subprocess.run(
            ["git", "-C", str(here), "rev-parse", "--short=12", "HEAD"],
            capture_output=True, text=True, timeout=5, check=False,
        )
    except (OSError, subprocess.TimeoutExpired):
        return None
    if out.returncode != 0:
        return None
    dirty = subprocess.run(
        ["git", "-C", str(here), "status", "--porcelain", "--untracked-files=no"],
        capture_output=True, text=True, timeout=5, check=False,
    ).stdout.strip()
    return out.stdout.strip() + ("-dirty" if dirty else "")


def version() -> str:
    return bench.__version__


def now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")

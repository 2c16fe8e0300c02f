"""A run directory's housekeeping: one coordinator at a time, and runs/latest."""

from __future__ import annotations

import fcntl
import logging
import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from bench.errors import UserError

log = logging.getLogger("bench.run")


def link_latest(runs_dir: Path, run_dir: Path) -> None:
    latest = runs_dir / "latest"
    try:
        tmp = runs_dir / f".latest.tmp{os.getpid()}"
        tmp.unlink(missing_ok=True)
        tmp.symlink_to(os.path.relpath(run_dir.resolve(), runs_dir.resolve()))
        os.replace(tmp, latest)
    except OSError as exc:  # e.g. a filesystem without symlinks: say so, keep going
        log.warning("could not point %s at %s: %s", latest, run_dir, exc)


@contextmanager
def exclusive(run_dir: Path) -> Iterator[None]:
    """One coordinator per run directory (it alone runs the final seeds); the OS drops
    the lock when the process dies, so a killed run can be resumed at once."""
    with open(run_dir / ".lock", "a+") as fh:
        try:
            fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            fh.seek(0)
            raise UserError(
                f"run directory {run_dir} is in use by another bench run "
                f"(pid {fh.read().strip() or '?'}); to add machines use `bench worker`"
            ) from None
        fh.seek(0)
        fh.truncate()
        fh.write(str(os.getpid()))
        fh.flush()
        yield

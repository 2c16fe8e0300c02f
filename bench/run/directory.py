"""A run directory's housekeeping: one coordinator at a time, and runs/latest."""

from __future__ import annotations

import fcntl
import json
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


def write_text_atomic(path: Path, text: str) -> Path:
    """Write a file so a crash leaves the old file or the new one, never a torn one."""
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    tmp.write_text(text)
    os.replace(tmp, path)
    return path


def write_json_atomic(path: Path, obj: object) -> None:
    write_text_atomic(path, json.dumps(obj, indent=2, sort_keys=True, default=str))


def read_state(path: Path) -> dict:
    """A run's state file; a torn or unreadable one (from a crash of an older version, or
    a disk error) is set aside with one line of explanation, and the run goes on."""
    if not path.exists():
        return {}
    try:
        state = json.loads(path.read_text())
        if not isinstance(state, dict):
            raise ValueError("not a JSON object")
        return state
    except (ValueError, OSError) as exc:
        aside = path.with_name(path.name + ".corrupt")
        os.replace(path, aside)
        log.warning("%s was unreadable (%s); moved to %s, the run continues under a new "
                    "MLflow parent run", path, exc, aside.name)
        return {}


IDENTITY_FILE = "identity.json"


def claim(run_dir: Path, identity: dict) -> None:
    """A run directory belongs to one configuration: the first run records what decides
    its numbers; a run with another configuration is refused, naming what differs."""
    path = run_dir / IDENTITY_FILE
    if not path.exists():
        if any(run_dir.glob("rows/*.parquet")):
            raise UserError(
                f"{run_dir} holds results of a run without a recorded configuration "
                f"({IDENTITY_FILE} is missing); use a new --out directory"
            )
        write_json_atomic(path, identity)
        return
    try:
        recorded = json.loads(path.read_text())
    except ValueError:
        raise UserError(
            f"{path} is unreadable, so it cannot be told whether this run's configuration "
            "matches; use a new --out directory (or delete the folder)"
        ) from None
    mine = json.loads(json.dumps(identity, sort_keys=True, default=str))
    diff = [
        f"{k}: {recorded.get(k)!r} there, {mine.get(k)!r} now"
        for k in sorted(set(recorded) | set(mine)) if recorded.get(k) != mine.get(k)
    ]
    if diff:
        raise UserError(
            f"run directory {run_dir} belongs to another configuration ({'; '.join(diff)}); "
            "choose a new --out, or rerun with the same options to resume"
        )

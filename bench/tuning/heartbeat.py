"""Liveness of running trials, so a dead process's trial never blocks a study's budget.

A running trial carries its owner (machine and process id) and a heartbeat that a
background thread refreshes every SPURBENCH_HEARTBEAT seconds (default 30), both as
trial user attributes, so this works the same on every Optuna storage (RDB and journal
files; Optuna's own heartbeat covers RDB only). Any process that looks at a study fails
a RUNNING trial as soon as its owner is a dead process on the same machine (a Ctrl-C'd
or SIGKILLed `bench run` that is re-run), or when its heartbeat is older than
GRACE_BEATS beats (a machine that died). Failed that way, without a recorded reason,
the trial does not count against the budget and is run again.

Heartbeats compare wall clocks across machines: keep them in sync (NTP); the grace of
several beats absorbs ordinary skew.
"""

from __future__ import annotations

import os
import socket
import threading
import time
from datetime import datetime
from functools import cache
from pathlib import Path
from types import TracebackType

import optuna
from optuna.trial import FrozenTrial, TrialState

OWNER = "spurbench.owner"
BEAT = "spurbench.beat"
GRACE_BEATS = 6
_ACTIVE: set[tuple[str, int]] = set()  # (study name, trial number) of trials running here


def interval() -> float:
    """Seconds between heartbeats (SPURBENCH_HEARTBEAT, default 30); a bad value is a
    UserError. A run (bench.run.runner.Run) calls this before it does any work, so the
    mistake is one line at the start, not a traceback from a thread mid-sweep."""
    raw = os.environ.get("SPURBENCH_HEARTBEAT", "30")
    try:
        value = float(raw)
    except ValueError:
        value = -1.0
    if value <= 0:
        from bench.errors import UserError

        raise UserError(f"SPURBENCH_HEARTBEAT={raw}: expected a positive number of seconds")
    return value


def grace() -> float:
    return GRACE_BEATS * interval()


@cache
def machine_id() -> str:
    """This machine (and PID namespace): processes with the same id can see each other's pids."""
    parts = [socket.gethostname()]
    try:
        parts.append(Path("/proc/sys/kernel/random/boot_id").read_text().strip())
        parts.append(os.readlink("/proc/self/ns/pid"))
    except OSError:  # not Linux: the host name alone
        pass
    return "|".join(parts)


def owner_id() -> str:
    return f"{machine_id()}/{os.getpid()}"


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def is_stale(study: optuna.Study, trial: FrozenTrial, now: float | None = None) -> bool:
    """Whether a RUNNING trial's process is gone (see the module docstring)."""
    now = time.time() if now is None else now
    owner = trial.user_attrs.get(OWNER)
    if isinstance(owner, str):
        machine, _, pid_text = owner.rpartition("/")
        if machine == machine_id() and pid_text.isdigit():
            pid = int(pid_text)
            if pid == os.getpid():
                return (study.study_name, trial.number) not in _ACTIVE
            if not _pid_alive(pid):
                return True
    beat = trial.user_attrs.get(BEAT)
    if not isinstance(beat, (int, float)):  # killed before the first stamp
        start = trial.datetime_start or datetime.now()
        beat = start.timestamp()
    return now - float(beat) > grace()


def fail_stale(study: optuna.Study, trials: list[FrozenTrial] | None = None) -> list[int]:
    """Fail the study's RUNNING trials whose process is gone; return their numbers.
    trials: the study's trials as just read (saves a read), else they are read."""
    interval()  # a bad SPURBENCH_HEARTBEAT fails here even when no trial is running
    failed = []
    running = (study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)) if trials is None
               else [t for t in trials if t.state == TrialState.RUNNING])
    for t in running:
        if not is_stale(study, t):
            continue
        try:
            study.tell(t.number, state=TrialState.FAIL, skip_if_finished=True)
        except (optuna.exceptions.UpdateFinishedTrialError, RuntimeError, ValueError):
            continue  # another process failed or finished it first
        failed.append(t.number)
    return failed


class Heartbeat:
    """While a trial runs in this process: stamp its owner, beat from a thread."""

    def __init__(self, study: optuna.Study, trial: optuna.Trial) -> None:
        self.trial = trial
        self.key = (study.study_name, trial.number)
        self.every = interval()  # read here, in the caller's thread: a bad value is its error
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="spurbench-heartbeat", daemon=True)

    def __enter__(self) -> Heartbeat:
        _ACTIVE.add(self.key)
        self.trial.set_user_attr(OWNER, owner_id())
        self.trial.set_user_attr(BEAT, time.time())
        self._thread.start()
        return self

    def _run(self) -> None:
        while not self._stop.wait(self.every):
            try:
                self.trial.set_user_attr(BEAT, time.time())
            except Exception:  # the trial finished (or was failed by another process)
                return

    def __exit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self._stop.set()
        self._thread.join(timeout=5)
        _ACTIVE.discard(self.key)

"""Optuna tuning: one study per (run, method), the same trial budget for every method.

TPE seeded per trial place (so a resumed or shared study never redraws another trial's
parameters, and a trial cut off by Ctrl-C or a dead process is replaced by the draw it
would have made), with its random start-up phase sized to the budget (`startup_trials`); the
method's defaults are the first trial, re-queued until it has run (an interrupted
defaults trial is never silently replaced by a TPE draw); intermediate validation scores
feed a median pruner; a trial that raises or returns NaN is recorded as failed with its
reason and the study goes on.

The budget counts trials that finished on their own: COMPLETE, PRUNED, or FAIL with a
`fail_reason`. A FAIL without a reason was cut off (Ctrl-C, a killed process, see
bench.tuning.heartbeat) or was surplus (below), so it does not count and is run again.
Many processes may tune one study (`bench worker`). A new trial is admitted only if
fewer than `budget` counting, running or queued trials precede it; the storage numbers
trials in creation order under a lock, so the budget is never overrun, and a process
that finds the budget taken but trials still running waits for them (a coordinator)
or moves on (a worker).
"""

from __future__ import annotations

import contextlib
import copy
import logging
import math
import random
import time
import warnings
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import optuna
from optuna.distributions import BaseDistribution
from optuna.storages import BaseStorage
from optuna.trial import FrozenTrial, TrialState

from bench.data.store_template import StoreTemplate, sqlite_path
from bench.errors import UserError
from bench.run.redact import redact, remember
from bench.tuning import heartbeat
from bench.tuning.seeding import derive_seed
from bench.tuning.space import Param, suggest_all
from bench.tuning.space import tunable as tunable_params

FAIL_REASON = "fail_reason"
INTERRUPTED = "spurbench.interrupted"
SURPLUS = "spurbench.surplus"
DEFAULTS = "spurbench.defaults"  # user attr of the defaults trial (and of the study: the params)
POLL_SECONDS = 1.0

log = logging.getLogger("bench.tuning.study")

# objective(params, trial) -> (score, extra metrics); it may call trial.report/should_prune
Objective = Callable[[dict[str, Any], optuna.trial.Trial], tuple[float, dict[str, float]]]
# a trial's outcome: (score, extra metrics), or the exception that ended it (TrialPruned...)
Outcome = tuple[float, dict[str, float]] | BaseException
# rounds([(trial, params), ...]) -> one outcome per trial, in order, as each is known
Rounds = Callable[[list[tuple[optuna.trial.Trial, dict[str, Any]]]], Iterator[Outcome]]


@dataclass
class TuneOutcome:
    best_params: dict[str, Any]
    finished: int  # trials that count against the budget
    completed: int
    failures: list[str]
    best_value: float | None
    best_is_default: bool | None = None  # whether the selected trial is the defaults trial


# -- storages ------------------------------------------------------------------------------
_STORAGES: dict[str, BaseStorage] = {}


def open_storage(url: str) -> BaseStorage:
    """--storage URL → an Optuna storage, one per URL in a process.

    `journal:PATH` is a journal file (for a shared filesystem); anything else is an
    SQLAlchemy URL (sqlite:///..., postgresql://user:password@host/db, mysql://...).
    """
    remember(url)
    if url in _STORAGES:
        return _STORAGES[url]
    try:
        if url.startswith("journal:"):
            from optuna.storages.journal import JournalFileBackend, JournalStorage

            path = url.removeprefix("journal:").removeprefix("//")
            if not path:
                raise ValueError("journal: needs a file path, e.g. journal:/shared/study.log")
            storage: BaseStorage = JournalStorage(JournalFileBackend(path))
        else:
            storage = _rdb_storage(url)
    except Exception as exc:
        raise UserError(
            redact(f"--storage {url}: cannot open it: {type(exc).__name__}: {exc}")
        ) from None
    _STORAGES[url] = storage
    return storage


OPTUNA_TABLES = frozenset({"alembic_version", "studies", "trials", "trial_params",
                           "trial_values", "version_info"})


def _build_store(url: str) -> None:
    optuna.storages.RDBStorage(url).engine.dispose()  # creates and stamps the tables


def optuna_template() -> StoreTemplate:
    """The cached empty study database of this Optuna version (bench.data.store_template)."""
    return StoreTemplate("Optuna", optuna.__version__, OPTUNA_TABLES, _build_store)


def _rdb_storage(url: str) -> BaseStorage:
    """An RDB storage; workers that start together on an empty database race to create
    its tables, and the losers simply try again once the tables exist. A new SQLite file
    starts as a copy of the cached empty one, made by this Optuna version: its schema
    check (alembic's scripts, ~0.1 s) is skipped for that copy only."""
    from sqlalchemy.exc import IntegrityError, ProgrammingError

    db = sqlite_path(url)
    seeded = db is not None and optuna_template().seed(db)
    kwargs: dict[str, Any] = (
        {"connect_args": {"timeout": 60}} if url.startswith("sqlite") else {"pool_pre_ping": True}
    )
    for attempt in range(6):
        try:
            return optuna.storages.RDBStorage(url, engine_kwargs=kwargs,
                                              skip_compatibility_check=seeded)
        except (IntegrityError, ProgrammingError):
            if attempt == 5:
                raise
            time.sleep(0.5 + random.random())
    raise AssertionError("unreachable")


# -- the sampler ---------------------------------------------------------------------------
class TrialSeededTPE(optuna.samplers.BaseSampler):
    """TPE whose randomness is seeded by (study seed, the trial's place in the study).

    A single seeded TPESampler restarts its random stream on every resume and in every
    worker, so it would propose the same "random" startup trials again; seeding per trial
    keeps a run reproducible and every trial's draw distinct. A trial's place is how many
    live trials (counting, running or queued) precede it, not its storage number: a
    trial cut off by Ctrl-C or a dead process takes no place, so the trial asked in its
    stead draws, from the same completed trials, what it would have drawn, and a resumed
    run proposes what an uninterrupted one does. (Without interruptions the place is the
    trial's number.) `constant_liar` keeps parallel workers from proposing what another
    worker is already running.
    """

    def __init__(self, seed: int, n_startup_trials: int = 10) -> None:
        self.seed = seed
        self.n_startup_trials = n_startup_trials
        self._number: int | None = None
        self._tpe: optuna.samplers.TPESampler | None = None
        self._view: _TrialView | None = None

    def _seen(self, study: optuna.Study, trial: FrozenTrial) -> Any:
        """The study as this trial's draws see it (one read of the trials per trial)."""
        self._for(study, trial)
        return self._view

    def _for(self, study: optuna.Study, trial: FrozenTrial) -> optuna.samplers.TPESampler:
        """This trial's TPE, seeded by its place."""
        if self._tpe is None or self._number != trial.number or self._view is None \
                or self._view.study is not study:
            self._number = trial.number
            self._view = _TrialView(study)
            place = len(_ahead(self._view.get_trials(deepcopy=False), trial.number))
            with warnings.catch_warnings():  # constant_liar is marked experimental
                warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
                self._tpe = optuna.samplers.TPESampler(
                    seed=derive_seed(self.seed, place) % (2**31), constant_liar=True,
                    n_startup_trials=self.n_startup_trials,
                )
        return self._tpe

    def infer_relative_search_space(
        self, study: optuna.Study, trial: FrozenTrial
    ) -> dict[str, BaseDistribution]:
        return self._for(study, trial).infer_relative_search_space(self._seen(study, trial),
                                                                   trial)

    def sample_relative(
        self, study: optuna.Study, trial: FrozenTrial, search_space: dict[str, BaseDistribution]
    ) -> dict[str, Any]:
        return self._for(study, trial).sample_relative(self._seen(study, trial), trial,
                                                       search_space)

    def sample_independent(
        self, study: optuna.Study, trial: FrozenTrial, name: str, dist: BaseDistribution
    ) -> Any:
        return self._for(study, trial).sample_independent(self._seen(study, trial), trial,
                                                          name, dist)

    def before_trial(self, study: optuna.Study, trial: FrozenTrial) -> None:
        self._for(study, trial).before_trial(study, trial)

    def after_trial(
        self,
        study: optuna.Study,
        trial: FrozenTrial,
        state: TrialState,
        values: Sequence[float] | None,
    ) -> None:
        # TPE's after_trial only passes the trial to its random sampler (no draw): a
        # trial told after others were asked needs no second read to find its place
        tpe = self._tpe if self._number == trial.number and self._tpe is not None \
            else optuna.samplers.TPESampler(n_startup_trials=self.n_startup_trials)
        tpe.after_trial(study, trial, state, values)


class _TrialView:
    """A study whose trial lists are read once while one trial draws its parameters.

    TPE reads every trial from the storage for each parameter it draws (twice once past
    the start-up draws: ~4 ms a read with SQLite, ~300 reads in a default run); the view
    reads them all once (every state, fresh) and filters that list, which also gives the
    trial's place (TrialSeededTPE). A trial's
    draws happen before it or any trial asked with it runs, so within them the lists
    cannot change in this process: the draws are the ones fresh reads give. (A trial
    that another worker finishes meanwhile is seen from the next trial on.) Everything
    else, writes included, goes to the study itself."""

    def __init__(self, study: optuna.Study) -> None:
        self.study = study
        self._all: list[FrozenTrial] | None = None

    def _get_trials(self, deepcopy: bool = True, states: Sequence[TrialState] | None = None,
                    use_cache: bool = False) -> list[FrozenTrial]:
        if self._all is None:  # one fresh read of every state; a filter is a list filter
            self._all = self.study._get_trials(deepcopy=False, states=None, use_cache=False)
        trials = self._all if states is None else [t for t in self._all if t.state in states]
        return copy.deepcopy(trials) if deepcopy else list(trials)

    def get_trials(self, deepcopy: bool = True,
                   states: Sequence[TrialState] | None = None) -> list[FrozenTrial]:
        return self._get_trials(deepcopy, states)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.study, name)


class SnapshotMedianPruner(optuna.pruners.MedianPruner):
    """Optuna's median pruner, reading the study's completed trials once per change.

    The median pruner compares a trial's intermediate score with the completed trials'
    at the same step, and Optuna reads every trial from the storage on each
    `should_prune` (8 ms with SQLite, on every report of every trial: 16% of tuning
    time). Completed trials change only when a trial is told: the tuning loop hands the
    trials it told to `note()`, which adds the completed ones to the snapshot (what a
    fresh read would show), so within one process every decision is the one the plain
    pruner makes. Trials other processes complete are seen within `max_age` seconds
    (their timing already varies from run to run).
    """

    def __init__(self, *args: Any, max_age: float = 2.0, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.max_age = max_age
        self._completed: list[FrozenTrial] | None = None
        self._read_at = 0.0

    def note(self, told: Sequence[FrozenTrial]) -> None:
        """Trials this process has just told: the completed ones join the snapshot."""
        if self._completed is not None:
            self._completed = [*self._completed,
                               *(t for t in told if t.state == TrialState.COMPLETE)]

    def prune(self, study: optuna.Study, trial: FrozenTrial) -> bool:
        now = time.monotonic()
        if self._completed is None or now - self._read_at > self.max_age:
            self._completed = study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
            self._read_at = now
        return super().prune(_Completed(study, self._completed), trial)


class _Completed:
    """What the median pruner reads of a study: its direction and completed trials."""

    def __init__(self, study: optuna.Study, completed: list[FrozenTrial]) -> None:
        self.direction = study.direction
        self._completed = completed

    def get_trials(self, deepcopy: bool = True,
                   states: Sequence[TrialState] | None = None) -> list[FrozenTrial]:
        if states is not None and tuple(states) != (TrialState.COMPLETE,):
            raise ValueError("the pruner's snapshot holds completed trials only")
        return list(self._completed)


def startup_trials(budget: int) -> int:
    """Random start-up draws before TPE models the results: a quarter of the budget, at
    least 2 (the defaults trial and one random draw), at most Optuna's default of 10.
    Optuna's fixed 10 would make every budget up to 10 a random search."""
    return max(2, min(10, budget // 4))


def open_study(
    storage: str | BaseStorage, name: str, seed: int, first: dict[str, Any] | None = None,
    budget: int | None = None,
) -> optuna.Study:
    """Create or load a study; its creator queues `first` (the defaults) as trial 0 and
    keeps it on the study, so any process can re-queue it (`requeue_defaults`)."""
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    store = open_storage(storage) if isinstance(storage, str) else storage
    startup = startup_trials(budget) if budget is not None else 10
    opts: dict[str, Any] = {
        "study_name": name, "storage": store, "sampler": TrialSeededTPE(seed, startup),
        "pruner": SnapshotMedianPruner(n_startup_trials=4, n_warmup_steps=3),
    }
    try:
        study = optuna.create_study(direction="maximize", **opts)
    except optuna.exceptions.DuplicatedStudyError:
        return optuna.load_study(**opts)
    if first is not None:  # queued before it is recorded, so no reader re-queues it
        study.enqueue_trial(first, user_attrs={DEFAULTS: True})
        study.set_user_attr(DEFAULTS, first)
    return study


def is_defaults(t: FrozenTrial | optuna.trial.Trial) -> bool:
    return bool(t.user_attrs.get(DEFAULTS))


def requeue_defaults(study: optuna.Study, trials: list[FrozenTrial] | None = None) -> bool:
    """Queue the defaults trial again if it was cut off (Ctrl-C, a dead worker) and no
    copy of it is pending or finished. True when it queued one. trials: the study's
    trials as just read (saves a read), else they are read."""
    first = study.user_attrs.get(DEFAULTS)
    if first is None:
        return False
    trials = study.get_trials(deepcopy=False) if trials is None else trials
    marked = [t for t in trials if is_defaults(t)]
    if any(counts(t) or t.state in (TrialState.RUNNING, TrialState.WAITING) for t in marked):
        return False
    study.enqueue_trial(first, user_attrs={DEFAULTS: True})
    log.info("the defaults trial of %s was interrupted: queued again", study.study_name)
    return True


# -- the budget ----------------------------------------------------------------------------
def counts(t: FrozenTrial) -> bool:
    """Whether a trial counts against the budget (see the module docstring)."""
    if t.state in (TrialState.COMPLETE, TrialState.PRUNED):
        return True
    return t.state == TrialState.FAIL and FAIL_REASON in t.user_attrs


def finished_trials(study: optuna.Study) -> list[FrozenTrial]:
    """Trials that count against the budget."""
    return [t for t in study.get_trials(deepcopy=False) if counts(t)]


def interrupted(t: FrozenTrial) -> bool:
    """A trial cut off by Ctrl-C or a dead process (not a failure of the method)."""
    return t.state == TrialState.FAIL and not counts(t) and SURPLUS not in t.user_attrs


def _live(t: FrozenTrial) -> bool:
    return counts(t) or t.state in (TrialState.RUNNING, TrialState.WAITING)


def _ahead(trials: Sequence[FrozenTrial], number: int) -> list[FrozenTrial]:
    """The counting, running or queued trials before trial `number`: its place."""
    return [t for t in trials if t.number < number and _live(t)]


def _admitted(study: optuna.Study, trial: optuna.trial.Trial, budget: int) -> bool:
    """Whether fewer than `budget` counting, running or queued trials precede this one.
    While the defaults trial is not among them, one slot stays reserved for it."""
    ahead = _ahead(study.get_trials(deepcopy=False), trial.number)
    reserve = 0
    if DEFAULTS in study.user_attrs and not is_defaults(trial):
        reserve = 0 if any(is_defaults(t) for t in ahead) else 1
    return len(ahead) + reserve < budget


def outcome(study: optuna.Study, fixed: dict[str, Any]) -> TuneOutcome:
    """The study's best parameters (ties: the earliest trial) and its failures so far."""
    done = finished_trials(study)
    complete = [t for t in done if t.state == TrialState.COMPLETE and t.value is not None]
    failures = [
        f"trial {t.number}: {t.user_attrs.get(FAIL_REASON, 'failed')}"
        for t in done if t.state == TrialState.FAIL
    ]
    if not complete:
        return TuneOutcome({}, len(done), 0, failures, None)
    best = max(complete, key=lambda t: (t.value, -t.number))
    return TuneOutcome({**best.params, **fixed}, len(done), len(complete), failures, best.value,
                       is_defaults(best))




def slots(
    study: optuna.Study, budget: int, started: float, timeout: float | None
) -> tuple[int, int, int] | None:
    """Fail stale trials, then say what is left to start: None once the budget is filled
    or the time is up, else (free slots, queued trials, trials that count so far). One
    read of the study unless a trial was failed or the defaults queued again. Shared by
    every tuning loop."""
    trials = study.get_trials(deepcopy=False)
    if heartbeat.fail_stale(study, trials):
        trials = study.get_trials(deepcopy=False)
    done = sum(counts(t) for t in trials)
    if done >= budget or (timeout is not None and time.monotonic() - started >= timeout):
        return None
    if requeue_defaults(study, trials):
        trials = study.get_trials(deepcopy=False)
    waiting = sum(t.state == TrialState.WAITING for t in trials)
    running = sum(t.state == TrialState.RUNNING for t in trials)
    return budget - done - running, waiting, done


def open_slots(study: optuna.Study, budget: int, started: float, timeout: float | None,
               wait: bool) -> Iterator[tuple[int, int, int]]:
    """slots() each time trials may be asked, until the budget or timeout is spent. When
    other workers hold every open slot it polls (wait) or ends (not wait)."""
    while (room := slots(study, budget, started, timeout)) is not None:
        free, waiting, _ = room
        if free <= 0 and not waiting:
            if not wait:
                return
            time.sleep(POLL_SECONDS)
            continue
        yield room

def after_tell(
    study: optuna.Study,
    frozen: optuna.trial.FrozenTrial,
    state: TrialState,
    on_trial: Callable[[optuna.trial.FrozenTrial], None] | None,
) -> None:
    """Hand a finished trial on, unless another process declared it dead meanwhile."""
    if frozen.state != state:
        log.warning(
            "trial %d of %s was declared dead by another process while it ran; "
            "its result is dropped and its slot is run again", frozen.number, study.study_name,
        )
    elif on_trial is not None and SURPLUS not in frozen.user_attrs:
        on_trial(frozen)


def one_at_a_time(objective: Objective) -> Rounds:
    """A per-trial objective as a round: each trial's outcome, or the exception it raised
    (Ctrl-C propagates)."""
    def rounds(batch: list[tuple[optuna.trial.Trial, dict[str, Any]]]) -> Iterator[Outcome]:
        for trial, params in batch:
            try:
                yield objective(params, trial)
            except Exception as exc:  # noqa: BLE001 - the trial's own outcome
                yield exc

    return rounds


def state_of(trial: optuna.trial.Trial, result: Outcome) -> tuple[TrialState, float | None]:
    """What a trial's outcome makes it: pruned, failed with a recorded reason (counts
    against the budget), or complete with its score."""
    if isinstance(result, optuna.TrialPruned):
        return TrialState.PRUNED, None
    if isinstance(result, BaseException):
        trial.set_user_attr(FAIL_REASON, redact(f"{type(result).__name__}: {result}"))
        return TrialState.FAIL, None
    score, extra = result
    for k, v in extra.items():
        trial.set_user_attr(k, v)
    if not math.isfinite(score):
        trial.set_user_attr(FAIL_REASON, f"objective returned {score}")
        return TrialState.FAIL, None
    return TrialState.COMPLETE, score


def tune(
    study: optuna.Study,
    space: dict[str, Param],
    fixed: dict[str, Any],
    budget: int,
    objective: Objective | None = None,
    timeout: float | None = None,
    on_trial: Callable[[FrozenTrial], None] | None = None,
    wait: bool = True,
    defaults: dict[str, Any] | None = None,
    *,
    width: int = 1,
    rounds: Rounds | None = None,
    progress: Callable[[int], None] | None = None,
) -> TuneOutcome:
    """Run trials until `budget` of them count (earlier runs and other processes included).

    The one tuning loop, for one trial at a time (width 1) and for `--parallel-trials`:
    each round asks Optuna for up to `width` trials (`study.ask`), hands the admitted ones
    with their parameters to `rounds` (or to `objective`, one by one), and tells each its
    outcome as it comes. A round's trials are proposed before any of them is told, so TPE
    sees K results at a time; that is why `parallel_trials` is part of a run's identity.

    wait=True (the coordinator) returns when the budget is filled, waiting for trials
    other processes are running; wait=False (a worker) returns as soon as every slot is
    taken. `timeout` (seconds) stops starting new trials. Ctrl-C tells what was decided,
    fails the rest as interrupted (not counted) and propagates KeyboardInterrupt.
    `progress` is given the number of trials that count (all processes') as each round
    starts and ends, from the reads the loop makes anyway.
    """
    if (objective is None) == (rounds is None):
        raise TypeError("tune() takes an objective or rounds, not both")
    rounds = rounds or one_at_a_time(objective)  # type: ignore[arg-type]
    tunable = tunable_params(space, fixed)
    defaults = defaults or {}
    logging.getLogger("optuna").setLevel(logging.ERROR)
    started = time.monotonic()
    for free, waiting, done in open_slots(study, budget, started, timeout, wait):
        if progress is not None:
            progress(min(done, budget))
        asked = [study.ask() for _ in range(min(width, max(free, waiting, 1)))]
        with contextlib.ExitStack() as beats:  # owners stamped before anything can fail
            for trial in asked:
                beats.enter_context(heartbeat.Heartbeat(study, trial))
            told = _round(study, asked, budget, tunable, fixed, defaults, rounds)
            frozen = [(study.tell(t, v, state=s, skip_if_finished=True), s) for t, s, v in told]
        if isinstance(study.pruner, SnapshotMedianPruner):
            study.pruner.note([f for f, _ in frozen])  # a told trial may be complete now
        for f, state in frozen:
            after_tell(study, f, state, on_trial)
        if progress is not None:
            progress(min(done + sum(counts(f) for f, _ in frozen), budget))
    result = outcome(study, fixed)
    if progress is not None:  # other processes' trials that ended while this one waited
        progress(min(result.finished, budget))
    return result


def _round(
    study: optuna.Study, asked: list[optuna.trial.Trial], budget: int,
    tunable: dict[str, Param], fixed: dict[str, Any], defaults: dict[str, Any], rounds: Rounds,
) -> list[tuple[optuna.trial.Trial, TrialState, float | None]]:
    """Admit what the budget allows (the rest is surplus), run the round, and decide each
    trial's state; Ctrl-C tells what was decided and fails the rest as interrupted."""
    told: list[tuple[optuna.trial.Trial, TrialState, float | None]] = []
    try:
        admitted = []
        for trial in asked:
            if _admitted(study, trial, budget):
                admitted.append((trial, {**suggest_all(trial, tunable, fixed, defaults), **fixed}))
            else:
                trial.set_user_attr(SURPLUS, True)
                told.append((trial, TrialState.FAIL, None))
        if admitted:
            results = rounds(admitted)
            for (trial, _), result in zip(admitted, results, strict=True):
                try:
                    told.append((trial, *state_of(trial, result)))
                except optuna.exceptions.UpdateFinishedTrialError:
                    told.append((trial, TrialState.FAIL, None))  # failed as dead elsewhere
    except KeyboardInterrupt:
        decided = {t.number for t, _, _ in told}
        for trial, state, value in told:
            study.tell(trial, value, state=state, skip_if_finished=True)
        for trial in asked:
            if trial.number not in decided:
                with contextlib.suppress(Exception):
                    trial.set_user_attr(INTERRUPTED, True)
                study.tell(trial, state=TrialState.FAIL, skip_if_finished=True)
        raise
    return told

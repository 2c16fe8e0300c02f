"""A run's record in the Optuna storage: how `bench worker`s find a coordinator's run.

The coordinator (bench.run.runner) writes it; workers (bench.run.worker) read it. It holds the
config (never a secret), the resolved method list, encoder and dataset fingerprint, the
MLflow experiment and parent run, and the tracking URI with its password masked.
"""

from __future__ import annotations

import json
from typing import Any

import optuna

from bench.run.provenance import now, version
from bench.run.redact import redact
from bench.tuning.study import open_storage

RECORD_PREFIX = "spurbench-run|"
RECORD_ATTR = "record"


def record_study(storage: str, key: str) -> optuna.Study:
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    return optuna.create_study(
        storage=open_storage(storage), study_name=RECORD_PREFIX + key, load_if_exists=True
    )


def publish_run(run: Any, tracker: Any, status: str) -> None:
    """Write (or update) the coordinator's run record (`run`: a bench.run.runner.Run)."""
    record = {
        "key": run.key, "status": status,
        "config": json.loads(redact(json.dumps(run.cfg.identity(), default=str))),
        "methods": list(run.entries), "dataset": run.spec.name,
        "dataset_fingerprint": run.spec.fingerprint(), "encoder": run.encoder_id,
        "tracking_uri": redact(tracker.uri), "experiment": f"spurbench/{run.spec.name}",
        "parent_run_id": tracker.parent_id, "spurbench_version": version(), "updated": now(),
    }
    record_study(run.storage, run.key).set_user_attr(RECORD_ATTR, record)

"""MLflow tracking: a parent run per `bench run`, nested runs per trial and final seed.

Default tracking URI is a SQLite file in the run directory; `--tracking-uri` or
MLFLOW_TRACKING_URI send runs to a server. URLs are redacted before they are logged.
"""

from __future__ import annotations

import logging
import os
import re
import time
from pathlib import Path
from typing import Any

from bench.redact import redact

_BAD_KEY = re.compile(r"[^A-Za-z0-9_\-. /]")
log = logging.getLogger("bench.tracking")


def metric_key(name: str) -> str:
    """MLflow keys allow [A-Za-z0-9_-. /]; group names like 'y=0,a=1' are mapped onto that."""
    return _BAD_KEY.sub("_", name)


def default_uri(run_dir: Path) -> str:
    return os.environ.get("MLFLOW_TRACKING_URI") or f"sqlite:///{(run_dir / 'mlflow.db').resolve()}"


class Tracker:
    """A thin MlflowClient wrapper holding the parent run of one `bench run`."""

    def __init__(self, uri: str, experiment: str, parent_run_id: str | None = None) -> None:
        from mlflow.tracking import MlflowClient

        for name in ("alembic", "mlflow"):
            logging.getLogger(name).setLevel(logging.WARNING)

        self.uri = uri
        self.client = MlflowClient(tracking_uri=uri)
        exp = self.client.get_experiment_by_name(experiment)
        self.experiment_id = (
            exp.experiment_id if exp is not None else self.client.create_experiment(experiment)
        )
        self.parent_id = parent_run_id

    def start_parent(self, name: str, params: dict[str, Any], tags: dict[str, str]) -> str:
        if self.parent_id is not None:
            try:
                run = self.client.get_run(self.parent_id)
                if run.info.status != "RUNNING":
                    self.client.update_run(self.parent_id, status="RUNNING")
                return self.parent_id
            except Exception:  # the parent is gone (new tracking store): start a fresh one
                self.parent_id = None
        run = self.client.create_run(self.experiment_id, run_name=name, tags=tags)
        self.parent_id = run.info.run_id
        self.log(self.parent_id, params=params)
        return self.parent_id

    def nested(
        self,
        name: str,
        params: dict[str, Any] | None = None,
        metrics: dict[str, float] | None = None,
        tags: dict[str, str] | None = None,
        status: str = "FINISHED",
    ) -> str:
        all_tags = {"mlflow.parentRunId": self.parent_id or "", **(tags or {})}
        run = self.client.create_run(self.experiment_id, run_name=name, tags=all_tags)
        self.log(run.info.run_id, params, metrics)
        self.client.set_terminated(run.info.run_id, status=status)
        return run.info.run_id

    def log(
        self,
        run_id: str,
        params: dict[str, Any] | None = None,
        metrics: dict[str, float] | None = None,
        tags: dict[str, str] | None = None,
    ) -> None:
        from mlflow.entities import Metric, Param, RunTag

        now = int(time.time() * 1000)
        self.client.log_batch(
            run_id,
            metrics=[
                Metric(metric_key(k), float(v), now, 0)
                for k, v in (metrics or {}).items()
                if v == v  # drop NaN
            ],
            params=[Param(metric_key(k), str(redact(str(v)))[:6000]) for k, v in (params or {}).items()],
            tags=[RunTag(k, str(redact(str(v)))) for k, v in (tags or {}).items()],
        )

    def artifact(self, run_id: str, path: Path) -> None:
        self.client.log_artifact(run_id, str(path))

    def finish(self, status: str = "FINISHED") -> None:
        if self.parent_id is not None:
            self.client.set_terminated(self.parent_id, status=status)

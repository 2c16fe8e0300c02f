"""MLflow tracking: a parent run per `bench run`, nested runs per trial and final seed.

Default tracking URI is a SQLite file in the run directory; `--tracking-uri` or
MLFLOW_TRACKING_URI send runs to a server (workers on other machines log there too).
Nested runs start RUNNING, so a long trial is visible while it runs, and end FINISHED,
FAILED or KILLED (Ctrl-C). A run left RUNNING by a killed process is marked KILLED by
`reconcile` when the run is resumed. Params and tags are redacted; MLflow's own "View
run at URL" lines, which would print the URL with its password, are switched off.
"""

from __future__ import annotations

import json
import logging
import os
import re
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from bench.data.store_template import StoreTemplate, sqlite_path
from bench.errors import UserError
from bench.run.redact import redact, remember

_BAD_KEY = re.compile(r"[^A-Za-z0-9_\-. /]")
log = logging.getLogger("bench.run.tracking")
KIND = "spurbench.kind"  # "trial" | "final"
STUDY = "spurbench.study"
TRIAL = "spurbench.trial"


def metric_key(name: str) -> str:
    """MLflow keys allow [A-Za-z0-9_-. /]; group names like 'y=0,a=1' are mapped onto that."""
    return _BAD_KEY.sub("_", name)


SCHEMES = ("file", "sqlite", "http", "https", "postgresql", "mysql", "mssql", "databricks")
PROBE_TIMEOUT = 5.0  # seconds to reach an MLflow server before the run starts


def _uri_label(uri: str) -> str:
    """How the user gave the URI: the environment variable, else the flag."""
    if os.environ.get("MLFLOW_TRACKING_URI") == uri:
        return f"MLFLOW_TRACKING_URI={redact(uri)}"
    return f"--tracking-uri {redact(uri)}"


PROBE_PATH = "/api/2.0/mlflow/experiments/search"


def _unreachable_reason(exc: Exception, timeout: float) -> str:
    """A failed request in a few words (its own text is a paragraph of pool details)."""
    text = str(exc)
    if isinstance(exc, TimeoutError) or "timed out" in text or "Timeout" in text:
        return f"no answer within {timeout:g} s"
    if "NameResolution" in text or "Name or service not known" in text or "getaddrinfo" in text:
        return "unknown host"
    if "Connection refused" in text:
        return "connection refused"
    if "SSL" in text or "CERTIFICATE" in text:
        return "TLS handshake failed"
    return type(exc).__name__


def _probe_get(uri: str, timeout: float) -> Any:
    """One GET of PROBE_PATH, no retries, sent as MLflow sends its requests (credentials
    in the URL or MLFLOW_TRACKING_USERNAME/PASSWORD/TOKEN, TLS settings)."""
    try:
        from mlflow.tracking._tracking_service.utils import get_default_host_creds
        from mlflow.utils.rest_utils import http_request
    except ImportError:  # another MLflow layout: a plain request
        import requests

        return requests.get(uri.rstrip("/") + PROBE_PATH, params={"max_results": 1},
                            timeout=timeout)
    return http_request(get_default_host_creds(uri), PROBE_PATH, "GET", max_retries=0,
                        timeout=timeout, raise_on_status=False, retry_codes=frozenset(),
                        params={"max_results": 1})


def probe_server(uri: str, timeout: float = PROBE_TIMEOUT) -> None:
    """Ask an http(s) tracking server for one experiment, once, within `timeout` seconds.

    MLflow itself retries an unreachable server for minutes (MLFLOW_HTTP_REQUEST_MAX_RETRIES
    with backoff) and then fails with a traceback; one short request before any work turns
    a wrong address, a stopped server, something else on that port or refused credentials
    into one line. A server error (5xx) is left to MLflow's retries: it may be passing.
    """
    from urllib.parse import urlsplit

    try:
        parts = urlsplit(uri)
        host, port = parts.hostname, parts.port or (443 if parts.scheme == "https" else 80)
    except ValueError:
        raise UserError(f"{_uri_label(uri)}: the port is not a number in 0..65535") from None
    if not host:
        raise UserError(f"{_uri_label(uri)}: no host name; expected http(s)://HOST:PORT")
    try:
        answer = _probe_get(uri, timeout)
    except Exception as exc:  # MlflowException around requests' errors, or those errors
        raise UserError(
            f"{_uri_label(uri)}: cannot reach the MLflow server at {host}:{port} "
            f"({_unreachable_reason(exc, timeout)}); start it (mlflow server --host HOST "
            "--port PORT) or fix the address"
        ) from None
    if answer.status_code in (401, 403):
        raise UserError(
            f"{_uri_label(uri)}: the MLflow server refused access (HTTP {answer.status_code}); "
            "check the user name and password (in the URL, or MLFLOW_TRACKING_USERNAME and "
            "MLFLOW_TRACKING_PASSWORD)"
        )
    if answer.status_code == 404:
        raise UserError(
            f"{_uri_label(uri)}: {host}:{port} answers, but not as an MLflow tracking server "
            f"(HTTP 404 for {PROBE_PATH}); check the address, port and path"
        )


def check_uri(uri: str | None) -> None:
    """Refuse a tracking URI MLflow cannot use before any work starts: a path, or one of
    SCHEMES (mlflow's own error is a traceback after the run has begun), and an http(s)
    server that cannot be reached (mlflow would retry it for minutes).
    """
    if not uri:
        return
    scheme = uri.partition("://")[0] if "://" in uri else ""
    if scheme and scheme.split("+")[0] not in SCHEMES:
        raise UserError(
            f"{_uri_label(uri)}: unknown scheme '{scheme}'; expected a folder, "
            "sqlite:///FILE, http(s)://HOST:PORT (an MLflow server) or postgresql://..."
        )
    if scheme in ("http", "https"):
        probe_server(uri)


def default_uri(run_dir: Path) -> str:
    return os.environ.get("MLFLOW_TRACKING_URI") or f"sqlite:///{(run_dir / 'mlflow.db').resolve()}"


TEMPLATE_TABLES = frozenset({"alembic_version", "experiments", "runs", "metrics", "params",
                             "tags"})


def _build_store(url: str) -> None:
    from mlflow.tracking import MlflowClient

    MlflowClient(tracking_uri=url).search_experiments()  # creates and migrates the tables


def mlflow_template() -> StoreTemplate:
    """The cached empty tracking store of this MLflow version (bench.data.store_template)."""
    import mlflow

    return StoreTemplate("MLflow", mlflow.__version__, TEMPLATE_TABLES, _build_store)


class Tracker:
    """A thin MlflowClient wrapper holding the parent run of one `bench run`."""

    def __init__(self, uri: str, experiment: str, parent_run_id: str | None = None) -> None:
        os.environ.setdefault("MLFLOW_SUPPRESS_PRINTING_URL_TO_STDOUT", "true")
        remember(uri)
        from mlflow.tracking import MlflowClient

        for name in ("alembic", "mlflow"):
            logging.getLogger(name).setLevel(logging.WARNING)

        self.uri = uri
        db = sqlite_path(uri)
        if db is not None:
            mlflow_template().seed(db)
        self.client = MlflowClient(tracking_uri=uri)
        # a local store keeps its artifacts beside it, not in ./mlruns of the working directory
        self.artifact_location = (db.parent / "mlartifacts").resolve().as_uri() if db else None
        self.experiment_id = self._experiment(experiment)
        self.parent_id = parent_run_id

    def _experiment(self, name: str) -> str:
        exp = self.client.get_experiment_by_name(name)
        if exp is not None:
            return exp.experiment_id
        try:
            return self.client.create_experiment(name, artifact_location=self.artifact_location)
        except Exception:  # another process created it a moment ago
            exp = self.client.get_experiment_by_name(name)
            if exp is None:
                raise
            return exp.experiment_id

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

    def start_child(
        self, name: str, params: dict[str, Any] | None = None, tags: dict[str, str] | None = None
    ) -> str:
        """A nested run under the parent, RUNNING until `end_child`."""
        all_tags = {"mlflow.parentRunId": self.parent_id or "", **(tags or {})}
        run = self.client.create_run(
            self.experiment_id, run_name=name, tags={k: str(redact(v)) for k, v in all_tags.items()}
        )
        self.log(run.info.run_id, params=params)
        return run.info.run_id

    def end_child(
        self,
        run_id: str,
        status: str = "FINISHED",
        metrics: dict[str, float] | None = None,
        tags: dict[str, str] | None = None,
        artifacts: dict[str, Any] | None = None,
        curves: dict[str, list[tuple[int, float]]] | None = None,
    ) -> None:
        """Log final metrics, tags, per-step `curves` (key → [(step, value)]) and JSON
        artifacts (name → object), then terminate; the metrics in one write."""
        self.log(run_id, metrics=metrics, tags=tags, curves=curves)
        for name, obj in (artifacts or {}).items():
            self.client.log_text(run_id, redact(json.dumps(obj, indent=2, sort_keys=True)), name)
        self.client.set_terminated(run_id, status=status)

    def nested(
        self,
        name: str,
        params: dict[str, Any] | None = None,
        metrics: dict[str, float] | None = None,
        tags: dict[str, str] | None = None,
        status: str = "FINISHED",
    ) -> str:
        """A nested run logged in one go (already finished)."""
        run_id = self.start_child(name, params, tags)
        self.end_child(run_id, status, metrics)
        return run_id

    def metric(self, run_id: str, key: str, value: float, step: int) -> None:
        if value == value:  # drop NaN
            self.client.log_metric(run_id, metric_key(key), float(value), step=step)

    def log(
        self,
        run_id: str,
        params: dict[str, Any] | None = None,
        metrics: dict[str, float] | None = None,
        tags: dict[str, str] | None = None,
        curves: dict[str, list[tuple[int, float]]] | None = None,
    ) -> None:
        from mlflow.entities import Metric, Param, RunTag

        now = int(time.time() * 1000)
        self.client.log_batch(
            run_id,
            metrics=[
                Metric(metric_key(k), float(v), now, 0)
                for k, v in (metrics or {}).items()
                if v == v  # drop NaN
            ] + [
                Metric(metric_key(k), float(v), now, step)
                for k, values in (curves or {}).items() for step, v in values if v == v
            ],
            params=[
                Param(metric_key(k), str(redact(str(v)))[:6000]) for k, v in (params or {}).items()
            ],
            tags=[RunTag(k, str(redact(str(v)))) for k, v in (tags or {}).items()],
        )

    def artifact(self, run_id: str, path: Path) -> None:
        self.client.log_artifact(run_id, str(path))

    def reconcile(self, trial_state: Callable[[str, int], str | None]) -> int:
        """Terminate nested runs a killed process left RUNNING; return how many.

        A final-seed run is only ever run by the coordinator calling this, so a RUNNING
        one is dead. A trial run is dead when its Optuna trial no longer runs:
        `trial_state(study, number)` gives the trial's state name, "INTERRUPTED" for one
        cut off, or None when unknown.
        """
        if self.parent_id is None:
            return 0
        runs = self.client.search_runs(
            [self.experiment_id],
            filter_string=f"tags.mlflow.parentRunId = '{self.parent_id}' "
            "and attributes.status = 'RUNNING'",
            max_results=10000,
        )
        fixed = 0
        for run in runs:
            tags = run.data.tags
            if tags.get(KIND) == "trial":
                number = tags.get(TRIAL, "")
                state = trial_state(tags.get(STUDY, ""), int(number)) if number.isdigit() else None
                if state in (None, "RUNNING", "WAITING"):
                    continue
                ended = {"COMPLETE": "FINISHED", "PRUNED": "FINISHED", "FAIL": "FAILED"}
                status = ended.get(state, "KILLED")
                note = state if state in ended else "INTERRUPTED"
            elif tags.get(KIND) == "final":
                status, note = "KILLED", "INTERRUPTED"
            else:
                continue
            self.client.set_tag(run.info.run_id, "spurbench.state", note)
            self.client.set_terminated(run.info.run_id, status=status)
            fixed += 1
        return fixed

    def finish(self, status: str = "FINISHED") -> None:
        if self.parent_id is not None:
            self.client.set_terminated(self.parent_id, status=status)


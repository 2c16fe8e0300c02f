"""A results row as a nested MLflow run, so `bench leaderboard publish --from-mlflow`
reads back the same row (its descriptive fields travel as tags)."""

from __future__ import annotations

import json
from typing import Any

from bench.report.publish import row_tags
from bench.run.tracking import Tracker


def log_row(
    tracker: Tracker, run_tags: dict[str, str], row: dict[str, Any],
    metrics: dict[str, float] | None = None, run_id: str | None = None,
    artifacts: dict[str, Any] | None = None,
) -> None:
    """Log `row` with the run's tags; `run_id`: end that (already started) run with the
    row instead of starting a new one."""
    seed = row.get("seed")
    tags = {"spurbench.kind": "final", "spurbench.method": row["method"],
            **({"spurbench.seed": str(seed)} if seed is not None else {}),
            **run_tags, **row_tags(row)}
    status = "FAILED" if row["status"] == "failed" else "FINISHED"
    if run_id is not None:
        tracker.end_child(run_id, status, metrics, tags, artifacts)
        return
    tracker.nested(
        f"{row['method']}/" + (f"seed-{seed}" if seed is not None else row["status"]),
        params=json.loads(row["params"]) if row.get("params") else None, metrics=metrics,
        tags=tags, status=status,
    )

"""The final seeds of one method replicate: fit at the selected parameters, evaluate, and
write one results row per seed as soon as it is known (a crash keeps every finished seed).

With `--parallel-trials K > 1` the seeds still to run of a batching method are fitted as
one computation (each equal to its own fit); otherwise one after another. Every seed is
a nested MLflow run started before its fit, so an interrupted seed is marked KILLED.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bench.engine.heads import head_kind
from bench.errors import UserError
from bench.plugins.registry import MethodEntry
from bench.report import results
from bench.run.fitting import Fitted, Fitter, batches
from bench.run.redact import redact
from bench.run.row_logging import log_row
from bench.run.tracking import KIND, Tracker


@dataclass
class FinalSeeds:
    """What the seeds of one replicate share: where rows go and what each row starts as."""

    fitter: Fitter
    tracker: Tracker
    entry: MethodEntry
    rows_dir: Path
    tags: dict[str, str]
    batch: bool  # fit the pending seeds as one computation (--parallel-trials > 1)

    def run(self, row: dict[str, Any], params: dict[str, Any], seeds: list[int],
            advance: Callable[[], None]) -> list[dict[str, Any]]:
        """Fit and record every seed without a row yet; the rows written now."""
        name = self.entry.name
        pending = []
        for seed in seeds:
            if results.seed_row_path(self.rows_dir, name, seed).exists():
                advance()
            else:
                pending.append(seed)
        together = self.batch and len(pending) > 1 and batches(self.entry)
        chunks = [pending] if together else [[s] for s in pending]
        written = []
        for chunk in chunks:
            ids = {s: self._start(s, params, row["replicate"]) for s in chunk}
            try:
                fits = self.fitter.fit_many(self.entry, [params] * len(chunk), chunk)
                for seed, fitted in zip(chunk, fits, strict=True):
                    seed_row = {**row, "seed": seed, "params": json.dumps(params, sort_keys=True)}
                    written.append(self._record(seed_row, ids[seed], fitted))
                    del ids[seed]
                    advance()
            except BaseException as exc:  # the seeds of this chunk not yet recorded
                status = "FAILED" if isinstance(exc, UserError) else "KILLED"
                for run_id in ids.values():
                    self.tracker.end_child(run_id, status, tags={"spurbench.state": "INTERRUPTED"}
                                           if status == "KILLED" else None)
                raise
        return written

    def _start(self, seed: int, params: dict[str, Any], replicate: int) -> str:
        return self.tracker.start_child(
            f"{self.entry.name}/seed-{seed}", params=params,
            tags={KIND: "final", "spurbench.method": self.entry.name,
                  "spurbench.seed": str(seed), "spurbench.replicate": str(replicate)},
        )

    def _record(self, row: dict[str, Any], run_id: str, fitted: Fitted) -> dict[str, Any]:
        """Evaluate one seed and write its row (a failure is a row too, with its reason)."""
        seed, name = row["seed"], self.entry.name
        failed_path = results.seed_row_path(self.rows_dir, name, seed, failed=True)
        try:
            predictor = fitted.predictor()
            val, test = self.fitter.evaluate_splits(predictor)
        except (KeyboardInterrupt, UserError):
            raise  # run() ends this seed's MLflow run
        except Exception as exc:  # noqa: BLE001 - the seed's failure, with its reason
            row.update(status="failed", reason=redact(f"seed {seed}: {type(exc).__name__}: {exc}"))
            results.write_atomic(results.make_frame([row]), failed_path)
            log_row(self.tracker, self.tags, row, run_id=run_id)
            return row
        extra = self.fitter.extra_metrics(predictor)
        row.update(status="ok", head=head_kind(predictor.module),
                   test_extra=json.dumps(extra, sort_keys=True) if extra else None,
                   **results.metric_fields(val, test))
        path = results.seed_row_path(self.rows_dir, name, seed)
        results.write_atomic(results.make_frame([row]), path)
        failed_path.unlink(missing_ok=True)
        groups = {"val": val.per_group if val else None, "test": test.per_group,
                  "test_counts": test.group_counts}
        log_row(self.tracker, self.tags, row,
                {**(val.as_dict("val_") if val else {}), **test.as_dict("test_"),
                 **{f"test_{k}": v for k, v in extra.items()}},
                run_id=run_id, artifacts={"per_group.json": groups})
        return row

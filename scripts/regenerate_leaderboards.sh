#!/usr/bin/env bash
# Regenerate the published leaderboards in leaderboards/: for every embedded built-in
# dataset, run every built-in method at its defaults (--trials 0) with $SEEDS seeds, then
# publish all of them (markdown, JSON, plots, index).
#
#   scripts/regenerate_leaderboards.sh            # from the repository root or anywhere
#   SEEDS=5 DEVICE=cuda scripts/regenerate_leaderboards.sh
#
# Environment: SEEDS (3), DEVICE (cpu: the committed boards are CPU numbers), RUNS (where
# the run directories go, runs/leaderboards), OUT (leaderboards), BENCH / PYTHON (the
# `bench` and `python` to use; default .venv/bin/ if present, else from PATH).
# Each dataset's run directory is started afresh: a regeneration never resumes results
# computed by older code. Boards of other datasets already in $OUT are left alone.
set -euo pipefail
cd "$(dirname "$0")/.."

SEEDS=${SEEDS:-3}
DEVICE=${DEVICE:-cpu}
RUNS=${RUNS:-runs/leaderboards}
OUT=${OUT:-leaderboards}
if [ -x .venv/bin/bench ]; then
  BENCH=${BENCH:-.venv/bin/bench}
  PYTHON=${PYTHON:-.venv/bin/python}
else
  BENCH=${BENCH:-bench}
  PYTHON=${PYTHON:-python3}
fi

datasets=$("$PYTHON" -c 'from bench.report.publish import embedded_datasets; print(" ".join(embedded_datasets()))')
methods=$("$PYTHON" -c 'from bench.report.publish import builtin_methods; print(",".join(builtin_methods()))')
if [ -z "$datasets" ] || [ -z "$methods" ]; then
  echo "error: no embedded datasets or no built-in methods found" >&2
  exit 2
fi
echo "datasets: $datasets"
echo "methods:  $methods"

sources=()
for d in $datasets; do
  run_dir="$RUNS/$d"
  rm -rf "$run_dir"
  echo "== $d"
  "$BENCH" run --dataset "$d" --methods "$methods" --trials 0 --seeds "$SEEDS" \
    --device "$DEVICE" --out "$run_dir" --runs-dir "$RUNS" --no-progress
  sources+=(--from "$run_dir")
done

"$BENCH" leaderboard publish --replace "${sources[@]}" --to "$OUT"

"""Whole-fit speed beside SpuCo 2.0.3, in one process on the same features.

    .tox/parity/bin/python tests/parity/speed.py [--seeds 3] [--pairs erm,groupdro,jtt]

A Waterbirds-sized generated set (4,795 training rows, D = 384) at SpuCo's reference
configuration (SGD, batch 128, 40 epochs; parity_lib.COMMON). Each side runs the
parity pair's fixed settings for the same seeds, timed end to end: ours is one
`bench.run.runner.run` (set-up, training, evaluation, results rows, MLflow, leaderboard);
SpuCo's is its trainer and Evaluator per seed with DataLoader workers at 0 (its own
default of 4 worker processes costs more than the training on a CPU). Each side is
timed `--repeats` times, alternating, and the best kept (a shared machine only adds
time). Prints a markdown table; the ratio is SpuCo's time over ours.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from dataclasses import replace
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from parity_features import SETS, WATERBIRDS_TRAIN, generate, write  # noqa: E402
from parity_lib import PAIRS, run_ours, run_spuco  # noqa: E402

SPEED_SET = replace(SETS[0], name="speed-d384", dim=384, train=WATERBIRDS_TRAIN)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seeds", type=int, default=3)
    ap.add_argument("--repeats", type=int, default=2)
    ap.add_argument("--pairs", default="erm,groupdro,jtt")
    args = ap.parse_args(argv)
    pairs = [p for p in PAIRS if p.key in args.pairs.split(",")]
    arrays = generate(SPEED_SET)
    print(f"set: {SPEED_SET.description}; {args.seeds} seeds per side, best of "
          f"{args.repeats}\n")
    print("| method | spurbench (s) | SpuCo (s) | SpuCo / spurbench |")
    print("|---|---|---|---|")
    with tempfile.TemporaryDirectory(prefix="spurbench-speed-") as tmp:
        npz = write(SPEED_SET, Path(tmp) / "data")
        run_ours(npz, SPEED_SET, pairs[0], 1, Path(tmp) / "runs")  # warm: imports, caches
        run_spuco(arrays, pairs[0].spuco, 1)
        for pair in pairs:
            ours = spuco = float("inf")
            for _ in range(args.repeats):
                t = time.perf_counter()
                run_ours(npz, SPEED_SET, pair, args.seeds, Path(tmp) / "runs")
                ours = min(ours, time.perf_counter() - t)
                t = time.perf_counter()
                run_spuco(arrays, pair.spuco, args.seeds)
                spuco = min(spuco, time.perf_counter() - t)
            print(f"| {pair.method} | {ours:.2f} | {spuco:.2f} | {spuco / ours:.1f}× |",
                  flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

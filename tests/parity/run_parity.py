"""Regenerate the parity table: `python tests/parity/run_parity.py --write docs/parity.md`.

Runs every pair on every generated set (the same computation as `tox -e parity`), prints
the markdown table and, with --write, replaces the table block of the given document.
`--from-json RESULTS/parity.json` rebuilds the table from a finished pytest run instead
of training again. Needs spuco==2.0.3 installed (the tox env `parity` has it).
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from parity_features import SETS  # noqa: E402
from parity_lib import (  # noqa: E402
    DEFAULT_SEEDS,
    PAIRS,
    Suite,
    from_json,
    render_results,
    replace_table,
    write_results,
)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seeds", type=int, default=DEFAULT_SEEDS,
                    help=f"seeds per side (≥ 5, default {DEFAULT_SEEDS}; some pairs × 2 or × 4)")
    ap.add_argument("--sets", default="", help="comma-separated set names (default: all)")
    ap.add_argument("--pairs", default="", help="comma-separated pair keys (default: all)")
    ap.add_argument("--write", type=Path, help="document whose table block to replace")
    ap.add_argument("--from-json", type=Path, help="parity.json of a finished run")
    ap.add_argument("--out", type=Path, help="also write parity.md/parity.json here")
    args = ap.parse_args(argv)
    if args.seeds < 5:
        ap.error("--seeds: the parity suite needs at least 5 seeds")
    sets = [s for s in SETS if not args.sets or s.name in args.sets.split(",")]
    pairs = [p for p in PAIRS if not args.pairs or p.key in args.pairs.split(",")]
    if args.from_json:
        data = json.loads(args.from_json.read_text())
        md = render_results(from_json(data["outcomes"]), sets, data.get("fingerprints", {}),
                            data.get("seconds", {}))
    else:
        with tempfile.TemporaryDirectory(prefix="spurbench-parity-") as tmp:
            suite = Suite(Path(tmp) / "data", Path(tmp) / "runs", args.seeds)
            t = time.perf_counter()
            for spec in sets:
                for pair in pairs:
                    print(f"{spec.name} {pair.key} …", file=sys.stderr, flush=True)
                    try:
                        suite.compare(spec, pair)
                    except Exception as exc:  # the row says so; carry on with the rest
                        print(f"  failed: {exc}", file=sys.stderr)
            print(f"done in {time.perf_counter() - t:.0f} s", file=sys.stderr)
            if args.out:
                write_results(suite, sets, args.out)
            md = render_results(list(suite.outcomes.values()), sets, suite.fingerprints(),
                                suite.seconds())
    print(md)
    if args.write:
        args.write.write_text(replace_table(args.write.read_text(), md))
        print(f"table written into {args.write}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

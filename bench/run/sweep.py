"""Backbone sweeps: `bench run --encoder A,B,C` runs the same methods on each encoder.

Each encoder is a complete run of its own (its own cached features, tuning, seeds and
board) in <sweep dir>/<encoder>/, so a sweep is resumable encoder by encoder and each
part publishes like any run; the sweep directory adds the cross-encoder board
(bench.report.cross_encoder). Encoders run one after another: they share the machine, and
features of one are cached before the next is encoded.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bench.errors import UserError
from bench.report import cross_encoder
from bench.report.leaderboard import Board
from bench.run.config import RunConfig


@dataclass
class SweepResult:
    sweep_dir: Path
    runs: dict[str, Any]  # encoder -> bench.run.runner.RunResult
    files: list[Path]

    @property
    def boards(self) -> dict[str, Board]:
        return {e: r.board for e, r in self.runs.items()}


def parse_encoders(text: str | None) -> list[str] | None:
    """`--encoder A,B` -> [A, B]; None or one encoder -> None (a plain run)."""
    if text is None or "," not in text:
        return None
    encoders = [e.strip() for e in text.split(",") if e.strip()]
    dupes = sorted({e for e in encoders if encoders.count(e) > 1})
    if dupes:
        raise UserError(f"--encoder: {', '.join(dupes)} given twice")
    if len(encoders) < 2:
        raise UserError(f"--encoder {text}: give encoders separated by commas, e.g. "
                        "openclip:RN50:openai,openclip:ViT-B-32:openai")
    return encoders


def folder_name(encoder: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "-", encoder).strip("-") or "encoder"


def sweep_dir(cfg: RunConfig, encoders: list[str]) -> Path:
    if cfg.out is not None:
        return Path(cfg.out)
    ident = {**cfg.identity(), "encoder": encoders}
    digest = hashlib.sha256(json.dumps(ident, sort_keys=True).encode()).hexdigest()[:10]
    return cfg.runs_dir / f"{cfg.dataset}-encoders-{digest}"


def run_sweep(cfg: RunConfig, encoders: list[str], console: Any = None,
              on_board: Any = None) -> SweepResult:
    """Run `cfg` once per encoder, then write the cross-encoder board; `on_board(encoder,
    result)` is called as each encoder finishes (to print its board at once)."""
    from bench.run.runner import run

    base = sweep_dir(cfg, encoders)
    if base.exists() and not base.is_dir():
        raise UserError(f"--out {base}: a file, not a directory")
    names = [folder_name(e) for e in encoders]
    if len(set(names)) != len(names):
        raise UserError(f"--encoder: {', '.join(encoders)} map to the same folder names")
    runs: dict[str, Any] = {}
    for encoder, name in zip(encoders, names, strict=True):
        if console is not None:
            console.print(f"encoder {encoder} ({len(runs) + 1}/{len(encoders)})",
                          highlight=False)
        result = run(dataclasses.replace(cfg, encoder=encoder, out=base / name), console)
        runs[encoder] = result
        if on_board is not None:
            on_board(encoder, result)
    boards = {e: r.board for e, r in runs.items()}
    files = cross_encoder.write(boards, base, "across-encoders")
    return SweepResult(base, runs, files)

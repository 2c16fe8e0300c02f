"""What a `bench run` is asked to do: its settings, and the checks that turn the
command line's forms (--params, --dataset-opt, --device) into them."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from bench.errors import UserError
from bench.plugins.registry import MethodEntry


@dataclass
class RunConfig:
    dataset: str = "synthetic"
    methods: list[str] | None = None  # None: every registered method
    dataset_opts: dict[str, str] = field(default_factory=dict)
    data_root: Path | None = None
    encoder: str | None = None
    head: str = "auto"
    selection: str = "worst-group"
    trials: int = 8
    seeds: int = 3
    seed_offset: int = 0  # final seeds are seed_offset .. seed_offset + seeds - 1
    params: list[str] = field(default_factory=list)
    out: Path | None = None
    runs_dir: Path = Path("runs")
    storage: str | None = None
    tracking_uri: str | None = None
    device: str = "auto"
    plugins: list[Path] = field(default_factory=list)
    timeout: float | None = None
    progress: bool = True
    encode_batch_size: int = 256  # images/texts per encoder batch (features are cached)
    encode_workers: int | None = None  # DataLoader workers for encoding; None: automatic
    parallel_trials: int = 1  # trials per tuning round, trained as one batch (bench.run.fitting)
    replicates: int = 1  # sweep replicates: tune → select → final seeds, R times

    def check(self) -> None:
        """Counts a run cannot have (before anything is loaded or created)."""
        from bench.tuning.seeding import TUNING_SEED_BASE

        for flag, value, least in (("--trials", self.trials, 0), ("--seeds", self.seeds, 1),
                                   ("--seed-offset", self.seed_offset, 0),
                                   ("--parallel-trials", self.parallel_trials, 1),
                                   ("--replicates", self.replicates, 1)):
            if value < least:
                raise UserError(f"{flag} {value}: must be {least} or more")
        if self.seed_offset + self.seeds * self.replicates > TUNING_SEED_BASE:
            raise UserError(
                f"--seed-offset {self.seed_offset} with {self.seeds} seeds × {self.replicates} "
                f"replicates reaches the tuning seeds ({TUNING_SEED_BASE} and up)"
            )

    def identity(self) -> dict[str, Any]:
        """What decides the numbers: the run directory's name hashes exactly this."""
        return {
            "dataset": self.dataset, "methods": sorted(self.methods or []),
            "dataset_opts": dict(sorted(self.dataset_opts.items())),
            "encoder": self.encoder, "head": self.head, "selection": self.selection,
            "trials": self.trials, "seeds": self.seeds, "params": sorted(self.params),
            **({"seed_offset": self.seed_offset} if self.seed_offset else {}),
            # K trials proposed before any is told changes what TPE proposes
            **({"parallel_trials": self.parallel_trials} if self.parallel_trials > 1 else {}),
            **({"replicates": self.replicates} if self.replicates > 1 else {}),
        }


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(name)
    except RuntimeError:
        raise UserError(f"--device {name}: expected auto, cpu, cuda or cuda:N") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise UserError(f"--device {name}: no CUDA device is available on this machine")
    return device


# `bench run` without --methods: the design card's comparison (SFR beside ERM, JTT, Group
# DRO and DFR) and the two simplest baselines; `--methods all` runs every registered one.
DEFAULT_METHODS = ("erm", "zeroshot", "reweight", "groupdro", "jtt", "dfr", "sfr")


def method_names(requested: list[str] | None, registered: list[str]) -> list[str]:
    """The methods a run covers: the default set, `all`, or the names given."""
    if not requested:
        return [m for m in DEFAULT_METHODS if m in registered]
    if requested == ["all"]:
        return list(registered)
    if "all" in requested:
        raise UserError("--methods all: give 'all' alone, or a list of method names")
    return list(requested)


def parse_params(items: list[str], entries: dict[str, MethodEntry]) -> dict[str, dict[str, Any]]:
    """--params METHOD.NAME=VALUE → {method: {name: value}}, checked against search spaces.
    `*.NAME=VALUE` sets NAME for every method in the run that has it (an error if none
    does); a method's own setting beats the wildcard whatever their order."""
    fixed: dict[str, dict[str, Any]] = {}
    parsed = []
    for item in items:
        key, sep, value = item.partition("=")
        method, dot, name = key.partition(".")
        if not sep or not dot:
            raise UserError(f"--params {item}: expected METHOD.NAME=VALUE, e.g. erm.lr=0.01")
        parsed.append((item, method, name, value))
    for item, method, name, value in sorted(parsed, key=lambda t: t[1] != "*"):
        if method == "*":
            having = [m for m, e in entries.items() if name in e.search_space()]
            if not having:
                raise UserError(f"--params {item}: no method in --methods has a tunable "
                                f"parameter '{name}'")
            for m in having:
                fixed.setdefault(m, {})[name] = entries[m].search_space()[name].parse(
                    f"{m}.{name}", value)
            continue
        if method not in entries:
            raise UserError(f"--params {item}: method '{method}' is not in --methods")
        space = entries[method].search_space()
        if name not in space:
            raise UserError(
                f"--params {item}: '{method}' has no tunable parameter '{name}'; "
                f"it has {', '.join(sorted(space)) or 'none'}"
            )
        fixed.setdefault(method, {})[name] = space[name].parse(f"{method}.{name}", value)
    return fixed


def parse_dataset_opts(items: list[str]) -> dict[str, str]:
    out = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise UserError(f"--dataset-opt {item}: expected KEY=VALUE")
        out[key] = value
    return out

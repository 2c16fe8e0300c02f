"""Hyperparameter search spaces: small typed declarations that map onto Optuna.

`tune=False` declares an option: it has a default and can be fixed with `--params`, but
the search never samples it (a paper-faithful switch such as Group DRO's sampling must
not cost every method's budget a dimension). An `Int` may be bounded `below` another
integer parameter sampled before it (SFR's warm-up stays below its epochs).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from bench.errors import UserError


def _in_domain(name: str, value: Any, low: Any) -> Any:
    """A fixed value may leave the search range (a paper's setting), not the parameter's
    domain: nothing negative where the range starts at 0 or above, no integer below 1
    where the range starts at 1 or above (epochs=0, lr=-5, weight_decay=-1)."""
    if value is None:
        return value
    floor = 1 if isinstance(low, int) and not isinstance(low, bool) and low >= 1 else 0
    if low >= 0 and value < floor:
        raise UserError(f"--params {name}={value}: must be {'>= 1' if floor else '>= 0'}")
    return value


def _number(name: str, text: str, kind: type) -> Any:
    if text.lower() in ("none", "same") and kind is float:
        return None
    try:
        return kind(text)
    except ValueError:
        what = "a number" if kind is float else "an integer"
        raise UserError(f"--params {name}={text}: expected {what}") from None


@dataclass(frozen=True)
class Float:
    low: float
    high: float
    default: float | None  # None: "same as" another setting (the method says which)
    log: bool = False
    tune: bool = True

    def suggest(self, trial: Any, name: str, chosen: dict[str, Any] | None = None) -> float:
        return trial.suggest_float(name, self.low, self.high, log=self.log)

    def parse(self, name: str, text: str) -> float | None:
        return _in_domain(name, _number(name, text, float), self.low)


@dataclass(frozen=True)
class Int:
    low: int
    high: int
    default: int | None
    log: bool = False
    tune: bool = True
    below: str | None = None  # another Int parameter this one must stay strictly below

    def bounds(self, chosen: dict[str, Any] | None) -> tuple[int, int]:
        high = self.high
        if self.below is not None and chosen and chosen.get(self.below) is not None:
            high = min(high, int(chosen[self.below]) - 1)
        return self.low, max(self.low, high)

    def suggest(self, trial: Any, name: str, chosen: dict[str, Any] | None = None) -> int:
        low, high = self.bounds(chosen)
        return trial.suggest_int(name, low, high, log=self.log)

    def parse(self, name: str, text: str) -> int:
        return _in_domain(name, _number(name, text, int), self.low)


@dataclass(frozen=True)
class Choice:
    choices: tuple[Any, ...]
    default: Any
    tune: bool = True

    def suggest(self, trial: Any, name: str, chosen: dict[str, Any] | None = None) -> Any:
        return trial.suggest_categorical(name, list(self.choices))

    def parse(self, name: str, text: str) -> Any:
        for c in self.choices:
            if str(c) == text or (isinstance(c, bool) and str(c).lower() == text.lower()):
                return c
        if all(isinstance(c, int) and not isinstance(c, bool) for c in self.choices):
            # a fixed count outside the tuned choices (a paper's batch of 64), as a fixed
            # Int or Float may lie outside its tuning range
            return _in_domain(name, _number(name, text, int), 1)
        raise UserError(f"--params {name}={text}: expected one of {list(self.choices)}")


Param = Float | Int | Choice


def defaults(space: dict[str, Param]) -> dict[str, Any]:
    return {k: p.default for k, p in space.items()}


def tunable(space: dict[str, Param], fixed: dict[str, Any]) -> dict[str, Param]:
    """The parameters a search samples: declared tunable and not fixed."""
    return {k: p for k, p in space.items() if p.tune and k not in fixed}


def suggest_all(trial: Any, space: dict[str, Param], fixed: dict[str, Any],
                base: dict[str, Any]) -> dict[str, Any]:
    """One trial's tunable parameters, in declaration order, each bound seeing the values
    chosen (or fixed, or defaulted) before it."""
    chosen = {**base, **fixed}
    out: dict[str, Any] = {}
    for k, p in space.items():
        out[k] = chosen[k] = p.suggest(trial, k, chosen)
    return out


def violations(space: dict[str, Param], params: dict[str, Any]) -> list[str]:
    """Constraints between parameters that a configuration breaks (empty: none)."""
    out = []
    for k, p in space.items():
        if isinstance(p, Int) and p.below is not None and params.get(k) is not None:
            limit = params.get(p.below)
            if limit is not None and params[k] >= limit:
                out.append(f"{k}={params[k]} must be below {p.below}={limit}")
    return out


def training_space(
    lr: float = 1e-2, weight_decay: float = 1e-4, epochs: int = 20, batch_size: int = 256,
    optimizer: str = "adamw",
) -> dict[str, Param]:
    """The optimisation hyperparameters every trained head shares, with given defaults."""
    return {
        "lr": Float(1e-4, 1e-1, lr, log=True),
        "weight_decay": Float(1e-6, 1e-1, weight_decay, log=True),
        "epochs": Int(5, 40, epochs),
        "batch_size": Choice((128, 256, 512), batch_size),
        "optimizer": Choice(("adamw", "sgd"), optimizer),
    }

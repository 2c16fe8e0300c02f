"""Hyperparameter search spaces: small typed declarations that map onto Optuna."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from bench.errors import UserError


@dataclass(frozen=True)
class Float:
    low: float
    high: float
    default: float
    log: bool = False

    def suggest(self, trial: Any, name: str) -> float:
        return trial.suggest_float(name, self.low, self.high, log=self.log)

    def parse(self, name: str, text: str) -> float:
        try:
            return float(text)
        except ValueError:
            raise UserError(f"--params {name}={text}: expected a number") from None


@dataclass(frozen=True)
class Int:
    low: int
    high: int
    default: int
    log: bool = False

    def suggest(self, trial: Any, name: str) -> int:
        return trial.suggest_int(name, self.low, self.high, log=self.log)

    def parse(self, name: str, text: str) -> int:
        try:
            return int(text)
        except ValueError:
            raise UserError(f"--params {name}={text}: expected an integer") from None


@dataclass(frozen=True)
class Choice:
    choices: tuple[Any, ...]
    default: Any

    def suggest(self, trial: Any, name: str) -> Any:
        return trial.suggest_categorical(name, list(self.choices))

    def parse(self, name: str, text: str) -> Any:
        for c in self.choices:
            if str(c) == text:
                return c
        raise UserError(f"--params {name}={text}: expected one of {list(self.choices)}")


Param = Float | Int | Choice


def defaults(space: dict[str, Param]) -> dict[str, Any]:
    return {k: p.default for k, p in space.items()}


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

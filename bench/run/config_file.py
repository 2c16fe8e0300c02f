"""`bench run --config FILE.toml` and `--preset NAME`: a run's settings kept in a file.

Why: a paper's settings for seven methods took 40 `--params` flags. A file holds the
dataset, methods, budget, selection rule and per-method parameters; flags given on the
command line override it; a preset is such a file shipped in presets/, citing its source.

    dataset = "synthetic"
    methods = ["erm", "jtt"]
    trials = 0
    seeds = 5
    [dataset_opts]
    n_train = 2000
    [params."*"]          # every method in the run that has the parameter
    epochs = 40
    [params.jtt]          # one method (beats "*")
    lambda_up = 100
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

from bench.errors import UserError, did_you_mean

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - Python 3.10
    import tomli as tomllib

# file key -> the type it must have (the same names as the flags, with '_' for '-')
SETTINGS: dict[str, type | tuple[type, ...]] = {
    "dataset": str, "methods": (list, str), "trials": int, "seeds": int, "seed_offset": int,
    "replicates": int, "selection": str, "encoder": str, "head": str, "device": str,
    "parallel_trials": int, "timeout": (int, float), "data_root": str,
    "dataset_opts": dict, "params": dict, "description": str, "source": str,
}


def preset_dirs() -> list[Path]:
    """presets/ inside the installed wheel, else beside bench/ in a checkout."""
    pkg = Path(__file__).resolve().parents[1]  # the bench package
    return [d for d in (pkg / "_builtin" / "presets", pkg.parent / "presets") if d.is_dir()]


def presets() -> dict[str, Path]:
    found: dict[str, Path] = {}
    for folder in preset_dirs():
        for path in sorted(folder.glob("*.toml")):
            found.setdefault(path.stem, path)
    return found


def preset_path(name: str) -> Path:
    known = presets()
    if name not in known:
        raise UserError(f"--preset {name}: no such preset{did_you_mean(name, known)}; "
                        f"presets: {', '.join(sorted(known)) or 'none'}")
    return known[name]


def _value_text(value: Any) -> str:
    return str(value)  # a TOML true is the Choice value True


def load(path: Path, flag: str = "--config") -> dict[str, Any]:
    """The file's settings, checked: unknown keys and wrong types name the file and key."""
    path = Path(path)
    try:
        doc = tomllib.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError as exc:
        raise UserError(f"{flag} {path}: no such file") from exc
    except (OSError, UnicodeDecodeError) as exc:
        raise UserError(f"{flag} {path}: cannot read it ({exc})") from exc
    except tomllib.TOMLDecodeError as exc:
        raise UserError(f"{flag} {path}: not valid TOML ({exc})") from exc
    out: dict[str, Any] = {}
    for key, value in doc.items():
        if key not in SETTINGS:
            raise UserError(f"{path}: unknown setting '{key}'{did_you_mean(key, SETTINGS)}; "
                            f"settings: {', '.join(sorted(SETTINGS))}")
        want = SETTINGS[key]
        if isinstance(value, bool) or not isinstance(value, want):
            raise UserError(f"{path}: '{key}' = {value!r} has the wrong type")
        out[key] = value
    if isinstance(out.get("methods"), str):
        out["methods"] = [m.strip() for m in out["methods"].split(",") if m.strip()]
    params: list[str] = []
    for method, table in out.pop("params", {}).items():
        if not isinstance(table, dict):
            raise UserError(f"{path}: [params.{method}] must be a table of NAME = VALUE")
        params += [f"{method}.{k}={_value_text(v)}" for k, v in table.items()]
    out["params"] = params
    opts = out.pop("dataset_opts", {})
    out["dataset_opt"] = [f"{k}={_value_text(v)}" for k, v in opts.items()]
    return out


def merge(layers: list[dict[str, Any]], given: dict[str, Any]) -> dict[str, Any]:
    """Settings from files (earlier layers lose) under the flags actually given: lists of
    params and dataset options add up, flags last (so they win)."""
    merged: dict[str, Any] = {}
    for layer in [*layers, given]:
        for key, value in layer.items():
            if key in ("params", "dataset_opt"):
                merged[key] = [*merged.get(key, []), *(value or [])]
            else:
                merged[key] = value
    return merged

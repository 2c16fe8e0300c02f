"""spurbench: compare methods for robustness to spurious correlations on frozen features.

This module is the public API: plugins import only what is exported here. Names load on
first use (PEP 562), so `import bench` — and `bench --help`, `bench methods list` — do
not pay for torch, numpy or polars; a plugin that touches `bench.Stage` loads them then.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from bench import _openmp  # noqa: F401  (first: before anything imports torch)

# Eager and light: `bench.method` and `bench.dataset` are both submodules and the
# registering decorators; importing the registry first loads the submodules, then these
# names are rebound to the decorators, as plugins expect.
from bench.dataset import Dataset, DatasetOptions
from bench.errors import UserError
from bench.method import Context, Method
from bench.registry import dataset, method, variant
from bench.space import Choice, Float, Int, training_space

__version__ = "0.1.0"

# public name -> (module, attribute), loaded on first access
_LAZY: dict[str, tuple[str, str]] = {
    "BatchRule": ("bench.train_config", "BatchRule"),
    "DatasetSpec": ("bench.spec", "DatasetSpec"),
    "EvalGroups": ("bench.spec", "EvalGroups"),
    "FeatureDropout": ("bench.heads", "FeatureDropout"),
    "FeatureSplit": ("bench.store", "FeatureSplit"),
    "FeatureStore": ("bench.store", "FeatureStore"),
    "GroupDRORule": ("bench.group_dro_rule", "GroupDRORule"),
    "HeadFactory": ("bench.heads", "HeadFactory"),
    "Hooks": ("bench.train_config", "Hooks"),
    "LinearHead": ("bench.heads", "LinearHead"),
    "Metrics": ("bench.metrics", "Metrics"),
    "NonFiniteLoss": ("bench.train_config", "NonFiniteLoss"),
    "Predictor": ("bench.predictor", "Predictor"),
    "PromptHead": ("bench.heads", "PromptHead"),
    "Sampler": ("bench.samplers", "Sampler"),
    "Stage": ("bench.stages", "Stage"),
    "TrainConfig": ("bench.train_config", "TrainConfig"),
    "Trainer": ("bench.trainer", "Trainer"),
    "compute_metrics": ("bench.metrics", "compute"),
    "group_balanced_weights": ("bench.samplers", "group_balanced_weights"),
    # dataset formats and the cache folder (dataset plugins)
    "cache_dir": ("bench.cache", "cache_dir"),
    "check_image_files": ("bench.formats", "check_image_files"),
    "data_base": ("bench.formats", "data_base"),
    "find_data_dir": ("bench.formats", "find_data_dir"),
    "int_column": ("bench.formats", "int_column"),
    "read_csv_table": ("bench.formats", "read_csv_table"),
    "spec_from_source": ("bench.formats", "spec_from_source"),
    "split_column": ("bench.formats", "split_column"),
    "wilds_download": ("bench.formats", "wilds_download"),
    # many configurations in one pass
    "fit_batched": ("bench.batched", "fit_batched"),
}

__all__ = [
    "BatchRule", "Choice", "Context", "Dataset", "DatasetOptions", "DatasetSpec", "EvalGroups",
    "FeatureDropout", "FeatureSplit", "FeatureStore", "Float", "HeadFactory", "Hooks", "Int",
    "LinearHead", "Method", "Metrics", "NonFiniteLoss", "Predictor", "PromptHead", "Sampler",
    "Stage", "TrainConfig", "Trainer", "UserError", "__version__", "cache_dir",
    "check_image_files", "compute_metrics", "data_base", "dataset", "find_data_dir",
    "fit_batched", "group_balanced_weights", "int_column", "method", "read_csv_table",
    "GroupDRORule",
    "spec_from_source", "split_column", "training_space", "variant", "wilds_download",
]


def __getattr__(name: str) -> Any:
    if name not in _LAZY:
        raise AttributeError(f"module 'bench' has no attribute {name!r}")
    module, attr = _LAZY[name]
    value = getattr(importlib.import_module(module), attr)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_LAZY))


if TYPE_CHECKING:  # for type checkers and IDEs: the lazy names, spelled out
    from bench.batched import fit_batched
    from bench.cache import cache_dir
    from bench.formats import (
        check_image_files,
        data_base,
        find_data_dir,
        int_column,
        read_csv_table,
        spec_from_source,
        split_column,
        wilds_download,
    )
    from bench.group_dro_rule import GroupDRORule
    from bench.heads import FeatureDropout, HeadFactory, LinearHead, PromptHead
    from bench.metrics import Metrics
    from bench.metrics import compute as compute_metrics
    from bench.predictor import Predictor
    from bench.samplers import Sampler, group_balanced_weights
    from bench.spec import DatasetSpec, EvalGroups
    from bench.stages import Stage
    from bench.store import FeatureSplit, FeatureStore
    from bench.train_config import BatchRule, Hooks, NonFiniteLoss, TrainConfig
    from bench.trainer import Trainer

"""spurbench: compare methods for robustness to spurious correlations on frozen features.

This module is the public API: plugins import only what is exported here. Names load on
first use (PEP 562), so `import bench` — and `bench --help`, `bench methods list` — do
not pay for torch, numpy or polars; a plugin that touches `bench.Stage` loads them then.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from bench import _openmp  # noqa: F401  (first: before anything imports torch

# Eager and light: `bench.plugins.method` and `bench.data.dataset` are both submodules and the
# registering decorators; importing the registry first loads the submodules, then these
# names are rebound to the decorators, as plugins expect.
from bench.data.dataset import Dataset, DatasetOptions
from bench.errors import UserError
from bench.plugins.method import Context, Method
from bench.plugins.registry import dataset, method, variant
from bench.tuning.space import Choice, Float, Int, training_space

__version__ = "0.1.0"

# public name -> (module, attribute), loaded on first access
_LAZY: dict[str, tuple[str, str]] = {
    "BatchRule": ("bench.engine.config", "BatchRule"),
    "DatasetSpec": ("bench.data.spec", "DatasetSpec"),
    "EvalGroups": ("bench.data.spec", "EvalGroups"),
    "FeatureDropout": ("bench.engine.heads", "FeatureDropout"),
    "FeatureSplit": ("bench.data.store", "FeatureSplit"),
    "FeatureStore": ("bench.data.store", "FeatureStore"),
    "GroupDRORule": ("bench.engine.group_dro_rule", "GroupDRORule"),
    "HeadFactory": ("bench.engine.heads", "HeadFactory"),
    "Hooks": ("bench.engine.config", "Hooks"),
    "LinearHead": ("bench.engine.heads", "LinearHead"),
    "Metrics": ("bench.report.metrics", "Metrics"),
    "NonFiniteLoss": ("bench.engine.config", "NonFiniteLoss"),
    "Predictor": ("bench.engine.predictor", "Predictor"),
    "PromptHead": ("bench.engine.heads", "PromptHead"),
    "Sampler": ("bench.engine.samplers", "Sampler"),
    "Stage": ("bench.engine.stages", "Stage"),
    "TrainConfig": ("bench.engine.config", "TrainConfig"),
    "Trainer": ("bench.engine.trainer", "Trainer"),
    "compute_metrics": ("bench.report.metrics", "compute"),
    "group_balanced_weights": ("bench.engine.samplers", "group_balanced_weights"),
    # dataset formats and the cache folder (dataset plugins)
    "cache_dir": ("bench.data.cache", "cache_dir"),
    "check_image_files": ("bench.data.formats", "check_image_files"),
    "data_base": ("bench.data.formats", "data_base"),
    "fetch_archive": ("bench.data.formats", "fetch_archive"),
    "find_data_dir": ("bench.data.formats", "find_data_dir"),
    "int_column": ("bench.data.formats", "int_column"),
    "read_csv_table": ("bench.data.formats", "read_csv_table"),
    "spec_from_source": ("bench.data.formats", "spec_from_source"),
    "split_column": ("bench.data.formats", "split_column"),
    "wilds_download": ("bench.data.formats", "wilds_download"),
    # many configurations in one pass
    "fit_batched": ("bench.engine.batched", "fit_batched"),
}

__all__ = [
    "BatchRule", "Choice", "Context", "Dataset", "DatasetOptions", "DatasetSpec", "EvalGroups",
    "FeatureDropout", "FeatureSplit", "FeatureStore", "Float", "GroupDRORule", "HeadFactory",
    "Hooks", "Int", "LinearHead", "Method", "Metrics", "NonFiniteLoss", "Predictor",
    "PromptHead", "Sampler", "Stage", "TrainConfig", "Trainer", "UserError", "__version__",
    "cache_dir", "check_image_files", "compute_metrics", "data_base", "dataset",
    "fetch_archive", "find_data_dir", "fit_batched", "group_balanced_weights", "int_column",
    "method", "read_csv_table", "spec_from_source", "split_column", "training_space",
    "variant", "wilds_download",
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
    from bench.data.cache import cache_dir
    from bench.data.formats import (
        check_image_files,
        data_base,
        fetch_archive,
        find_data_dir,
        int_column,
        read_csv_table,
        spec_from_source,
        split_column,
        wilds_download,
    )
    from bench.data.spec import DatasetSpec, EvalGroups
    from bench.data.store import FeatureSplit, FeatureStore
    from bench.engine.batched import fit_batched
    from bench.engine.config import BatchRule, Hooks, NonFiniteLoss, TrainConfig
    from bench.engine.group_dro_rule import GroupDRORule
    from bench.engine.heads import FeatureDropout, HeadFactory, LinearHead, PromptHead
    from bench.engine.predictor import Predictor
    from bench.engine.samplers import Sampler, group_balanced_weights
    from bench.engine.stages import Stage
    from bench.engine.trainer import Trainer
    from bench.report.metrics import Metrics
    from bench.report.metrics import compute as compute_metrics

"""spurbench: compare methods for robustness to spurious correlations on frozen features.

This module is the public API: plugins import only what is exported here.
"""

from bench import _openmp  # noqa: F401  (first: before anything imports torch)
from bench.batched import fit_batched
from bench.cache import cache_dir
from bench.dataset import Dataset, DatasetOptions
from bench.errors import UserError
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
from bench.heads import FeatureDropout, HeadFactory, LinearHead, PromptHead
from bench.method import Context, Method
from bench.metrics import Metrics
from bench.metrics import compute as compute_metrics
from bench.predictor import Predictor
from bench.registry import dataset, method, variant
from bench.samplers import Sampler, group_balanced_weights
from bench.space import Choice, Float, Int, training_space
from bench.spec import DatasetSpec, EvalGroups
from bench.stages import Stage
from bench.store import FeatureSplit, FeatureStore
from bench.train_config import BatchRule
from bench.trainer import Hooks, NonFiniteLoss, TrainConfig, Trainer

__version__ = "0.1.0"

__all__ = [
    "BatchRule", "Choice", "Context", "Dataset", "DatasetOptions", "DatasetSpec", "EvalGroups",
    "FeatureDropout",
    "FeatureSplit", "FeatureStore", "Float", "HeadFactory", "Hooks", "Int", "LinearHead",
    "Method", "Metrics", "NonFiniteLoss", "Predictor", "PromptHead", "Sampler", "TrainConfig",
    "Stage", "Trainer", "UserError", "__version__", "compute_metrics", "dataset",
    "group_balanced_weights", "method", "training_space", "variant",
    # dataset formats and the cache folder (dataset plugins)
    "cache_dir", "check_image_files", "data_base", "find_data_dir", "int_column",
    "read_csv_table", "spec_from_source", "split_column", "wilds_download",
    # many configurations in one pass (methods' fit_batched)
    "fit_batched",
]

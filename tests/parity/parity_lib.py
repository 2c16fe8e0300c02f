"""Peer parity: our methods beside SpuCo 2.0.3's on the same features, same fixed settings.

Both sides train a linear layer (D → C) on the generated feature sets of
`parity_features`, with SpuCo's reference configuration (SGD, lr 1e-3, momentum 0.9,
weight decay 1e-4, batch 128, 40 epochs, last epoch kept, no early stopping), over the
same number of seeds, and report test worst-group accuracy (WGA).

- Ours runs through the library API (`bench.run.runner.run`, dataset `features`, head
  `linear`, no tuning: trials=0) and reads `test_wga` / `test_avg` from its results.
- SpuCo runs through its own trainer classes (spuco.robust_train, spuco.group_inference,
  spuco.last_layer_retrain) with a `SpuCoModel(nn.Identity(), D, C)` (so its `backbone`
  is the identity and its classifier the linear layer), seeded with `spuco.utils.set_seed`,
  and is scored by `spuco.evaluate.Evaluator` on the test split with the (y, a) groups.

SpuCo is run unmodified except for these run-time adaptations (spuco_adapted), none
of which changes what SpuCo computes on the Python (3.10) and scikit-learn (< 1.8) it
was written for:
- its DataLoaders get num_workers=0 and pin_memory=False (it asks for 4 worker processes
  on every epoch, which on a CPU costs more than the training). The main process draws
  the same random numbers either way (shuffling and the DataLoader's base seed are drawn
  there; the workers only index the tensors);
- DFR.train calls random.sample on a set, a TypeError since Python 3.11; it gets the
  Python 3.10 behaviour, a sample of tuple(set) from the same global random state;
- DFR and the Evaluator call LogisticRegression(penalty="l1", solver="liblinear"), which
  scikit-learn ≥ 1.8 deprecates (penalty) and refuses for three or more classes; they
  get the fit scikit-learn < 1.8 made (binary: the same model; multiclass: one-vs-rest
  binary L1 fits), see _LiblinearAsBefore;
- the Evaluator's progress bars are off.
"""

from __future__ import annotations

import contextlib
import functools
import math
import random
import shutil
import statistics
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from parity_features import FeatureSet, fingerprint, generate

SPUCO_VERSION = "2.0.3"
DEFAULT_SEEDS = 10  # per side and pair (× Pair.seed_factor); the issue asks for ≥ 5
TOLERANCE = 1.5  # WGA points: |mean ours − mean SpuCo| allowed without a documented cause

# SpuCo's reference fixed configuration (its example scripts' defaults), used on both sides
LR, MOMENTUM, WEIGHT_DECAY, BATCH_SIZE, EPOCHS = 1e-3, 0.9, 1e-4, 128, 40
COMMON = {"optimizer": "sgd", "lr": LR, "weight_decay": WEIGHT_DECAY,
          "batch_size": BATCH_SIZE, "epochs": EPOCHS}  # our momentum is 0.9 (TrainConfig)
GROUPDRO_ETA = 0.01  # SpuCo's GroupWeightedLoss default group_weight_lr (GroupDRO can't set it)
JTT_ID_EPOCHS = 5  # JTT's identification epochs T (SpuCo's examples: --infer_num_epochs)
JTT_LAMBDA_UP = 20  # JTT's up-sampling factor λ_up (an int: SpuCo repeats a list λ_up times)
DFR_RETRAINS = 20  # SpuCo's DFR n_lin_models default; our dfr's n_retrains default


# --------------------------------------------------------------------------------------
# the pairs
# --------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Pair:
    """One row of the table: our method with fixed parameters beside a SpuCo method.

    role "primary": held to TOLERANCE, unless DOCUMENTED traces its gap to a difference;
    "reproduces": the option setting that reproduces SpuCo's choice behind a documented
    gap, held to TOLERANCE; "variant": another of our choices, measured only. A pair
    whose option (or option value) our method lacks is skipped, with the reason.
    seed_factor: seeds × this for pairs whose results vary much between seeds (cheap ones).
    """

    key: str
    spuco: str  # key into SPUCO_METHODS
    method: str  # our method
    params: Callable[[FeatureSet], dict[str, Any]]
    role: str = "primary"
    note: str = ""
    trained: bool = True  # trained by SGD at COMMON's settings (DFR is not)
    seed_factor: int = 1

    @property
    def asserted(self) -> bool:
        return self.role in ("primary", "reproduces")

    def our_params(self, spec: FeatureSet) -> dict[str, Any]:
        return {**(COMMON if self.trained else {}), **self.params(spec)}

    def label(self, spec: FeatureSet) -> str:
        shown = ", ".join(f"{k}={_fmt(v)}" for k, v in self.params(spec).items())
        return f"`{self.method}`" + (f" ({shown})" if shown else "")


@dataclass(frozen=True)
class Documented:
    """A traced difference: why the pair's gap may exceed TOLERANCE, and the pair (one of
    our option settings) that reproduces SpuCo's choice."""

    reason: str
    reproduced_by: str


def _fmt(v: Any) -> str:
    return f"{v:g}" if isinstance(v, float) else str(v)


def _none(spec: FeatureSet) -> dict[str, Any]:
    return {}


def _const(**params: Any) -> Callable[[FeatureSet], dict[str, Any]]:
    return lambda spec: dict(params)


def upsample_epochs(spec: FeatureSet) -> int:
    """Epochs of n examples that make as many SGD steps as SpuCo's UpSampleERM's 40 epochs
    of G · max_g n_g examples (every group repeated up to the largest group's size)."""
    n, g, top = sum(spec.train), len(spec.train), max(spec.train)
    return round(EPOCHS * g * top / n)


def jtt_identifier(spec: FeatureSet) -> dict[str, Any]:
    """JTT's T and λ_up (stage 1's optimiser settings: JTT_ID_EXTRA)."""
    return {"id_epochs": JTT_ID_EPOCHS, "lambda_up": float(JTT_LAMBDA_UP)}


# stage 1 on stage 2's settings, as SpuCo's JTT example runs it; stated explicitly for
# every id_* option our jtt has, so the pair does not rest on our defaults
JTT_ID_EXTRA = {"id_head": "linear", "id_lr": LR, "id_optimizer": "sgd",
                "id_weight_decay": WEIGHT_DECAY, "id_batch_size": BATCH_SIZE}

PAIRS: tuple[Pair, ...] = (
    Pair("erm", "erm", "erm", _none),
    Pair("groupdro", "groupdro", "groupdro",
         _const(eta=GROUPDRO_ETA, adjustment=0.0, sampling="group")),
    Pair("jtt", "jtt", "jtt", lambda s: {**jtt_identifier(s), "upweight": "upsample"},
         seed_factor=2),
    Pair("upsample", "upsample", "reweight", _const(by="sampling")),
    Pair("downsample", "downsample", "subsample", _none, seed_factor=4),
    Pair("group-balanced-batches", "group_balance_batch", "reweight", _const(by="sampling")),
    Pair("dfr", "dfr", "dfr", _none, trained=False),
    # option settings that reproduce SpuCo's choice behind a documented gap
    Pair("upsample/duplicate", "upsample", "reweight", _const(by="upsample"),
         role="reproduces", note="UpSampleERM's duplication and epoch length"),
    Pair("upsample/steps", "upsample", "reweight",
         lambda s: {"by": "sampling", "epochs": upsample_epochs(s)}, role="reproduces",
         note="epochs × G·max n_g / n: UpSampleERM's number of SGD steps"),
    # variants: our other choices on the same comparison
    Pair("groupdro/uniform", "groupdro", "groupdro",
         _const(eta=GROUPDRO_ETA, adjustment=0.0), role="variant",
         note="our default batches (uniform, without replacement)"),
    Pair("jtt/weight", "jtt", "jtt", lambda s: {**jtt_identifier(s), "upweight": "weight"},
         role="variant", note="λ_up as a loss weight, n examples per epoch", seed_factor=2),
    Pair("upsample/loss", "upsample", "reweight", _none, role="variant",
         note="loss weights 1/n_g (our default)"),
    Pair("dfr/train-stats", "dfr_train_stats", "dfr", _none, role="variant", trained=False,
         note="SpuCo standardises with training statistics, as its quickstart scripts do"),
    Pair("dfr/unscaled", "dfr_unscaled", "dfr", _none, role="variant", trained=False,
         note="SpuCo's DFR default: no standardisation"),
)

# Pairs whose gap may exceed TOLERANCE, each traced to a concrete difference (see
# docs/parity.md, "Differences") and to the pair that reproduces SpuCo's choice.
DOCUMENTED: dict[str, Documented] = {
    "upsample": Documented(
        reason=(
            "UpSampleERM repeats every group up to the largest group's size, so its epoch "
            "is G·max_g n_g examples (spuco/robust_train/upsample_erm.py, "
            "UpSampleERM.__init__); ours samples group-balanced batches for an epoch of n "
            "examples: the same 40 epochs are G·max_g n_g / n times (2.5–2.9× here) as many "
            "SGD steps in SpuCo. reweight.by=upsample duplicates as UpSampleERM does"),
        reproduced_by="upsample/duplicate",
    ),
}


def pair_by_key(key: str) -> Pair:
    for p in PAIRS:
        if p.key == key:
            return p
    raise KeyError(key)


def missing_options(pair: Pair, spec: FeatureSet) -> list[str]:
    """The options (or option values) of `pair` our method does not have (yet)."""
    from bench.plugins import registry

    registry.load_plugins()
    space = registry.get_method(pair.method).search_space()
    missing = []
    for k, v in pair.our_params(spec).items():
        if k not in space:
            missing.append(f"{pair.method}.{k}")
        elif hasattr(space[k], "choices") and str(v) not in map(str, space[k].choices):
            missing.append(f"{pair.method}.{k}={v}")
    return missing


def jtt_extra_params(pair: Pair) -> dict[str, Any]:
    """The id_* options our jtt has beyond id_lr, set to stage 2's values."""
    if pair.method != "jtt":
        return {}
    from bench.plugins import registry

    registry.load_plugins()
    space = registry.get_method("jtt").search_space()
    return {k: v for k, v in JTT_ID_EXTRA.items() if k in space}


# --------------------------------------------------------------------------------------
# our side
# --------------------------------------------------------------------------------------
def run_ours(npz: Path, spec: FeatureSet, pair: Pair, seeds: int, workdir: Path) -> list[dict]:
    """One fresh `bench.run.runner.run` of our method at the pair's fixed parameters."""
    from bench.run.runner import RunConfig, run

    params = {**pair.our_params(spec), **jtt_extra_params(pair)}
    items = [f"{pair.method}.{k}={_fmt(v) if isinstance(v, float) else v}"
             for k, v in params.items()]
    workdir.mkdir(parents=True, exist_ok=True)
    out = Path(tempfile.mkdtemp(prefix=f"{spec.name}-{pair.key.replace('/', '-')}-",
                                dir=workdir))
    try:
        res = run(RunConfig(
            dataset="features", dataset_opts={"path": str(npz), "name": f"parity-{spec.name}"},
            methods=[pair.method], trials=0, seeds=seeds, params=items, out=out,
            runs_dir=out.parent, progress=False, head="linear", device="cpu",
        ))
    finally:
        shutil.rmtree(out, ignore_errors=True)
    rows = res.results.sort("seed").to_dicts()
    failed = [r for r in rows if r["status"] != "ok"]
    if failed:
        raise RuntimeError(f"ours {pair.method} on {spec.name}: {failed[0].get('reason')}")
    return [{"seed": int(r["seed"]), "test_wga": 100 * float(r["test_wga"]),
             "test_avg": 100 * float(r["test_avg"])} for r in rows]


# --------------------------------------------------------------------------------------
# SpuCo's side
# --------------------------------------------------------------------------------------
def _spuco_dataset_class() -> type:
    from torch.utils.data import Dataset

    class FeatureDataset(Dataset):
        """One split as SpuCo's trainers and Evaluator expect: items (x, y), and the
        attributes they read (labels, spurious, group_partition, group_weights)."""

        def __init__(self, x: np.ndarray, y: np.ndarray, a: np.ndarray) -> None:
            import torch

            self.x = torch.as_tensor(x, dtype=torch.float32)
            self.labels = [int(v) for v in y]
            self.spurious = [int(v) for v in a]
            self.num_classes = int(y.max()) + 1
            partition: dict[tuple[int, int], list[int]] = {}
            for i, key in enumerate(zip(self.labels, self.spurious, strict=True)):
                partition.setdefault(key, []).append(i)
            self.group_partition = dict(sorted(partition.items()))
            self.group_weights = {k: len(v) / len(y) for k, v in self.group_partition.items()}

        def __len__(self) -> int:
            return len(self.labels)

        def __getitem__(self, i: int):  # noqa: ANN204
            return self.x[i], self.labels[i]

    return FeatureDataset


class _Python310Random:
    """The `random` module as SpuCo's DFR sees it: `sample` also takes a set, as it did
    until Python 3.10 (it drew from tuple(population), the same global random state).
    SpuCo 2.0.3's DFR.train calls random.sample on a set, a TypeError since Python 3.11;
    the set holds 0 … n−1, whose tuple is in ascending order, as 3.10 saw it."""

    def __getattr__(self, name: str) -> Any:
        return getattr(random, name)

    @staticmethod
    def sample(population: Any, k: int, **kwargs: Any) -> list:
        if isinstance(population, (set, frozenset)):
            population = tuple(population)
        return random.sample(population, k, **kwargs)


def _sklearn_at_least(major: int, minor: int) -> bool:
    import sklearn

    return tuple(int(v) for v in sklearn.__version__.split(".")[:2]) >= (major, minor)


class _LiblinearAsBefore:
    """`LogisticRegression(penalty="l1", C=C, solver="liblinear", class_weight=...)` as
    SpuCo 2.0.3's DFR and Evaluator call it, behaving as scikit-learn < 1.8 did.

    Two things changed under SpuCo: scikit-learn 1.8 deprecated `penalty` (l1_ratio=1 is
    the same L1 fit; `penalty` goes in 1.10), and liblinear now refuses three or more
    classes, which it used to fit one-vs-rest (one binary L1 logistic regression per
    class against the rest; prediction = argmax of the per-class decision functions).
    Binary problems go to one LogisticRegression exactly as before; multiclass ones to
    one binary model per class, the one-vs-rest fit old liblinear made. SpuCo reads and
    sets coef_ / intercept_ and calls predict, which behave as before."""

    def __init__(self, penalty: str = "l2", C: float = 1.0, solver: str = "liblinear",  # noqa: N803
                 class_weight: Any = None, **kwargs: Any) -> None:
        if solver != "liblinear":
            raise ValueError(f"parity adapter: unexpected solver {solver!r}")
        self.penalty, self.C, self.class_weight, self.kwargs = penalty, C, class_weight, kwargs

    def _binary(self, class_weight: Any) -> Any:
        from sklearn.linear_model import LogisticRegression

        pen = {"l1": 1.0, "l2": 0.0}
        reg = ({"l1_ratio": pen[self.penalty]} if _sklearn_at_least(1, 8)
               else {"penalty": self.penalty})
        return LogisticRegression(C=self.C, solver="liblinear", class_weight=class_weight,
                                  **reg, **self.kwargs)

    def fit(self, x: np.ndarray, y: np.ndarray) -> _LiblinearAsBefore:
        self.classes_ = np.unique(y)
        if len(self.classes_) <= 2:
            model = self._binary(self.class_weight).fit(x, y)
            self.coef_, self.intercept_ = model.coef_, model.intercept_
            return self
        weights = set((self.class_weight or {}).values()) - {1}
        if weights:  # per-class weights would need translating to each binary problem
            raise NotImplementedError("parity adapter: non-uniform class_weight, multiclass")
        coefs, intercepts = [], []
        for c in self.classes_:
            model = self._binary(None).fit(x, (y == c).astype(int))
            coefs.append(model.coef_[0])
            intercepts.append(model.intercept_[0])
        self.coef_, self.intercept_ = np.vstack(coefs), np.asarray(intercepts)
        return self

    def decision_function(self, x: np.ndarray) -> np.ndarray:
        d = np.asarray(x) @ np.asarray(self.coef_).T + np.asarray(self.intercept_)
        return d[:, 0] if d.shape[1] == 1 else d

    def predict(self, x: np.ndarray) -> np.ndarray:
        d = self.decision_function(x)
        if d.ndim == 1:
            return self.classes_[(d > 0).astype(int)]
        return self.classes_[d.argmax(axis=1)]


@contextlib.contextmanager
def spuco_adapted() -> Iterator[None]:
    """SpuCo as this suite runs it: DataLoaders without worker processes or pinned memory,
    DFR's random.sample of a set as on Python 3.10, its liblinear logistic regression as
    on scikit-learn < 1.8 (see the module doc), and no progress bars."""
    import spuco.evaluate.evaluator as ev
    import spuco.last_layer_retrain.dfr as dfr
    import spuco.utils.misc as misc
    import spuco.utils.trainer as tr
    from torch.utils.data import DataLoader

    @functools.wraps(DataLoader)
    def in_process(*args: Any, **kwargs: Any) -> DataLoader:
        kwargs["num_workers"] = 0
        kwargs["pin_memory"] = False
        return DataLoader(*args, **kwargs)

    modules = (ev, dfr, misc, tr)
    saved = [m.DataLoader for m in modules]
    saved_random, saved_lr = dfr.random, (dfr.LogisticRegression, ev.LogisticRegression)
    saved_tqdm = ev.tqdm
    for m in modules:
        m.DataLoader = in_process
    ev.tqdm = lambda iterable, *args, **kwargs: iterable  # Evaluator's progress bars
    dfr.random = _Python310Random()
    dfr.LogisticRegression = ev.LogisticRegression = _LiblinearAsBefore
    try:
        yield
    finally:
        for m, original in zip(modules, saved, strict=True):
            m.DataLoader = original
        dfr.random = saved_random
        dfr.LogisticRegression, ev.LogisticRegression = saved_lr
        ev.tqdm = saved_tqdm


def _spuco_erm(model, train, opt, **_: Any) -> Any:  # noqa: ANN001
    from spuco.robust_train import ERM

    return ERM(model=model, trainset=train, batch_size=BATCH_SIZE, optimizer=opt,
               num_epochs=EPOCHS)


def _spuco_groupdro(model, train, opt, **_: Any) -> Any:  # noqa: ANN001
    from spuco.datasets import GroupLabeledDatasetWrapper
    from spuco.robust_train import GroupDRO

    labeled = GroupLabeledDatasetWrapper(train, train.group_partition)
    return GroupDRO(model=model, trainset=labeled, batch_size=BATCH_SIZE, optimizer=opt,
                    num_epochs=EPOCHS)


def _spuco_upsample(model, train, opt, **_: Any) -> Any:  # noqa: ANN001
    from spuco.robust_train import UpSampleERM

    return UpSampleERM(model=model, trainset=train, batch_size=BATCH_SIZE, optimizer=opt,
                       num_epochs=EPOCHS, group_partition=train.group_partition)


def _spuco_downsample(model, train, opt, **_: Any) -> Any:  # noqa: ANN001
    from spuco.robust_train import DownSampleERM

    return DownSampleERM(model=model, trainset=train, batch_size=BATCH_SIZE, optimizer=opt,
                         num_epochs=EPOCHS, group_partition=train.group_partition)


def _spuco_group_balance_batch(model, train, opt, **_: Any) -> Any:  # noqa: ANN001
    from spuco.robust_train import GroupBalanceBatchERM

    return GroupBalanceBatchERM(model=model, trainset=train, group_partition=train.group_partition,
                                batch_size=BATCH_SIZE, optimizer=opt, num_epochs=EPOCHS)


def _spuco_jtt(model, train, opt, new_model, new_opt, info, **_: Any) -> Any:  # noqa: ANN001
    """SpuCo's JTT as its quickstart scripts run it (quickstart/waterbirds/waterbirds_jtt.py
    and siblings): a Trainer with stage 2's optimiser settings for T epochs, the error set
    from JTTInference on its training-set predictions, then CustomSampleERM over
    correct + λ_up × error indices. Stage 2 starts from a fresh model, as in the paper and
    in ours (revisions of the scripts differ: some go on training the stage-1 model)."""
    import torch
    from spuco.group_inference import JTTInference
    from spuco.robust_train import CustomSampleERM
    from spuco.utils import Trainer

    stage1 = Trainer(trainset=train, model=model, batch_size=BATCH_SIZE, optimizer=opt)
    stage1.train(num_epochs=JTT_ID_EPOCHS)
    predictions = torch.argmax(stage1.get_trainset_outputs(), dim=-1).tolist()
    partition = JTTInference(predictions=predictions, class_labels=train.labels).infer_groups()
    errors = partition[(0, 1)]
    info["error_set"] = len(errors)
    info["error_minority"] = _minority_share(train, errors)
    indices = list(partition[(0, 0)]) + list(errors) * JTT_LAMBDA_UP
    fresh = new_model()
    return CustomSampleERM(model=fresh, trainset=train, batch_size=BATCH_SIZE,
                           optimizer=new_opt(fresh), num_epochs=EPOCHS, indices=indices)


def _minority_share(train: Any, indices: list[int]) -> float:
    """Share of `indices` in groups with a ≠ y (the minority groups of these sets)."""
    if not indices:
        return float("nan")
    return sum(train.labels[i] != train.spurious[i] for i in indices) / len(indices)


SPUCO_METHODS: dict[str, tuple[str, Callable[..., Any] | None]] = {
    "erm": ("ERM", _spuco_erm),
    "groupdro": ("GroupDRO", _spuco_groupdro),
    "jtt": ("JTT: Trainer + JTTInference + CustomSampleERM", _spuco_jtt),
    "upsample": ("UpSampleERM", _spuco_upsample),
    "downsample": ("DownSampleERM", _spuco_downsample),
    "group_balance_batch": ("GroupBalanceBatchERM", _spuco_group_balance_batch),
    "dfr": ("DFR, data_for_scaler=val", None),
    "dfr_train_stats": ("DFR, data_for_scaler=train", None),
    "dfr_unscaled": ("DFR (default: no scaler)", None),
}


def split_arrays(arrays: dict[str, np.ndarray]) -> list[tuple[np.ndarray, ...]]:
    out = []
    for s in (0, 1, 2):
        m = arrays["split"] == s
        out.append((arrays["x"][m], arrays["y"][m], arrays["a"][m]))
    return out


def run_spuco(arrays: dict[str, np.ndarray], method: str, seeds: int,
              start: int = 0) -> list[dict]:
    """SpuCo's `method` on the arrays, seeds start … seeds−1, scored by its Evaluator."""
    import torch
    from spuco.evaluate import Evaluator
    from spuco.models import SpuCoModel
    from spuco.utils import set_seed

    dataset = _spuco_dataset_class()
    train, val, test = (dataset(*s) for s in split_arrays(arrays))
    dim, n_classes = train.x.shape[1], max(train.num_classes, test.num_classes)

    def new_model() -> Any:
        return SpuCoModel(backbone=torch.nn.Identity(), representation_dim=dim,
                          num_classes=n_classes)

    def new_opt(model: Any) -> Any:
        return torch.optim.SGD(model.parameters(), lr=LR, momentum=MOMENTUM,
                               weight_decay=WEIGHT_DECAY)

    rows = []
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # thin batches: one thread is fastest, and the box is shared
    try:
        with spuco_adapted():
            for seed in range(start, seeds):
                set_seed(seed)
                info: dict[str, Any] = {}
                model = new_model()
                sklearn_model = None
                if method.startswith("dfr"):
                    scaler = {"dfr": val, "dfr_train_stats": train, "dfr_unscaled": None}
                    sklearn_model = _spuco_dfr(model, val, scaler[method])
                    info["C"] = sklearn_model[0]
                else:
                    _, build = SPUCO_METHODS[method]
                    algo = build(model=model, train=train, opt=new_opt(model),
                                 new_model=new_model, new_opt=new_opt, info=info)
                    algo.train()
                    model = algo.trainer.model
                evaluator = Evaluator(
                    testset=test, group_partition=test.group_partition,
                    group_weights=test.group_weights, batch_size=256, model=model,
                    sklearn_linear_model=sklearn_model,
                )
                evaluator.evaluate()
                rows.append({"seed": seed, "test_wga": float(evaluator.worst_group_accuracy[1]),
                             "test_avg": float(evaluator.average_accuracy), **info})
    finally:
        torch.set_num_threads(threads)
    return rows


def _spuco_dfr(model: Any, val: Any, scaler_data: Any) -> tuple:
    """SpuCo's DFR on the validation split (its group labels). scaler_data: the split whose
    statistics standardise the features (val: as our dfr does; train: as SpuCo's
    quickstart scripts and the DFR paper's code do; None: SpuCo's default, no scaling)."""
    from spuco.datasets import GroupLabeledDatasetWrapper
    from spuco.last_layer_retrain import DFR

    dfr = DFR(group_labeled_set=GroupLabeledDatasetWrapper(val, val.group_partition),
              model=model, n_lin_models=DFR_RETRAINS, data_for_scaler=scaler_data)
    dfr.train()
    return dfr.linear_model


# --------------------------------------------------------------------------------------
# comparison and table
# --------------------------------------------------------------------------------------
@dataclass
class Side:
    rows: list[dict]
    seconds: float

    def values(self, key: str = "test_wga") -> list[float]:
        return [r[key] for r in self.rows]

    def mean(self, key: str = "test_wga") -> float:
        return statistics.fmean(self.values(key))

    def std(self, key: str = "test_wga") -> float:
        v = self.values(key)
        return statistics.stdev(v) if len(v) > 1 else 0.0


@dataclass
class Outcome:
    set_name: str
    pair: str
    ours: Side | None = None
    spuco: Side | None = None
    skipped: str = ""
    error: str = ""

    @property
    def gap(self) -> float:
        """mean ours − mean SpuCo, WGA points."""
        return self.ours.mean() - self.spuco.mean()

    @property
    def gap_se(self) -> float:
        """Standard error of the gap (independent seeds on each side)."""
        a, b = self.ours.values(), self.spuco.values()
        return math.sqrt(self.ours.std() ** 2 / len(a) + self.spuco.std() ** 2 / len(b))

    def verdict(self) -> str:
        if self.skipped:
            return f"skipped: {self.skipped}"
        if self.error:
            return f"error: {self.error}"
        pair = pair_by_key(self.pair)
        within = abs(self.gap) <= TOLERANCE
        if pair.role == "variant":
            return "variant"
        if within:
            return "ok" if pair.role == "primary" else "ok (reproduces SpuCo)"
        if pair.role == "primary" and self.pair in DOCUMENTED:
            return f"documented (→ {DOCUMENTED[self.pair].reproduced_by})"
        return "FAIL"


class Suite:
    """Runs pairs lazily, sharing SpuCo's results between pairs with the same SpuCo method."""

    def __init__(self, data_dir: Path, work_dir: Path, seeds: int) -> None:
        self.data_dir = data_dir
        self.work_dir = work_dir
        self.seeds = seeds
        self._arrays: dict[str, dict[str, np.ndarray]] = {}
        self._paths: dict[str, Path] = {}
        self._spuco: dict[tuple[str, str], Side] = {}
        self.outcomes: dict[tuple[str, str], Outcome] = {}

    def arrays(self, spec: FeatureSet) -> dict[str, np.ndarray]:
        if spec.name not in self._arrays:
            arrays = generate(spec)
            self.data_dir.mkdir(parents=True, exist_ok=True)
            path = self.data_dir / f"{spec.name}-{fingerprint(arrays)}.npz"
            if not path.exists():
                np.savez(path, **arrays)
            self._arrays[spec.name], self._paths[spec.name] = arrays, path
        return self._arrays[spec.name]

    def seeds_for(self, pair: Pair) -> int:
        return self.seeds * pair.seed_factor

    def spuco_side(self, spec: FeatureSet, method: str, seeds: int) -> Side:
        """SpuCo's seeds 0 … seeds−1, computed once, extended when a pair needs more."""
        key = (spec.name, method)
        have = self._spuco.get(key)
        if have is None or len(have.rows) < seeds:
            start = 0 if have is None else len(have.rows)
            t = time.perf_counter()
            rows = run_spuco(self.arrays(spec), method, seeds, start=start)
            spent = time.perf_counter() - t
            self._spuco[key] = (Side(rows, spent) if have is None
                                else Side(have.rows + rows, have.seconds + spent))
        side = self._spuco[key]
        return Side(side.rows[:seeds], side.seconds)

    def fingerprints(self) -> dict[str, str]:
        return {name: fingerprint(a) for name, a in self._arrays.items()}

    def seconds(self) -> dict[str, float]:
        """Time spent training and scoring, per side."""
        return {"ours": sum(o.ours.seconds for o in self.outcomes.values() if o.ours),
                "spuco": sum(side.seconds for side in self._spuco.values())}

    def compare(self, spec: FeatureSet, pair: Pair) -> Outcome:
        key = (spec.name, pair.key)
        if key in self.outcomes:
            return self.outcomes[key]
        out = Outcome(spec.name, pair.key)
        self.outcomes[key] = out
        missing = missing_options(pair, spec)
        if missing:
            out.skipped = f"our {', '.join(missing)} does not exist (yet)"
            return out
        seeds = self.seeds_for(pair)
        try:
            self.arrays(spec)
            t = time.perf_counter()
            ours = run_ours(self._paths[spec.name], spec, pair, seeds, self.work_dir)
            out.ours = Side(ours, time.perf_counter() - t)
            out.spuco = self.spuco_side(spec, pair.spuco, seeds)
        except Exception as exc:  # recorded in the table, re-raised by the test
            out.error = f"{type(exc).__name__}: {exc}"
            raise
        return out


def _cell(side: Side | None, key: str = "test_wga") -> str:
    if side is None:
        return "–"
    return f"{side.mean(key):.1f} ± {side.std(key):.1f}"


def render_table(outcomes: list[Outcome], sets: list[FeatureSet]) -> str:
    """The markdown table of measured outcomes (WGA and average accuracy, in %)."""
    lines = [
        "Test worst-group accuracy (WGA) and average accuracy in %, mean ± std over the "
        "seeds of each side (column n: seeds per side); gap = mean ours − mean SpuCo in WGA "
        f"points, ± its standard error; tolerance ±{TOLERANCE:g}.",
        "",
        "| set | ours | SpuCo 2.0.3 | n | ours WGA | SpuCo WGA | gap | ours avg | SpuCo avg "
        "| verdict |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    by_set = {s.name: s for s in sets}
    for o in outcomes:
        spec = by_set[o.set_name]
        pair = pair_by_key(o.pair)
        spuco_name = SPUCO_METHODS[pair.spuco][0]
        label = pair.label(spec)
        if pair.note:
            label += f" — *{pair.note}*"
        if o.ours is not None and o.spuco is not None:
            gap = f"{o.gap:+.1f} ± {o.gap_se:.1f}"
        else:
            gap = "–"
        n = "–" if o.ours is None else str(len(o.ours.rows))
        lines.append(
            f"| {o.set_name} | {label} | {spuco_name} | {n} | {_cell(o.ours)} "
            f"| {_cell(o.spuco)} | {gap} | {_cell(o.ours, 'test_avg')} "
            f"| {_cell(o.spuco, 'test_avg')} | {o.verdict()} |"
        )
    return "\n".join(lines) + "\n"


def as_json(outcomes: list[Outcome]) -> list[dict]:
    out = []
    for o in outcomes:
        out.append({
            "set": o.set_name, "pair": o.pair, "verdict": o.verdict(),
            "skipped": o.skipped, "error": o.error,
            "ours": None if o.ours is None else {"rows": o.ours.rows, "seconds": o.ours.seconds},
            "spuco": None if o.spuco is None else {"rows": o.spuco.rows,
                                                   "seconds": o.spuco.seconds},
        })
    return out


def from_json(items: list[dict]) -> list[Outcome]:
    out = []
    for it in items:
        o = Outcome(it["set"], it["pair"], skipped=it["skipped"], error=it["error"])
        if it["ours"] is not None:
            o.ours = Side(it["ours"]["rows"], it["ours"]["seconds"])
        if it["spuco"] is not None:
            o.spuco = Side(it["spuco"]["rows"], it["spuco"]["seconds"])
        out.append(o)
    return out


def ordered(outcomes: list[Outcome], sets: list[FeatureSet]) -> list[Outcome]:
    """Outcomes in the order of `sets`, then of PAIRS."""
    set_rank = {s.name: i for i, s in enumerate(sets)}
    pair_rank = {p.key: i for i, p in enumerate(PAIRS)}
    keep = [o for o in outcomes if o.set_name in set_rank]
    return sorted(keep, key=lambda o: (set_rank[o.set_name], pair_rank[o.pair]))


def render_results(outcomes: list[Outcome], sets: list[FeatureSet],
                   fingerprints: dict[str, str], seconds: dict[str, float]) -> str:
    """The sets, the table, what SpuCo's JTT and DFR chose, and the time taken."""
    outcomes = ordered(outcomes, sets)
    lines = ["Feature sets (tests/parity/parity_features.py):", ""]
    for spec in sets:
        fp = fingerprints.get(spec.name, "not generated")
        lines.append(f"- `{spec.name}`: {spec.description}; fingerprint `{fp}`")
    lines += ["", render_table(outcomes, sets)]
    notes = []
    for o in outcomes:
        rows = [] if o.spuco is None else o.spuco.rows
        if o.pair == "jtt" and rows and "error_set" in rows[0]:
            notes.append(
                f"- {o.set_name}, SpuCo JTT: error set of "
                f"{statistics.fmean(r['error_set'] for r in rows):.0f} examples on average, "
                f"{100 * statistics.fmean(r['error_minority'] for r in rows):.0f}% of them in "
                "minority groups (a ≠ y)")
        if o.pair == "dfr" and rows and "C" in rows[0]:
            notes.append(f"- {o.set_name}, SpuCo DFR: C chosen per seed "
                         f"{', '.join(_fmt(r['C']) for r in rows)}")
    if seconds:
        notes.append(f"- training time: ours {seconds.get('ours', 0):.0f} s, SpuCo "
                     f"{seconds.get('spuco', 0):.0f} s (2 shared CPU cores)")
    if notes:
        lines += notes + [""]
    return "\n".join(lines)


def write_results(suite: Suite, sets: list[FeatureSet], directory: Path) -> None:
    """parity.md and parity.json of a suite's outcomes under `directory`."""
    import json

    directory.mkdir(parents=True, exist_ok=True)
    outcomes = list(suite.outcomes.values())
    fps, secs = suite.fingerprints(), suite.seconds()
    (directory / "parity.md").write_text(render_results(outcomes, sets, fps, secs))
    data = {"seeds": suite.seeds, "fingerprints": fps, "seconds": secs,
            "spuco": SPUCO_VERSION, "outcomes": as_json(ordered(outcomes, sets))}
    (directory / "parity.json").write_text(json.dumps(data, indent=1))


BEGIN, END = "<!-- parity-table:begin -->", "<!-- parity-table:end -->"


def replace_table(doc: str, table: str) -> str:
    """`doc` with the text between the table markers replaced by `table`."""
    start, stop = doc.find(BEGIN), doc.find(END)
    if start < 0 or stop < start:
        raise ValueError(f"the document has no {BEGIN} … {END} block")
    return doc[: start + len(BEGIN)] + "\n" + table + doc[stop:]

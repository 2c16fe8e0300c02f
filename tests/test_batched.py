"""Batched training (bench.engine.batched) equals one-at-a-time training, and --parallel-trials.

Each batched configuration must give the head Trainer.fit gives it alone (same seed,
batches, loss and update), to floating-point tolerance: for linear and prompt heads, with
different lr, weight decay, optimizer, batch size and epochs per configuration, shared or
per-configuration loss weights, and shared or per-configuration batch order.
"""

from __future__ import annotations

import sys

import optuna
import polars as pl
import pytest
import torch
from conftest import bench_cli, default_params
from torch.nn import functional as F

import bench.engine.batched as batched
from bench.data.store import FeatureSplit
from bench.engine.heads import LinearHead, PromptHead
from bench.engine.one_head_cpu import COLUMN_REDUCE_CLASSES, BinaryLinearCpu, row_max, row_sum
from bench.engine.trainer import Hooks, NonFiniteLoss, TrainConfig, Trainer

CPU = torch.device("cpu")
N, D, C, E = 700, 12, 3, 6
CFGS = [  # differ in lr, weight decay, optimizer, batch size (aligned or not) and epochs
    TrainConfig(epochs=3, lr=1e-2, weight_decay=1e-4, batch_size=128),
    TrainConfig(epochs=2, lr=3e-2, weight_decay=1e-2, batch_size=256),
    TrainConfig(epochs=3, lr=1e-1, weight_decay=1e-3, batch_size=128, optimizer="sgd"),
    TrainConfig(epochs=4, lr=2e-3, weight_decay=0.0, batch_size=100),
]
TINY = ["--dataset-opt", "n_train=600", "--dataset-opt", "n_val=300", "--dataset-opt",
        "n_test=400", "--no-progress"]


@pytest.fixture(scope="module")
def split() -> FeatureSplit:
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(N, D, generator=gen)
    y = (x[:, 0] + 0.5 * torch.randn(N, generator=gen) > 0).long() + (x[:, 1] > 1).long()
    return FeatureSplit("train", x, y, y, y, torch.ones(1, N, dtype=torch.bool), C, C)


TEXT = torch.randn(C, E, generator=torch.Generator().manual_seed(1))
PROJ = 0.3 * torch.randn(E, D, generator=torch.Generator().manual_seed(2))


def make(kind: str, seed: int) -> tuple[torch.nn.Module, Trainer]:
    gen = torch.Generator().manual_seed(seed)
    head = LinearHead(D, C, gen) if kind == "linear" else PromptHead(TEXT, PROJ, D, 30.0)
    return head, Trainer(CPU, gen)


def sequential(kind, seeds, cfgs, data, weights=None):  # noqa: ANN001, ANN201
    """The reference: one Trainer.fit after another, through autograd and torch.optim."""
    heads = []
    for k, seed in enumerate(seeds):
        head, trainer = make(kind, seed)
        w = None if weights is None else (weights if weights.dim() == 1 else weights[k])
        trainer.fit(head, data, cfgs[k], Hooks(weights=w), engine="autograd")
        heads.append(head)
    return heads


def together(kind, seeds, cfgs, data, weights=None, **kw):  # noqa: ANN001, ANN201
    pairs = [make(kind, s) for s in seeds]
    return batched.fit_batched([h for h, _ in pairs], data, cfgs, [t for _, t in pairs],
                               weights, **kw)


def assert_same(a: list, b: list, atol: float) -> None:
    for h1, h2 in zip(a, b, strict=True):
        assert isinstance(h2, torch.nn.Module), h2
        for (name, p1), p2 in zip(h1.state_dict().items(), h2.state_dict().values(), strict=True):
            torch.testing.assert_close(p2, p1, atol=atol, rtol=0, msg=name)


@pytest.mark.parametrize("kind,atol", [("linear", 1e-5), ("prompt", 2e-5)])
@pytest.mark.parametrize("seeds", [[0, 0, 0, 0], [0, 1, 2, 3]], ids=["shared-order", "own-order"])
@pytest.mark.parametrize("weighting", ["none", "shared", "per-config"])
@pytest.mark.parametrize("workers,numpy_step", [(1, True), (2, True), (2, False)],
                         ids=["1-thread", "2-threads", "torch-step"])
def test_batched_equals_sequential(split, monkeypatch, kind, atol, seeds, weighting, workers,
                                   numpy_step):
    """Several gather spans per epoch; torch-step: the optimizer steps in torch, in
    pieces, instead of as NumPy calls (bench.engine.batched.NUMPY_STEP_MAX)."""
    monkeypatch.setattr(batched, "cpu_workers", lambda device: workers)
    monkeypatch.setattr(batched, "GATHER_BYTES", 150 * D * 4)  # several gather spans per epoch
    monkeypatch.setattr(batched, "PROMPT_GROUP", 3 * E)  # prompt heads in groups of 3 and 1
    if not numpy_step:
        monkeypatch.setattr(batched, "NUMPY_STEP_MAX", 0)
        monkeypatch.setattr(batched, "STEP_CHUNK", 50)  # the optimizer steps in several pieces
    gen = torch.Generator().manual_seed(3)
    weights = {"none": None, "shared": torch.rand(N, generator=gen),
               "per-config": torch.rand(4, N, generator=gen)}[weighting]
    want = sequential(kind, seeds, CFGS, split, weights)
    got = together(kind, seeds, CFGS, split, weights, block_rows=64)
    assert_same(want, got, atol)
    moved = max((p - q).abs().max() for p, q in zip(
        want[0].state_dict().values(), make(kind, seeds[0])[0].state_dict().values(), strict=True))
    assert moved > 100 * atol  # the comparison is not between two untrained heads


@pytest.mark.parametrize("kind,classes", [("linear", 2), ("linear", C), ("prompt", C)])
@pytest.mark.parametrize("workers", [1, 2])
def test_one_small_head_reads_rows_inline_or_from_spans_alike(split, monkeypatch, kind, classes,
                                                              workers):
    """One small head on the CPU (NumPy steps) reads each block's rows straight from the
    stored features (up to INLINE_GATHER_BYTES) or from gathered spans (beyond): the same
    rows in the same blocks, so the same numbers bit for bit, dropout masks included."""
    from bench.engine.heads import FeatureDropout

    monkeypatch.setattr(batched, "cpu_workers", lambda device: workers)
    monkeypatch.setattr(batched, "GATHER_BYTES", 150 * D * 4)  # several spans per epoch
    y = split.y if classes == C else (split.y > 0).long()
    data = FeatureSplit("train", split.x, y, y, y, split.eval_masks, classes, classes)
    gathers = []
    real_gathered = batched._gathered
    monkeypatch.setattr(batched, "_gathered",
                        lambda *a: gathers.append(a[1]) or real_gathered(*a))
    fits = []
    for inline_max in (1 << 40, 0):
        monkeypatch.setattr(batched, "INLINE_GATHER_BYTES", inline_max)
        gen = torch.Generator().manual_seed(4)
        head = (LinearHead(D, classes, gen) if kind == "linear"
                else PromptHead(TEXT, PROJ, D, 30.0))
        drop = FeatureDropout(0.25, torch.Generator().manual_seed(5))
        fits.append(batched.fit_batched([head], data, CFGS[3:], [Trainer(CPU, gen)],
                                        torch.rand(N, generator=gen), dropouts=[drop],
                                        block_rows=64))
    assert gathers and len(gathers) == CFGS[3].epochs  # spans only when not inline
    assert_same(fits[0], fits[1], 0.0)
    start = LinearHead(D, classes, torch.Generator().manual_seed(4)) if kind == "linear" \
        else PromptHead(TEXT, PROJ, D, 30.0)
    assert not torch.equal(next(iter(fits[0][0].state_dict().values())),
                           next(iter(start.state_dict().values())))


def test_full_batch_streams_rows_in_storage_order(split):
    cfgs = [TrainConfig(epochs=5, lr=lr, batch_size=N) for lr in (1e-2, 5e-2)]
    want = sequential("linear", [0, 1], cfgs, split)
    assert_same(want, together("linear", [0, 1], cfgs, split), 1e-5)


@pytest.mark.parametrize("kind,atol", [("linear", 1e-5), ("prompt", 2e-5)])
@pytest.mark.parametrize("workers", [1, 2, 3])
def test_full_batch_split_among_cpu_workers_equals_sequential(split, monkeypatch, kind, atol,
                                                              workers):
    """Full-batch epochs sum partial gradients from several CPU workers (any count, even
    more than this machine has cores); weighted, two stacks (AdamW and SGD)."""
    monkeypatch.setattr(batched, "cpu_workers", lambda device: workers)
    seen = []
    original = batched.parallel_map

    def spy(fn, chunks):  # noqa: ANN001, ANN202
        seen.append(len(chunks))
        return original(fn, chunks)

    monkeypatch.setattr(batched, "parallel_map", spy)
    cfgs = [TrainConfig(epochs=4, lr=3e-2, weight_decay=1e-3, batch_size=N),
            TrainConfig(epochs=3, lr=1e-1, batch_size=N, optimizer="sgd", momentum=0.9)]
    w = torch.rand(N, generator=torch.Generator().manual_seed(4)) + 0.5
    want = sequential(kind, [0, 1], cfgs, split, w)
    assert_same(want, together(kind, [0, 1], cfgs, split, w, block_rows=64), atol)
    assert seen == ([] if workers == 1 else [workers] * 4)  # one split pass per epoch


def test_full_batch_workers_are_capped_by_partial_gradient_memory(split, monkeypatch):
    monkeypatch.setattr(batched, "cpu_workers", lambda device: 8)
    grad_bytes = 2 * (C * D + C) * 4  # two linear heads' flat gradient, float32
    monkeypatch.setattr(batched, "PARTIAL_BYTES", 3 * grad_bytes)
    seen = []
    original = batched.parallel_map
    monkeypatch.setattr(batched, "parallel_map",
                        lambda fn, chunks: seen.append(len(chunks)) or original(fn, chunks))
    cfgs = [TrainConfig(epochs=2, lr=lr, batch_size=N) for lr in (1e-2, 5e-2)]
    want = sequential("linear", [0, 1], cfgs, split)
    assert_same(want, together("linear", [0, 1], cfgs, split, block_rows=64), 1e-5)
    assert seen == [3, 3]  # 8 cores, memory for 3 partial gradients


@pytest.mark.parametrize("kind", ["linear", "prompt"])
def test_block_gradient_equals_autograd(split, kind):
    """The analytic gradient of Σ scale_i·CE_i (one block) against autograd's."""
    heads = [make(kind, s)[0] for s in (0, 1)]
    knd = batched._kind_of(heads)
    stack = batched._Stack(knd, [0, 1], heads, [TrainConfig()] * 2, 64, CPU)
    idx = torch.arange(50, 114)
    xb, scale = split.x[idx], torch.rand(2, 64, generator=torch.Generator().manual_seed(5))
    oh = F.one_hot(split.y[idx], C).float()
    knd.grad(stack.p, 2, xb, oh, scale.t().unsqueeze(-1), stack.g, False, True)
    for k, head in enumerate(heads):
        params = [p for p in head.parameters() if p.requires_grad]
        ce = F.cross_entropy(head(xb), split.y[idx], reduction="none")
        want = torch.autograd.grad((scale[k] * ce).sum(), params)
        got = stack.rows(stack.grad, k)
        for w, g in zip(want, got, strict=True):
            torch.testing.assert_close(g, w.reshape(-1), atol=1e-5, rtol=1e-4)


def test_a_diverging_configuration_fails_alone(split):
    cfgs = [TrainConfig(epochs=3, lr=1e-2), TrainConfig(epochs=3, lr=1e30, optimizer="sgd")]
    got = together("linear", [0, 0], cfgs, split)
    assert isinstance(got[1], NonFiniteLoss)
    assert_same(sequential("linear", [0], cfgs, split), got[:1], 1e-5)


def test_reporters_see_every_epoch_and_a_raise_stops_only_that_configuration(split):
    seen: dict[int, list[int]] = {0: [], 1: []}
    pairs = [make("linear", 0) for _ in range(2)]
    for k, (_, trainer) in enumerate(pairs):
        def report(epoch, head, k=k):  # noqa: ANN001
            seen[k].append(epoch)
            if k == 1 and epoch == 1:
                raise optuna.TrialPruned("pruned at epoch 1")
        trainer.reporter = report
    cfgs = [TrainConfig(epochs=4), TrainConfig(epochs=4)]
    got = batched.fit_batched([h for h, _ in pairs], split, cfgs, [t for _, t in pairs])
    assert seen == {0: [0, 1, 2, 3], 1: [0, 1]}
    assert isinstance(got[1], optuna.TrialPruned)
    assert_same(sequential("linear", [0], cfgs, split), got[:1], 1e-5)


def test_methods_fit_batched_equals_fit(tmp_path):
    """erm, reweight and jtt through the harness's contexts (two seeds, two learning rates;
    jtt's second configuration up-samples its error set instead of weighting it, and
    reweight's samples group-balanced batches instead of weighting losses)."""
    from bench.run.runner import Run, RunConfig

    run = Run(RunConfig(methods=["erm", "reweight", "jtt"], runs_dir=tmp_path, progress=False,
                        dataset_opts={"n_train": "600", "n_val": "300", "n_test": "400"}))
    for name, entry in run.entries.items():
        train, val = run.lent_splits(entry)
        base = {k: p.default for k, p in entry.search_space().items()}
        other = {"jtt": {"upweight": "upsample", "lambda_up": 5.0},
                 "reweight": {"by": "sampling"}}.get(name, {})
        configs = [({**base, "lr": 3e-2, "epochs": 4}, 0),
                   ({**base, "lr": 1e-3, "epochs": 6, **other}, 1)]
        one = [entry.create().fit(train, val, run.context(entry, p, s)) for p, s in configs]
        ctxs = [run.context(entry, p, s) for p, s in configs]
        many = entry.create().fit_batched(train, val, ctxs)
        for a, b in zip(one, many, strict=True):
            torch.testing.assert_close(b.logits(val.x), a.logits(val.x), atol=1e-4, rtol=1e-4)


def test_batched_final_seeds_equal_one_at_a_time(tmp_path):
    from bench.run.fitting import batches
    from bench.run.runner import Run, RunConfig

    run = Run(RunConfig(methods=["reweight"], runs_dir=tmp_path, progress=False,
                        dataset_opts={"n_train": "600", "n_val": "300", "n_test": "400"}))
    entry, val = run.entries["reweight"], run.store.splits["val"]
    params = {k: p.default for k, p in entry.search_space().items()}
    one = [run.fit(entry, params, seed) for seed in (0, 1, 2)]
    assert batches(entry)
    calls = []
    real = type(entry.create()).fit_batched

    def spy(self, train, val, ctxs):  # noqa: ANN001, ANN202
        calls.append(len(ctxs))
        return real(self, train, val, ctxs)

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(type(entry.create()), "fit_batched", spy)
        many = [f.predictor() for f in run.fitter.fit_many(entry, [params] * 3, [0, 1, 2])]
    assert calls == [3]  # one computation for the three seeds
    tol = 1e-5 * run.store.logit_scale  # 20 epochs of rounding, seen through the scale s
    for a, b in zip(one, many, strict=True):
        assert a is not b
        torch.testing.assert_close(b.logits(val.x), a.logits(val.x), atol=tol, rtol=1e-4)


def test_parallel_trials_completes_the_trial_budget(tmp_path):
    r = bench_cli("run", "--methods", "erm", "--trials", "5", "--seeds", "2",
                  "--parallel-trials", "4", "--out", str(tmp_path / "par"), *TINY)
    assert r.returncode == 0, r.stderr
    storage = f"sqlite:///{tmp_path / 'par' / 'optuna.db'}"
    (name,) = [n for n in optuna.get_all_study_names(storage) if "|erm|" in n]
    trials = optuna.load_study(study_name=name, storage=storage).trials
    assert len(trials) == 5  # a round of 4, then a round of 1: no more, no fewer
    assert {t.state for t in trials} <= {optuna.trial.TrialState.COMPLETE,
                                         optuna.trial.TrialState.PRUNED}
    table = pl.read_parquet(tmp_path / "par" / "results.parquet")
    assert table.height == 2 and set(table["status"]) == {"ok"} and set(table["trials"]) == {5}
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri=f"sqlite:///{tmp_path / 'par' / 'mlflow.db'}")
    (exp,) = [e for e in client.search_experiments() if e.name == "spurbench/synthetic"]
    runs = client.search_runs([exp.experiment_id], "tags.`spurbench.kind` = 'trial'")
    assert len(runs) == 5
    # every trial's per-epoch scores reach MLflow once per step (a pruned trial may stop
    # after its first report, so look at all of them)
    histories = [client.get_metric_history(r.info.run_id, "epoch_val_wga") for r in runs]
    assert all(h and len({m.step for m in h}) == len(h) for h in histories)
    assert max(len(h) for h in histories) > 1


def test_parallel_trials_must_be_positive(tmp_path):
    r = bench_cli("run", "--methods", "erm", "--parallel-trials", "0", "--runs-dir", str(tmp_path))
    assert r.returncode == 2 and "--parallel-trials" in r.stderr


@pytest.mark.parametrize("weighted", [False, True])
@pytest.mark.parametrize("batch_size,workers,path", [
    (128, 1, "add_block"),  # minibatches, the NumPy step (bench.engine.one_head_cpu)
    (N, 1, "add_block"),  # one full batch per epoch, blocks in storage order
    (N, 2, "_binary_run_grad"),  # one full batch, rows split among two CPU workers
])
def test_binary_single_head_fast_path_equals_sequential(split, monkeypatch, batch_size, workers,
                                                        path, weighted):
    """One binary linear head takes the logit-difference path (two matrix-vector products
    per block); it must still give exactly what Trainer.fit gives."""
    monkeypatch.setattr(batched, "cpu_workers", lambda device: workers)
    y2 = (split.x[:, 0] > 0).long()
    data = FeatureSplit("train", split.x, y2, y2, y2, split.eval_masks, 2, 2)
    w = torch.rand(N, generator=torch.Generator().manual_seed(3)) + 0.5 if weighted else None
    cfg = [TrainConfig(epochs=3, lr=3e-2, weight_decay=1e-3, batch_size=batch_size)]

    def pair() -> tuple[torch.nn.Module, Trainer]:
        gen = torch.Generator().manual_seed(5)
        return LinearHead(D, 2, gen), Trainer(CPU, gen)

    head, trainer = pair()
    trainer.fit(head, data, cfg[0], Hooks(weights=w), engine="autograd")
    h2, t2 = pair()
    calls = []
    owner = BinaryLinearCpu if path == "add_block" else batched._Linear
    original = getattr(owner, path)

    def spy(self, *args, **kwargs):  # noqa: ANN001, ANN002, ANN003, ANN202
        calls.append(1)
        return original(self, *args, **kwargs)

    monkeypatch.setattr(owner, path, spy)
    (got,) = batched.fit_batched([h2], data, cfg, [t2], w, block_rows=64)
    assert calls, f"the binary fast path ({path}) was not taken"
    assert_same([head], [got], 1e-5)


class Probe(LinearHead):
    """A head subclass: its forward may differ, so it must train through autograd."""


@pytest.mark.parametrize("kind", ["linear", "prompt"])
def test_trainer_fit_routes_plain_heads_through_the_analytic_path(split, monkeypatch, kind):
    calls = []
    original = batched.fit_batched
    monkeypatch.setattr(batched, "fit_batched",
                        lambda *a, **kw: calls.append(1) or original(*a, **kw))
    w = torch.rand(N, generator=torch.Generator().manual_seed(6)) + 0.5
    cfg = TrainConfig(epochs=3, lr=2e-2, batch_size=128)
    (want,) = sequential(kind, [4], [cfg], split, w)
    head, trainer = make(kind, 4)
    got = trainer.fit(head, split, cfg, Hooks(weights=w))
    assert calls == [1] and got is head and not head.training
    assert_same([want], [got], 2e-5)
    # a before_epoch hook stays on the analytic path; a loss hook or a head subclass
    # take the autograd one
    head, trainer = make(kind, 4)
    trainer.fit(head, split, cfg, Hooks(before_epoch=lambda e, h: None))
    assert calls == [1, 1]
    head, trainer = make(kind, 4)
    trainer.fit(head, split, cfg, Hooks(loss=lambda z, y, idx: F.cross_entropy(z, y)))
    gen = torch.Generator().manual_seed(4)
    Trainer(CPU, gen).fit(Probe(D, C, gen), split, cfg)
    assert calls == [1, 1]


def test_trainer_fit_raises_what_the_analytic_path_returns(split):
    head, trainer = make("linear", 0)
    with pytest.raises(NonFiniteLoss):
        trainer.fit(head, split, TrainConfig(epochs=2, lr=1e30, optimizer="sgd"))

    def prune(epoch, head):  # noqa: ANN001, ANN202
        raise optuna.TrialPruned(f"pruned at epoch {epoch}")

    head, trainer = make("linear", 0)
    trainer.reporter = prune
    with pytest.raises(optuna.TrialPruned):
        trainer.fit(head, split, TrainConfig(epochs=2))
    head, trainer = make("linear", 0)
    trainer.reporter = prune
    trainer.fit(head, split, TrainConfig(epochs=2), report=False)  # auxiliary stage: silent
    with pytest.raises(ValueError, match="engine"):
        trainer.fit(head, split, TrainConfig(epochs=1), engine="fast")


@pytest.mark.parametrize("head", ["linear", "prompt"])
def test_groupdro_batch_rule_on_the_analytic_engine_equals_autograd(tmp_path, monkeypatch, head):
    """Group DRO's online q as a batch rule: the analytic engine (one configuration, and
    two at once) equals the autograd reference, uniform and group-balanced batches, mini
    and full batch (a weighted sampler's full batch is its draws, not every row once)."""
    run, entry, val = _small_run(tmp_path, "groupdro", head)
    calls = []
    original = batched.fit_batched
    monkeypatch.setattr(batched, "fit_batched",
                        lambda *a, **kw: calls.append(kw.get("rules")) or original(*a, **kw))
    orig_fit = Trainer.fit

    def reference(self, *a, **kw):  # noqa: ANN001, ANN202
        return orig_fit(self, *a, **{**kw, "engine": "autograd"})

    for sampling in ("uniform", "group"):
        for bs in (128, 4096):
            p = {**default_params(entry), "epochs": 3, "sampling": sampling, "batch_size": bs}
            fast = run.fit(entry, p, 0)
            assert calls and calls[-1] is not None  # it took the analytic engine
            with monkeypatch.context() as m:
                m.setattr(Trainer, "fit", reference)
                ref = run.fit(entry, p, 0)
            torch.testing.assert_close(fast.logits(val.x), ref.logits(val.x), atol=1e-4,
                                       rtol=1e-4)
            torch.testing.assert_close(fast.info["q"], ref.info["q"], atol=1e-5, rtol=1e-4)
    # two configurations in one computation, each equal to its own fit
    train, lent_val = run.lent_splits(entry)
    rule = sys.modules[entry.cls.__module__].GroupDRORule
    params = [{**default_params(entry), "epochs": 3, "lr": lr} for lr in (3e-2, 1e-2)]
    ctxs = [run.context(entry, p, s) for p, s in zip(params, (0, 1), strict=True)]
    rules = [rule(train.g, train.n_groups, p["eta"], 0.0) for p in params]
    heads = [c.make_head() for c in ctxs]
    many = batched.fit_batched(heads, train, [TrainConfig.from_params(p) for p in params],
                               [c.trainer for c in ctxs], rules=rules)
    for p, s, got, r in zip(params, (0, 1), many, rules, strict=True):
        want = run.fit(entry, p, s)
        torch.testing.assert_close(got.eval()(val.x), want.logits(val.x), atol=1e-4, rtol=1e-4)
        torch.testing.assert_close(r.q, want.info["q"], atol=1e-5, rtol=1e-4)


@pytest.mark.parametrize("head", ["linear", "prompt"])
def test_sfr_reweighting_and_dropout_on_the_analytic_engine_equal_autograd(tmp_path, monkeypatch,
                                                                          head):
    """SFR's per-epoch instance weights (a callback that replaces the loss weights) and
    its feature dropout (masks drawn per batch from the fit's own generator) on the
    analytic engine equal the autograd reference, at mini and full batch."""
    run, entry, val = _small_run(tmp_path, "sfr", head)
    seen = []
    original = batched.fit_batched
    monkeypatch.setattr(batched, "fit_batched", lambda *a, **kw: seen.append(
        (kw.get("callbacks"), kw.get("dropouts"))) or original(*a, **kw))
    orig_fit = Trainer.fit

    def reference(self, *a, **kw):  # noqa: ANN001, ANN202
        return orig_fit(self, *a, **{**kw, "engine": "autograd"})

    for bs in (128, 4096):
        p = {**default_params(entry), "epochs": 4, "warmup": 1, "batch_size": bs,
             "dropout": 0.3}
        fast = run.fit(entry, p, 0)
        callbacks, dropouts = seen[-1]
        assert callbacks and dropouts[0] is not None  # the analytic engine did both
        with monkeypatch.context() as m:
            m.setattr(Trainer, "fit", reference)
            ref = run.fit(entry, p, 0)
        # float32 summation order differs between the engines; prompt logits are 100·cos,
        # so their absolute error is ~100× a linear head's
        atol = 5e-4 if head == "prompt" else 1e-4
        torch.testing.assert_close(fast.logits(val.x), ref.logits(val.x), atol=atol, rtol=1e-4)
        torch.testing.assert_close(fast.info["weights"], ref.info["weights"], atol=1e-3,
                                   rtol=1e-4)
        assert fast.info["updates"] == ref.info["updates"] == [1, 2, 3]


def _small_run(tmp_path, method: str, head: str):  # noqa: ANN001, ANN202
    """A small synthetic run for one method's engine-equivalence test."""
    from bench.plugins import registry
    from bench.run.runner import Run, RunConfig

    run = Run(RunConfig(methods=[method], runs_dir=tmp_path, progress=False, head=head,
                        dataset_opts={"n_train": "900", "n_val": "300", "n_test": "300"}))
    return run, registry.get_method(method), run.store.splits["val"]


@pytest.mark.parametrize("method,params", [
    ("jtt", {"upweight": "upsample", "lambda_up": 4.0, "id_epochs": 2}),
    ("reweight", {"by": "upsample"}),
])
def test_upsampled_epochs_on_the_analytic_engine_equal_autograd(tmp_path, monkeypatch, method,
                                                                params):
    """Duplicated pools (epochs longer than n: JTT's and RWG's upsampling) train on the
    analytic engine and equal the autograd reference, at mini and full batch."""
    run, entry, val = _small_run(tmp_path, method, "linear")
    pools = []
    original = batched.fit_batched

    def spy(*a, **kw):  # noqa: ANN002, ANN003, ANN202
        samplers = a[5] if len(a) > 5 else kw.get("samplers")
        pools.extend(s for s in samplers or [] if s is not None and s.pool is not None)
        return original(*a, **kw)

    monkeypatch.setattr(batched, "fit_batched", spy)
    orig_fit = Trainer.fit

    def reference(self, *a, **kw):  # noqa: ANN001, ANN202
        return orig_fit(self, *a, **{**kw, "engine": "autograd"})

    for bs in (128, 100_000):
        p = {**default_params(entry), "epochs": 3, "batch_size": bs, **params}
        pools.clear()
        fast = run.fit(entry, p, 0)
        assert pools and pools[0].epoch_length > pools[0].n, (
            "the upsampled stage did not run on the analytic engine")
        with monkeypatch.context() as m:
            m.setattr(Trainer, "fit", reference)
            ref = run.fit(entry, p, 0)
        torch.testing.assert_close(fast.logits(val.x), ref.logits(val.x), atol=1e-4, rtol=1e-4)


def test_dropout_applied_in_one_go_equals_multiplying_by_its_factor():
    """The analytic engine's FeatureDropout.dropped draws the same masks as factor() (the
    reference's path) and gives the same values bit for bit, signs of zeros included."""
    from bench.engine.heads import FeatureDropout

    gen = torch.Generator().manual_seed(3)
    by_factor = FeatureDropout(0.3, gen)
    gen.manual_seed(3)
    in_one_go = FeatureDropout(0.3, gen)
    h = torch.randn(128, 40)
    for _ in range(3):  # successive batches: the two streams stay in step
        want, got = h * by_factor.factor(h.shape, h.device), in_one_go.dropped(h)
        assert torch.equal(got, want) and torch.equal(got.signbit(), want.signbit())
        assert 0.2 < (got == 0).float().mean() < 0.4


def test_span_gathers_use_every_thread_and_thin_steps_one():
    """A span's random-row gather runs on every intra-op thread (latency-bound reads, more
    in flight), the thin steps between gathers on one; the setting is restored after."""
    before = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        seen = []
        for _ in batched._gathered(lambda i: seen.append(torch.get_num_threads()), 3, True):
            seen.append(-torch.get_num_threads())
        assert seen == [2, -1, 2, -1, 2, -1]
        assert torch.get_num_threads() == 2
        assert [torch.get_num_threads() for _ in batched._gathered(lambda i: i, 2, False)] \
            == [2, 2]
    finally:
        torch.set_num_threads(before)


def test_a_linear_head_draws_only_from_its_own_generator():
    """Its weights are uniform in ±1/√D from the generator it is given, its bias 0, and
    the global torch stream (dropout's, other code's) is left where it was."""
    state = torch.get_rng_state()
    head = LinearHead(D, C, torch.Generator().manual_seed(11))
    assert torch.equal(torch.get_rng_state(), state)
    bound = 1.0 / D**0.5
    want = torch.rand(C, D, generator=torch.Generator().manual_seed(11)) * 2 * bound - bound
    assert torch.equal(head.linear.weight.detach(), want)
    assert torch.equal(head.linear.bias.detach(), torch.zeros(C))
    assert all(p.requires_grad and p.device.type == "cpu" for p in head.parameters())


@pytest.mark.parametrize("classes", range(1, COLUMN_REDUCE_CLASSES + 3))
def test_row_max_and_sum_are_numpys_bit_for_bit(classes):
    """The NumPy engine's column-by-column row max and sum give NumPy's own axis-1
    reductions exactly (so the faster softmax trains the same numbers), for ordinary
    values, ±0, infinities and NaN, at every class count (the wide ones fall back)."""
    import numpy as np

    rng = np.random.default_rng(classes)
    for rows in (1, 5, 128, 517):
        a = (rng.standard_normal((rows, classes)) * 30).astype(np.float32)
        special = np.array([0.0, -0.0, np.inf, -np.inf, np.nan, 1e-45], np.float32)
        a.flat[rng.integers(0, a.size, a.size // 7 + 1)] = rng.choice(special, a.size // 7 + 1)
        for x in (a, np.exp(np.minimum(a, 80))):
            assert np.array_equal(row_max(x).view(np.int32), x.max(1).view(np.int32))
            assert np.array_equal(row_sum(x).view(np.int32), x.sum(1).view(np.int32))

"""resample, logit-adjust, cvardro, focal, crt, afr: mechanisms, exact pieces, engines.

Mechanism tests follow tests/test_mechanisms.py: each method against itself with its own
mechanism removed — same data, same parameters otherwise, same seeds — on generated data
where the mechanism should matter, with a margin set from measured seed noise. Numbers
in the comments were measured with seeds 0-4 on a CPU: "std" is the standard deviation
over seeds of one arm's test metric, "paired" that of the per-seed difference.

Exactness tests: the focal rule's gradient identity against autograd of the focal loss,
the CVaR best-response weights, AFR's class-balanced weights, and the two engine
features these methods added (Hooks.logit_offset, Hooks.anchor): the analytic engine
against the autograd reference, several configurations at once, for linear and prompt
heads and the binary fast paths.
"""

from __future__ import annotations

import sys

import mechanism_data as md
import numpy as np
import pytest
import torch
from conftest import default_params
from torch.nn import functional as F

import bench.engine.batched as batched
from bench.data.store import FeatureSplit
from bench.engine.heads import LinearHead, PromptHead
from bench.engine.trainer import Hooks, TrainConfig, Trainer
from bench.plugins import registry
from bench.run.runner import Run, RunConfig

SEEDS = range(5)
CPU = torch.device("cpu")


# -- data and runs ---------------------------------------------------------------------
def class_imbalanced(dim: int = 16, seed: int = 0) -> dict[str, np.ndarray]:
    """Two classes 19:1 in train (and val), means ∓1 on the core axis, unit noise, the
    attribute a coin flip (no shortcut): ERM's boundary moves into the rare class
    (Bayes threshold log(19)/2 ≈ 1.47, rare-class accuracy Φ(−0.47) ≈ 32%), a balanced
    one sits at 0 (Φ(1) ≈ 84% for both). Test is balanced."""
    design = {(y, a): [(1.0, [(2 * y - 1) * 1.0])] for y in (0, 1) for a in (0, 1)}
    train = {(0, 0): 950, (0, 1): 950, (1, 0): 50, (1, 1): 50}
    val = {(0, 0): 240, (0, 1): 240, (1, 0): 13, (1, 1): 12}
    return md.mixture((design, design, design), (train, val, md.counts(500, 500)), dim, seed)


def separable_shortcut(dim: int = 16, seed: int = 0) -> dict[str, np.ndarray]:
    """A shortcut whose minority groups are the only high-loss examples: spurious margin
    4 (nearly no overlap), core margin 1.5, train 950/50/50/950. The shortcut data of
    mechanism_data (core margin 1) has many high-loss majority examples on the core's
    overlap, where a loss-ranking method (CVaR, focal) chases noise instead: there
    cvardro gained 0.02 WGA over α = 1 (not above seed noise)."""
    sizes = (md.counts(950, 50), md.counts(250, 250), md.counts(500, 500))
    return md.mixture((md.clean(1.5, 4.0),) * 3, sizes, dim, seed)


def make_run(data: dict[str, np.ndarray], tmp_path_factory, name: str) -> Run:
    out = tmp_path_factory.mktemp(f"zoo-{name}")
    path = md.save(data, out / f"{name}.npz")
    return Run(RunConfig(
        dataset="features", dataset_opts={"path": str(path)}, head="linear", trials=0,
        seeds=1, out=out / "run", runs_dir=out, progress=False, methods=None))


@pytest.fixture(scope="module")
def shortcut_run(tmp_path_factory) -> Run:
    return make_run(md.shortcut(), tmp_path_factory, "shortcut")


@pytest.fixture(scope="module")
def separable_run(tmp_path_factory) -> Run:
    return make_run(separable_shortcut(), tmp_path_factory, "separable")


@pytest.fixture(scope="module")
def imbalanced_run(tmp_path_factory) -> Run:
    return make_run(class_imbalanced(), tmp_path_factory, "imbalanced")


def module_of(name: str):  # noqa: ANN201
    registry.load_plugins([])  # the built-in plugins (a no-op once loaded)
    return sys.modules[registry.get_method(name).cls.__module__]


def params_of(name: str, **overrides) -> dict:
    return {**default_params(registry.get_method(name)), **overrides}


def fit_seeds(run: Run, name: str, params: dict, metric: str = "wga") -> tuple[list, np.ndarray]:
    """The fitted predictors and one test metric of each, one per seed."""
    entry = registry.get_method(name)
    preds = [run.fit(entry, params, seed) for seed in SEEDS]
    return preds, np.array([getattr(run.evaluate_splits(p)[1], metric) for p in preds])


def assert_beats(method: np.ndarray, ablation: np.ndarray, margin: float) -> None:
    gap = float(method.mean() - ablation.mean())
    assert gap >= margin, (
        f"mean {method.mean():.3f} vs ablation {ablation.mean():.3f}: gap {gap:+.3f} < margin "
        f"{margin}; per seed {np.round(method, 3)} vs {np.round(ablation, 3)}")


# -- mechanism tests -------------------------------------------------------------------
def test_resample_group_balanced_batches_beat_uniform_batches(shortcut_run, monkeypatch):
    """The ablation draws uniform batches (the sampler helper returns None): ERM."""
    # Measured: resample 0.689 ± 0.008, uniform (ERM) 0.160 ± 0.006. Margin 0.3: 37 stds
    # of the noisier arm above zero, 29 below the observed gap.
    preds, method = fit_seeds(shortcut_run, "resample", params_of("resample"))
    mod = module_of("resample")
    calls = []
    monkeypatch.setattr(mod, "balanced_sampler", lambda train, b: calls.append(b))
    _, ablation = fit_seeds(shortcut_run, "resample", params_of("resample"))
    assert calls  # the patch reached the plugin
    assert_beats(method, ablation, margin=0.3)


@pytest.mark.parametrize("form,margin", [("loss", 0.2), ("posthoc", 0.07)])
def test_logit_adjust_beats_tau_zero_on_the_rare_class(imbalanced_run, form, margin):
    """τ = 0 is plain ERM in both forms. Metric: test worst-class accuracy."""
    # Measured (worst-class): loss 0.827 ± 0.002, posthoc 0.627 ± 0.011, τ = 0 0.485 ±
    # 0.003 (= ERM 0.482). Margins: loss 0.2 (100 stds above zero, 70 below the gap);
    # posthoc 0.07 (6 stds above zero, 6 below the gap of 0.142).
    la = params_of("logit-adjust", form=form)
    assert la["tau"] == pytest.approx(1.0)
    preds, method = fit_seeds(imbalanced_run, "logit-adjust", la, "worst_class")
    ablated, ablation = fit_seeds(imbalanced_run, "logit-adjust", {**la, "tau": 0.0},
                                  "worst_class")
    for p in ablated:
        assert not p.info["offset"].any()
    assert_beats(method, ablation, margin)
    for p in preds:  # log π of a 19:1 split: the rare class is pushed by log(0.05)
        assert float(p.info["offset"][1] - p.info["offset"][0]) == pytest.approx(
            np.log(1 / 19), abs=1e-4)


def test_crt_class_balanced_sampling_beats_uniform_sampling(imbalanced_run, monkeypatch):
    """The ablation trains the same fresh linear head with uniform batches."""
    # Measured (worst-class): crt 0.811 ± 0.008, uniform 0.612 ± 0.021 (at crt's 10 epochs;
    # ERM at 20 epochs 0.482); paired +0.199, every seed +0.18..+0.23. Margin 0.1: 4.8
    # stds of the noisier arm above zero, 4.7 below the observed gap.
    crt = params_of("crt")
    _, method = fit_seeds(imbalanced_run, "crt", crt, "worst_class")
    calls = []
    monkeypatch.setattr(module_of("crt"), "class_balanced_sampler",
                        lambda train, b: calls.append(b))
    _, ablation = fit_seeds(imbalanced_run, "crt", crt, "worst_class")
    assert calls
    assert_beats(method, ablation, margin=0.1)


def test_cvardro_beats_alpha_one(separable_run):
    """α = 1 puts weight 1/B on every row: ERM."""
    # Measured: cvardro 0.598 ± 0.013, alpha=1 0.484 ± 0.036; paired +0.114, every seed
    # +0.05..+0.16. Margin 0.05: 3.1 SE of the noisier arm's 5-seed mean above zero, 4 SE
    # below the observed gap.
    cv = params_of("cvardro")
    assert cv["alpha"] == pytest.approx(0.1)
    _, method = fit_seeds(separable_run, "cvardro", cv)
    _, ablation = fit_seeds(separable_run, "cvardro", {**cv, "alpha": 1.0})
    assert_beats(method, ablation, margin=0.05)


def test_focal_beats_gamma_zero(separable_run):
    """γ = 0 makes the focal factor 1: ERM."""
    # Measured: focal 0.643 ± 0.056, gamma=0 0.540 ± 0.074; paired +0.103 ± 0.020 (every
    # seed +0.08..+0.13; the arms' noise is shared by seed). Margin 0.05: 5.9 paired SE
    # above zero, 5.9 below the observed gap. On mechanism_data.shortcut the gap is
    # +0.048 ± 0.018 paired.
    fo = params_of("focal")
    assert fo["gamma"] == pytest.approx(2.0)
    _, method = fit_seeds(separable_run, "focal", fo)
    _, ablation = fit_seeds(separable_run, "focal", {**fo, "gamma": 0.0})
    assert_beats(method, ablation, margin=0.05)


def test_afr_exponential_weights_beat_uniform_class_balanced_weights(shortcut_run):
    """γ = 0 keeps the split, the ERM stage, the class balancing and the pull toward the
    ERM layer, with every held-out example of a class weighted alike."""
    # Measured: afr 0.609 ± 0.076, gamma=0 0.195 ± 0.028; paired +0.414 ± 0.08 (every
    # seed +0.31..+0.49). Margin 0.2: 5.9 SE of the noisier arm's mean above zero, 6 paired
    # SE below the observed gap.
    afr = params_of("afr")
    assert afr["gamma"] == pytest.approx(14.0) and afr["lambda"] == pytest.approx(0.2)
    preds, method = fit_seeds(shortcut_run, "afr", afr)
    ablated, ablation = fit_seeds(shortcut_run, "afr", {**afr, "gamma": 0.0})
    train = shortcut_run.store.splits["train"]
    for p in ablated:  # one weight per class
        y = train.y[p.info["heldout"]]
        for c in (0, 1):
            w = p.info["weights"][y == c]
            assert torch.allclose(w, w[0].expand_as(w))
    assert_beats(method, ablation, margin=0.2)
    for p in preds:  # the mechanism at work: minority groups (g 1, 2) weigh far more
        g, w = train.g[p.info["heldout"]], p.info["weights"]
        minority = (g == 1) | (g == 2)
        assert float(w[minority].mean()) > 20 * float(w[~minority].mean())


def test_afr_anchor_holds_stage_two_near_the_erm_layer(shortcut_run):
    """λ pulls stage 2 toward the ERM layer it starts from: at λ = 10 (lr·2λ = 0.4, a
    contraction) it ends within a tenth of the distance λ = 0 travels. Ignoring the
    anchor would leave both at the λ = 0 distance."""
    afr = params_of("afr")

    def distance(lam: float) -> float:
        p = shortcut_run.fit(registry.get_method("afr"), {**afr, "lambda": lam}, 0)
        erm, head = p.info["erm"], p.module
        return float(sum((a - b).detach().pow(2).sum() for a, b in zip(
            head.parameters(), erm.parameters(), strict=True)).sqrt())

    free, held = distance(0.0), distance(10.0)
    assert free > 0.1 and held < 0.1 * free, (free, held)


# -- exact pieces ----------------------------------------------------------------------
@pytest.mark.parametrize("gamma", [0.0, 0.5, 1.0, 2.0, 5.0])
def test_focal_rule_gradient_is_the_focal_loss_gradient(gamma):
    """Σ_i (w_i/B) ∇CE_i, the rule's gradient, equals autograd's gradient of the mean
    focal loss (1 − p_y)^γ·CE, including very confident rows (p_y → 1)."""
    rule = module_of("focal").FocalRule(gamma)
    gen = torch.Generator().manual_seed(0)
    logits = (3 * torch.randn(64, 4, generator=gen, dtype=torch.float64))
    logits[:4, 0] += 25.0  # very confident rows: 1 − p_y ≈ 1e-11
    y = torch.randint(0, 4, (64,), generator=gen)
    y[:4] = 0
    z = logits.clone().requires_grad_(True)
    ce = F.cross_entropy(z, y, reduction="none")
    focal = ((-torch.expm1(-ce)) ** gamma * ce).mean()  # 1 − p, exact where p ≈ 1
    (want,) = torch.autograd.grad(focal, z)
    ce0 = ce.detach()
    w = rule.scale(ce0, torch.arange(64))
    got = w[:, None] * (logits.softmax(-1) - F.one_hot(y, 4))
    torch.testing.assert_close(got, want, atol=1e-10, rtol=1e-8)
    # where CE rounds to 0 (p_y = 1) autograd of the formula gives nan for γ < 1; the
    # rule gives the limit: factor (1 − p)^γ, 1 at γ = 0 and 0 above
    edge = rule.scale(torch.zeros(4, dtype=torch.float64), torch.arange(4))
    assert torch.equal(edge, torch.full((4,), 0.25 if gamma == 0 else 0.0, dtype=torch.float64))
    if gamma > 0:  # not the detached-(1−p)^γ shortcut
        shortcut = ((1 - torch.exp(-ce0)) ** gamma / 64)[:, None] * (
            logits.softmax(-1) - F.one_hot(y, 4))
        assert (shortcut - want).abs().max() > 1e-3


def test_cvar_weights_are_the_exact_best_response():
    cvar = module_of("cvardro").cvar_weights
    ce = torch.tensor([0.3, 2.0, 0.1, 1.5, 0.7, 0.05, 0.9, 0.2, 3.0, 0.4])
    # αB = 2.5: the two largest at 1/2.5, the third the remaining 0.2
    w = cvar(ce, 0.25)
    want = torch.zeros(10)
    want[[8, 1]], want[3] = 0.4, 0.2
    torch.testing.assert_close(w, want)
    # αB = 3: the mean of the three largest
    w = cvar(ce, 0.3)
    assert float((w * ce).sum()) == pytest.approx(float(ce.sort(descending=True).values[:3].mean()))
    assert sorted(torch.nonzero(w).flatten().tolist()) == [1, 3, 8]
    # the value is the maximum over {0 ≤ q ≤ 1/(αB), Σq = 1}: no feasible q beats it
    gen = torch.Generator().manual_seed(1)
    for alpha in (0.1, 0.25, 0.37, 0.5):
        w = cvar(ce, alpha)
        assert float(w.sum()) == pytest.approx(1.0) and float(w.max()) <= 1 / (alpha * 10) + 1e-6
        for _ in range(200):
            q = torch.rand(10, generator=gen) * (1 / (alpha * 10))
            if float(q.sum()) >= 1.0:
                q = q / q.sum()
                if float(q.max()) <= 1 / (alpha * 10):
                    assert float((q * ce).sum()) <= float((w * ce).sum()) + 1e-6
    torch.testing.assert_close(cvar(ce, 1.0), torch.full((10,), 0.1))  # ERM
    assert cvar(ce, 0.05).tolist() == [0.0] * 8 + [1.0, 0.0]  # αB < 1: the worst row


@pytest.mark.parametrize("balance", ["count", "total"])
def test_afr_weights_are_exponential_and_class_balanced(balance):
    afr_weights = module_of("afr").afr_weights
    gen = torch.Generator().manual_seed(2)
    y = torch.tensor([0] * 30 + [1] * 10 + [2] * 5)
    p = torch.rand(45, generator=gen)
    w = afr_weights(p, y, 3, 4.0, balance)
    assert float(w.sum()) == pytest.approx(1.0) and bool((w > 0).all())
    for c in range(3):  # inside a class: ∝ exp(−γ p)
        m = y == c
        ratio = w[m] / torch.exp(-4.0 * p[m])
        torch.testing.assert_close(ratio, ratio[0].expand_as(ratio))
    totals = torch.zeros(3).index_add_(0, y, w)
    if balance == "total":  # every class's weights sum to the same
        torch.testing.assert_close(totals, torch.full((3,), 1 / 3))
    else:  # β_y = 1/n_y: a class's total is ∝ its mean exp(−γ p) (the reference code)
        means = torch.stack([torch.exp(-4.0 * p[y == c]).mean() for c in range(3)])
        torch.testing.assert_close(totals, means / means.sum())
        assert float(totals.max() - totals.min()) > 1e-3  # and so not equal in general


# -- engine features: logit offset and anchor ------------------------------------------
N, D, C, E = 600, 10, 3, 6
CFGS = [  # differ in lr, weight decay, optimizer, batch size and epochs
    TrainConfig(epochs=3, lr=1e-2, weight_decay=1e-4, batch_size=128),
    TrainConfig(epochs=2, lr=3e-2, weight_decay=1e-2, batch_size=256),
    TrainConfig(epochs=3, lr=5e-2, weight_decay=1e-3, batch_size=128, optimizer="sgd"),
    TrainConfig(epochs=4, lr=2e-3, weight_decay=0.0, batch_size=100),
]
OFFSETS = [torch.tensor([0.5, -1.0, 2.0]), None, torch.tensor([-2.0, 0.0, 1.0]),
           torch.tensor([1.0, 1.0, -3.0])]
STRENGTHS = [0.1, 0.0, 0.5, 0.2]  # 0: no anchor
TEXT = torch.randn(C, E, generator=torch.Generator().manual_seed(1))
PROJ = 0.3 * torch.randn(E, D, generator=torch.Generator().manual_seed(2))


@pytest.fixture(scope="module")
def split() -> FeatureSplit:
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(N, D, generator=gen)
    y = (x[:, 0] + 0.5 * torch.randn(N, generator=gen) > 0).long() + (x[:, 1] > 1).long()
    return FeatureSplit("train", x, y, y, y, torch.ones(1, N, dtype=torch.bool), C, C)


def make(kind: str, seed: int, n_classes: int = C) -> tuple[torch.nn.Module, Trainer]:
    gen = torch.Generator().manual_seed(seed)
    head = (LinearHead(D, n_classes, gen) if kind == "linear"
            else PromptHead(TEXT, PROJ, D, 30.0))
    return head, Trainer(CPU, gen)


def anchor_of(kind: str, k: int, n_classes: int = C) -> torch.nn.Module:
    """A head of the same kind away from every configuration's start."""
    head, _ = make(kind, 100 + k, n_classes)
    if kind == "prompt":
        with torch.no_grad():
            head.proj.add_(0.2 * torch.randn(E, D, generator=torch.Generator().manual_seed(k)))
    return head


def assert_same(a: list, b: list, atol: float) -> None:
    for h1, h2 in zip(a, b, strict=True):
        assert isinstance(h2, torch.nn.Module), h2
        for p1, p2 in zip(h1.state_dict().values(), h2.state_dict().values(), strict=True):
            torch.testing.assert_close(p2, p1, atol=atol, rtol=0)


def reference(kind, data, offsets, strengths, cfgs=CFGS):  # noqa: ANN001, ANN201
    heads = []
    for k, cfg in enumerate(cfgs):
        head, trainer = make(kind, k, data.n_classes)
        hooks = Hooks(logit_offset=offsets[k], anchor=anchor_of(kind, k, data.n_classes),
                      anchor_strength=strengths[k])
        trainer.fit(head, data, cfg, hooks, engine="autograd")
        heads.append(head)
    return heads


@pytest.mark.parametrize("kind,atol", [("linear", 1e-5), ("prompt", 2e-5)])
@pytest.mark.parametrize("workers", [1, 2], ids=["1-thread", "2-threads"])
def test_offsets_and_anchors_batched_equal_autograd(split, monkeypatch, kind, atol, workers):
    """Four configurations with their own offsets (one without) and anchors (one with
    strength 0) in one fit_batched call, own batch orders, equal the autograd reference
    one by one; and the features matter (without them the heads differ)."""
    monkeypatch.setattr(batched, "cpu_workers", lambda device: workers)
    monkeypatch.setattr(batched, "PROMPT_GROUP", 2 * E)  # prompt heads in groups of 2
    want = reference(kind, split, OFFSETS, STRENGTHS)
    pairs = [make(kind, k) for k in range(4)]
    anchors = [(anchor_of(kind, k), s) if s else None for k, s in enumerate(STRENGTHS)]
    got = batched.fit_batched([h for h, _ in pairs], split, CFGS, [t for _, t in pairs],
                              offsets=OFFSETS, anchors=anchors, block_rows=64)
    assert_same(want, got, atol)
    plain = reference(kind, split, [None] * 4, [0.0] * 4)
    for k in (0, 2, 3):
        moved = max((p - q).abs().max() for p, q in zip(
            want[k].state_dict().values(), plain[k].state_dict().values(), strict=True))
        assert moved > 100 * atol


@pytest.mark.parametrize("batch_size,workers", [(128, 1), (N, 1), (N, 2)],
                         ids=["minibatch", "full-batch", "full-batch-2-workers"])
def test_offset_and_anchor_on_the_binary_fast_paths(split, monkeypatch, batch_size, workers):
    """One binary linear head takes the logit-difference paths (the NumPy epoch of
    bench.engine.one_head_cpu, and _binary_run_grad when a full batch is split among
    workers): offset and anchor there too. Trainer.fit's default engine against its
    autograd engine."""
    monkeypatch.setattr(batched, "cpu_workers", lambda device: workers)
    y2 = (split.x[:, 0] > 0.3).long()
    data = FeatureSplit("train", split.x, y2, y2, y2, split.eval_masks, 2, 2)
    cfg = TrainConfig(epochs=3, lr=3e-2, weight_decay=1e-3, batch_size=batch_size)
    off = torch.tensor([0.7, -0.4])
    (want,) = reference("linear", data, [off], [0.3], [cfg])
    head, trainer = make("linear", 0, 2)
    calls = []
    original = batched.fit_batched
    monkeypatch.setattr(batched, "fit_batched",
                        lambda *a, **kw: calls.append(kw) or original(*a, **kw))
    trainer.fit(head, data, cfg, Hooks(logit_offset=off, anchor=anchor_of("linear", 0, 2),
                                       anchor_strength=0.3))
    assert calls and calls[0]["offsets"][0] is off  # the analytic engine trained it
    assert_same([want], [head], 1e-5)


def test_an_anchor_of_another_kind_takes_the_autograd_engine(split):
    from bench.engine.trainer import analytic

    head, _ = make("linear", 0)
    assert analytic(head, split, Hooks(anchor=make("linear", 1)[0], anchor_strength=1.0))
    assert not analytic(head, split, Hooks(anchor=make("prompt", 1)[0], anchor_strength=1.0))


@pytest.mark.parametrize("name,extra", [
    ("logit-adjust", {}), ("cvardro", {}), ("focal", {}), ("afr", {"epochs": 60}),
    ("crt", {"init": "erm"}), ("logit-adjust", {"form": "posthoc"}),
])
@pytest.mark.parametrize("head", ["linear", "prompt"])
def test_methods_on_the_analytic_engine_equal_autograd(tmp_path, monkeypatch, name, extra,
                                                       head):
    """Each method's fit through the default (analytic) engine equals the same fit with
    every stage on the autograd reference."""
    if head == "prompt" and name in ("afr", "crt"):
        pytest.skip("afr and crt train linear heads whatever --head says")
    run = Run(RunConfig(methods=[name], runs_dir=tmp_path, progress=False, head=head,
                        dataset_opts={"n_train": "700", "n_val": "200", "n_test": "200"}))
    entry, val = registry.get_method(name), run.store.splits["val"]
    p = {**default_params(entry), "epochs": 3, **extra}
    seen = []
    original = batched.fit_batched
    monkeypatch.setattr(batched, "fit_batched",
                        lambda *a, **kw: seen.append(1) or original(*a, **kw))
    fast = run.fit(entry, p, 0)
    assert seen  # the analytic engine trained it
    orig_fit = Trainer.fit
    monkeypatch.setattr(Trainer, "fit", lambda self, *a, **kw: orig_fit(
        self, *a, **{**kw, "engine": "autograd"}))
    ref = run.fit(entry, p, 0)
    tol = 1e-4 * (run.store.logit_scale if head == "prompt" else 1.0)
    torch.testing.assert_close(fast.logits(val.x), ref.logits(val.x), atol=tol, rtol=1e-4)

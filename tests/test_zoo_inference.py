"""Mechanism tests for lff, lisa, irm and eiil, in the style of tests/test_mechanisms.py:
each method against itself with its mechanism removed (same data, same parameters
otherwise, same seeds), on generated data where the mechanism should matter, by a margin
set from measured seed noise; plus a direct look at the mechanism at work.

Numbers in the comments were measured on mechanism_data.shortcut() (train 1425/75/25/475,
core margin 1, spurious margin 2.5) with a linear head on a CPU: "std" is the standard
deviation over seeds of one arm's test worst-group accuracy (WGA), "paired" that of the
per-seed difference method − ablation.
"""

from __future__ import annotations

import sys

import mechanism_data as md
import numpy as np
import pytest
import torch
from conftest import default_params

from bench.plugins import registry
from bench.run.runner import Run, RunConfig


@pytest.fixture(scope="module")
def shortcut_run(tmp_path_factory) -> Run:
    out = tmp_path_factory.mktemp("zoo-inference")
    path = md.save(md.shortcut(), out / "shortcut.npz")
    return Run(RunConfig(
        dataset="features", dataset_opts={"path": str(path)}, head="linear", trials=0,
        seeds=1, out=out / "run", runs_dir=out, progress=False, methods=None,
    ))


def module_of(name: str):  # noqa: ANN201
    return sys.modules[registry.get_method(name).cls.__module__]


def params_of(name: str, **overrides) -> dict:
    return {**default_params(registry.get_method(name)), **overrides}


def fit_seeds(run: Run, name: str, params: dict, seeds: range) -> tuple[list, np.ndarray]:
    entry = registry.get_method(name)
    preds = [run.fit(entry, params, seed) for seed in seeds]
    return preds, np.array([run.evaluate_splits(p)[1].wga for p in preds])


def assert_beats(method: np.ndarray, ablation: np.ndarray, margin: float) -> None:
    gap = float(method.mean() - ablation.mean())
    assert gap >= margin, (
        f"mean test WGA {method.mean():.3f} vs ablation {ablation.mean():.3f}: gap {gap:+.3f} "
        f"< margin {margin}; per seed {np.round(method, 3)} vs {np.round(ablation, 3)}"
    )


def bias_conflicting(run: Run) -> torch.Tensor:
    train = run.store.splits["train"]
    return train.y != train.a


# -- lff ---------------------------------------------------------------------------------

def test_lff_relative_difficulty_beats_unit_weights(shortcut_run, monkeypatch):
    """W ≡ 1 (relative_difficulty replaced by ones) leaves the debiased head plain ERM
    beside a biased head it never hears from."""
    # Measured (seeds 0-4): lff 0.621 ± 0.059, W=1 0.164 ± 0.017 (ERM: 0.160); paired
    # +0.458 ± 0.053, every seed +0.374 or more. Margin 0.2: 3.4 stds of the noisier arm
    # above zero, 10 SE of the paired mean below the observed gap.
    seeds = range(5)
    lff = params_of("lff")
    assert lff["q"] == pytest.approx(0.7) and lff["ema_alpha"] == pytest.approx(0.7)
    preds, method = fit_seeds(shortcut_run, "lff", lff, seeds)
    mod = module_of("lff")
    monkeypatch.setattr(mod, "relative_difficulty", lambda lb, ld: torch.ones_like(lb))
    ablated, ablation = fit_seeds(shortcut_run, "lff", lff, seeds)
    for p in ablated:
        assert torch.all(p.info["weights"] == 1.0)
    assert_beats(method, ablation, margin=0.2)
    # the mechanism at work: the bias-conflicting examples (y ≠ a) carry the weight
    # (measured: mean W 0.79-0.89 on them, 0.05-0.16 on the aligned ones)
    conflict = bias_conflicting(shortcut_run).cpu()
    for p in preds:
        w = p.info["weights"]
        assert float(w[conflict].mean()) > 3 * float(w[~conflict].mean())


def test_lff_loss_is_gce_plus_weighted_ce():
    """The loss hook by hand: GCE's gradient factor q·p_y^q on the biased half, W·CE on
    the debiased half, the first EMA visit taking the loss as it is, class-wise max
    normalisation."""
    mod = module_of("lff")
    torch.manual_seed(0)
    y = torch.tensor([0, 0, 1, 1])
    loss = mod.LfFLoss(y, 2, q=0.7, alpha=0.7, normalise="class_max")
    logits = torch.randn(4, 4, requires_grad=True)
    idx = torch.arange(4)
    value = loss(logits, y, idx)
    ce_b = torch.nn.functional.cross_entropy(logits[:, :2], y, reduction="none").detach()
    ce_d = torch.nn.functional.cross_entropy(logits[:, 2:], y, reduction="none").detach()
    nb = ce_b / torch.stack([ce_b[:2].max()] * 2 + [ce_b[2:].max()] * 2)
    nd = ce_d / torch.stack([ce_d[:2].max()] * 2 + [ce_d[2:].max()] * 2)
    w = nb / (nb + nd + 1e-8)
    expected = (0.7 * torch.exp(-0.7 * ce_b) * ce_b).mean() + (w * ce_d).mean()
    torch.testing.assert_close(value.detach(), expected)
    torch.testing.assert_close(loss.ema_b, ce_b)
    # the GCE half's gradient equals that of (1 − p_y^q)/q times q (the code's scale)
    logits.grad = None
    value.backward()
    ref = logits.detach().clone().requires_grad_()
    p_y = ref[:, :2].softmax(1).gather(1, y[:, None]).squeeze(1)
    (0.7 * (1 - p_y**0.7) / 0.7).mean().backward()
    torch.testing.assert_close(logits.grad[:, :2], ref.grad[:, :2])
    # a second visit: EMA α·old + (1 − α)·new
    loss(logits.detach()[:2] * 2, y[:2], idx[:2])
    new = torch.nn.functional.cross_entropy(logits.detach()[:2, :2] * 2, y[:2], reduction="none")
    torch.testing.assert_close(loss.ema_b[:2], 0.7 * ce_b[:2] + 0.3 * new)


# -- lisa --------------------------------------------------------------------------------

def test_lisa_selective_pairs_beat_plain_mixup(shortcut_run):
    """Selective pairing against plain mixup (pairing=random: partners uniform over the
    batch, attributes ignored), both on uniform batches.

    On uniform batches selective pairing is the whole mechanism: a majority row mixes
    with a minority row of its label (or of its attribute), while plain mixup mostly
    mixes the two majority groups. At the default group-balanced sampling the batches
    are already balanced and selective pairing showed no effect on this data (measured,
    seeds 0-4: 0.736 ± 0.021 vs plain mixup 0.740 ± 0.023, paired −0.005 ± 0.028): the
    sampler, not the pairing, does the balancing there."""
    # Measured (seeds 0-4): selective 0.673 ± 0.012, random 0.105 ± 0.006; paired
    # +0.568 ± 0.010. Three seeds suffice; margin 0.3: 25 stds of the noisier arm above
    # zero, 27 paired stds below the observed gap.
    seeds = range(3)
    lisa = params_of("lisa", sampling="uniform")
    assert params_of("lisa")["sampling"] == "group" and lisa["p_sel"] == pytest.approx(0.5)
    preds, method = fit_seeds(shortcut_run, "lisa", lisa, seeds)
    ablated, ablation = fit_seeds(shortcut_run, "lisa", {**lisa, "pairing": "random"}, seeds)
    assert all(set(p.info["modes"]) == {"random"} for p in ablated)
    assert all(set(p.info["modes"]) == {"label", "attribute"} for p in preds)
    assert_beats(method, ablation, margin=0.3)


def test_lisa_partners_follow_the_selection_rule():
    mod = module_of("lisa")
    gen = torch.Generator().manual_seed(0)
    y = torch.tensor([0, 0, 0, 1, 1, 1, 1])
    a = torch.tensor([0, 0, 1, 1, 1, 0, 1])
    j, found = mod.partners(y, a, "label", gen)
    assert found.all() and torch.all(y[j] == y) and torch.all(a[j] != a)
    j, found = mod.partners(y, a, "attribute", gen)
    assert found.all() and torch.all(a[j] == a) and torch.all(y[j] != y)
    j, found = mod.partners(torch.tensor([0, 0]), torch.tensor([1, 1]), "label", gen)
    assert not found.any() and torch.equal(j, torch.arange(2))  # no partner: unmixed


# -- irm ---------------------------------------------------------------------------------

def test_irm_penalty_matches_autograd_through_a_dummy_scale():
    """The closed form against the reference code's computation: autograd of the mean
    cross-entropy with respect to a scale on the logits, at 1, squared."""
    mod = module_of("irm")
    torch.manual_seed(0)
    logits = torch.randn(50, 3, requires_grad=True)
    y = torch.randint(0, 3, (50,))
    scale = torch.tensor(1.0, requires_grad=True)
    risk = torch.nn.functional.cross_entropy(logits * scale, y)
    (grad,) = torch.autograd.grad(risk, [scale], create_graph=True)
    expected = grad**2
    got = mod.irm_penalty(logits, y)
    torch.testing.assert_close(got, expected)
    # and its gradient with respect to the logits (what training follows)
    (g1,) = torch.autograd.grad(got, [logits])
    (g2,) = torch.autograd.grad(expected, [logits])
    torch.testing.assert_close(g1, g2)


def test_irm_anneals_and_rescales_as_the_code():
    """λ_t = 1 before `anneal_iters` steps, λ after; the loss divided by λ when λ > 1;
    environments are the attribute values, risks and penalties averaged over them."""
    mod = module_of("irm")
    torch.manual_seed(1)
    env = torch.tensor([0, 0, 0, 1, 1, 1])
    y = torch.tensor([0, 1, 0, 1, 1, 0])
    logits = torch.randn(6, 2)
    idx = torch.arange(6)
    f = torch.nn.functional.cross_entropy
    nll = (f(logits[:3], y[:3]) + f(logits[3:], y[3:])) / 2
    pen = (mod.irm_penalty(logits[:3], y[:3]) + mod.irm_penalty(logits[3:], y[3:])) / 2
    assert float(pen) > 0
    loss = mod.IRMLoss(env, penalty_weight=100.0, anneal_iters=2)
    for _ in range(2):
        torch.testing.assert_close(loss(logits, y, idx), nll + pen)
    torch.testing.assert_close(loss(logits, y, idx), (nll + 100.0 * pen) / 100.0)
    off = mod.IRMLoss(env, penalty_weight=0.0, anneal_iters=0)
    torch.testing.assert_close(off(logits, y, idx), nll)


# -- eiil --------------------------------------------------------------------------------

def test_eiil_inferred_environments_beat_random_and_single(shortcut_run, monkeypatch):
    """EIIL's inferred environments against random ones (each example in A with
    probability ½) and against a single environment (Group DRO over the classes)."""
    # Measured (seeds 0-4): eiil 0.675 ± 0.024; random environments 0.283 ± 0.017 (paired
    # +0.392 ± 0.032); one environment 0.308 ± 0.008 (paired +0.367 ± 0.020). Margin 0.2:
    # 8 stds of the noisier arm above zero, 12 paired stds below the smaller gap. Three
    # seeds: each fit runs 10 000 inference steps, and the gaps are 18 paired stds wide.
    seeds = range(3)
    eiil = params_of("eiil")
    assert eiil["ei_steps"] == 10000 and eiil["ei_lr"] == pytest.approx(1e-3)
    preds, method = fit_seeds(shortcut_run, "eiil", eiil, seeds)
    # the mechanism at work: the smaller inferred environment is mostly bias-conflicting
    # examples (y ≠ a, 5% of the training split). Measured (seeds 0-4): 73-75 rows, 66-74%
    # of them conflicting, holding 48-55% of all conflicting rows; a random subset of
    # that size would hold 5% and 3.7%.
    conflict = bias_conflicting(shortcut_run).cpu()
    for p in preds:
        env = p.info["env"]
        small = env == int(torch.bincount(env, minlength=2).argmin())
        assert float(conflict[small].float().mean()) > 0.4  # 8× the base rate
        assert float(small[conflict].float().mean()) > 0.3
    mod = module_of("eiil")

    def random_env(logits, y, steps, lr, generator):  # noqa: ANN001, ANN202
        return torch.rand(len(y), generator=generator).to(y.device)

    def one_env(logits, y, steps, lr, generator):  # noqa: ANN001, ANN202
        return torch.zeros(len(y), device=y.device)

    monkeypatch.setattr(mod, "infer_environments", random_env)
    _, random_ablation = fit_seeds(shortcut_run, "eiil", eiil, seeds)
    monkeypatch.setattr(mod, "infer_environments", one_env)
    _, single_ablation = fit_seeds(shortcut_run, "eiil", eiil, seeds)
    assert_beats(method, random_ablation, margin=0.2)
    assert_beats(method, single_ablation, margin=0.2)


def test_eiil_gradient_matches_autograd():
    """The written-out gradient of the (negated) IRM violation against autograd."""
    mod = module_of("eiil")
    torch.manual_seed(2)
    grad = mod.scale_gradients(torch.randn(40, 2).double() * 3, torch.randint(0, 2, (40,)))
    w = torch.randn(40, dtype=torch.float64, requires_grad=True)
    q = w.sigmoid()
    objective = -0.5 * ((q * grad).mean() ** 2 + ((1 - q) * grad).mean() ** 2)
    (expected,) = torch.autograd.grad(objective, [w])
    torch.testing.assert_close(mod.violation_gradient(w.detach(), grad), expected)

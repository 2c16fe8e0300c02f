"""dfr: Deep Feature Reweighting, DFR^Val_Tr (Kirichenko et al. 2022).

Features are standardised (statistics of the validation split). An L1 logistic regression
(scikit-learn, liblinear) is trained on a group-balanced subsample of one half of the
validation split and scored by worst-group accuracy on the other half, both ways round,
for each C in the grid (ties go to the largest C, as np.argmax does in the reference
code); with the best C, the final model averages the coefficients of `n_retrains` fits
(an option, default 20, never tuned) on group-balanced subsamples of the whole validation
split. It trains on validation data only, so it is reported on test only.

Solver. The paper's code fits `LogisticRegression(penalty="l1", solver="liblinear")`. With
three or more classes the scikit-learn of its time ran that one-vs-rest (liblinear trains
one binary L1 logistic regression per class, that class against the rest); current
scikit-learn refuses multiclass data with liblinear and points to OneVsRestClassifier.
So with three or more classes each fit is `OneVsRestClassifier` around the same binary
liblinear L1 model: the same objective as the reference code, per class. The multinomial
L1 model (solver saga) would be a different objective, so we do not use it. Binary
problems are fitted as before, with one model. The head's logits are the per-class OvR
decision functions w_k·x + b_k (their argmax is OvR's prediction; binary: [0, w·x + b]),
with w_k, b_k averaged over the retrains.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np
import torch

import bench

if TYPE_CHECKING:  # scikit-learn (~1 s to import) loads when DFR first fits
    from sklearn.linear_model import LogisticRegression
    from sklearn.multiclass import OneVsRestClassifier

C_GRID = (1.0, 0.7, 0.3, 0.1, 0.07, 0.03, 0.01)
N_RETRAINS = 20


def balanced_indices(g: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    groups = np.unique(g)
    n_min = min(int((g == k).sum()) for k in groups)
    return np.concatenate(
        [rng.choice(np.flatnonzero(g == k), n_min, replace=False) for k in groups]
    )


def l1_logistic(c: float, seed: int) -> LogisticRegression:
    """Binary L1-penalised logistic regression with liblinear (the paper's model);
    scikit-learn 1.8 renamed penalty="l1" to l1_ratio=1."""
    import sklearn
    from sklearn.linear_model import LogisticRegression

    major, minor = (int(v) for v in sklearn.__version__.split(".")[:2])
    penalty = {"l1_ratio": 1.0} if (major, minor) >= (1, 8) else {"penalty": "l1"}
    return LogisticRegression(C=c, solver="liblinear", random_state=seed, **penalty)


def fit_lr(
    x: np.ndarray, y: np.ndarray, c: float, seed: int
) -> LogisticRegression | OneVsRestClassifier:
    """One fit: the binary model, or one-vs-rest over it for three or more classes."""
    from sklearn.multiclass import OneVsRestClassifier

    if len(np.unique(y)) > 2:
        return OneVsRestClassifier(l1_logistic(c, seed)).fit(x, y)
    return l1_logistic(c, seed).fit(x, y)


def coefficients(
    model: LogisticRegression | OneVsRestClassifier,
) -> tuple[np.ndarray, np.ndarray]:
    """(coef [K, D], intercept [K]): one row for a binary model, one per class for OvR."""
    if hasattr(model, "estimators_"):  # OneVsRestClassifier
        coef = np.vstack([e.coef_ for e in model.estimators_])
        intercept = np.concatenate([np.ravel(e.intercept_) for e in model.estimators_])
        return coef, intercept
    return model.coef_.copy(), model.intercept_.copy()


def worst_group_acc(
    model: LogisticRegression | OneVsRestClassifier, x: np.ndarray, y: np.ndarray, g: np.ndarray
) -> float:
    hit = model.predict(x) == y
    return min(float(hit[g == k].mean()) for k in np.unique(g))


def as_logit_weights(coef: np.ndarray, intercept: np.ndarray, n_classes: int):  # noqa: ANN201
    """sklearn's binary model has one row (class 1 vs 0): logits [0, w·x + b]; OvR's rows
    are already one decision function per class."""
    if n_classes == 2 and coef.shape[0] == 1:
        return np.vstack([np.zeros_like(coef), coef]), np.concatenate([[0.0], intercept])
    return coef, intercept


@bench.method
class DFR(bench.Method):
    name = "dfr"
    description = "Deep Feature Reweighting: L1 logistic regression on balanced validation data"
    group_labels = frozenset({"val"})
    family = "last-layer retraining"
    untuned_because = (
        "it picks its L1 strength C by cross-validation on halves of the validation split "
        "inside each fit (the paper's protocol); nothing is left for the tuner"
    )
    paper = (
        "Kirichenko et al. 2022, Last Layer Re-Training is Sufficient for Robustness "
        "to Spurious Correlations"
    )

    def search_space(self) -> dict:
        # an option, not a search dimension: the C grid is searched internally
        return {"n_retrains": bench.Int(1, 100, N_RETRAINS, tune=False)}

    def fit(self, train, val, ctx):
        n_retrains = int(ctx.params.get("n_retrains", N_RETRAINS))
        if n_retrains < 1:
            raise bench.UserError(f"dfr: n_retrains={n_retrains} must be at least 1")
        seed = int(torch.randint(0, 2**31 - 1, (1,), generator=ctx.generator))
        rng = np.random.default_rng(seed)
        x = val.x.cpu().numpy().astype(np.float64)
        y = val.y.cpu().numpy()
        g = val.g.cpu().numpy()
        missing = sorted(set(range(val.n_classes)) - set(np.unique(y).tolist()))
        if missing:
            raise bench.UserError(
                f"dfr trains on the validation split, which has no example of class(es) "
                f"{missing}"
            )
        mean, scale = x.mean(0), x.std(0) + 1e-8
        xs = (x - mean) / scale

        order = rng.permutation(len(y))
        halves = (order[: len(y) // 2], order[len(y) // 2 :])
        scores = {}
        for c in C_GRID:
            accs = []
            for a, b in (halves, halves[::-1]):
                pick = a[balanced_indices(g[a], rng)]
                model = fit_lr(xs[pick], y[pick], c, seed)
                accs.append(worst_group_acc(model, xs[b], y[b], g[b]))
            scores[c] = float(np.mean(accs))
        # ties go to the first C of the grid, the largest, as np.argmax in the reference code
        best_c = max(C_GRID, key=lambda c: scores[c])

        coefs, intercepts, picks = [], [], []
        for _ in range(n_retrains):
            pick = balanced_indices(g, rng)
            w_i, b_i = coefficients(fit_lr(xs[pick], y[pick], best_c, seed))
            coefs.append(w_i)
            intercepts.append(b_i)
            picks.append(pick)
        coef, intercept = np.mean(coefs, axis=0), np.mean(intercepts, axis=0)
        w, b = as_logit_weights(coef, intercept, val.n_classes)
        # fold the standardisation into one linear layer over raw features
        w_raw = w / scale
        b_raw = b - (w_raw * mean).sum(axis=1)
        head = torch.nn.Linear(x.shape[1], w.shape[0])
        with torch.no_grad():
            head.weight.copy_(torch.as_tensor(w_raw, dtype=torch.float32))
            head.bias.copy_(torch.as_tensor(b_raw, dtype=torch.float32))
        info = {
            "C": best_c,
            "cv_wga": scores,
            "seed": seed,
            "picks": picks,  # val indices of each retrain's balanced subsample
            "coefs": coefs,
            "intercepts": intercepts,
            "coef": coef,
            "intercept": intercept,
            "mean": mean,
            "scale": scale,
        }
        return bench.Predictor(head.to(ctx.device), info=info)

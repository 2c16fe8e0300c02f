"""orth-proj: debias the zero-shot classifier's text (Chuang et al. 2023), no training.

Definition. Let T [C, D] be the normalised class text embeddings, S [A, D] the attribute
("spurious") prompt embeddings and z_{c,a} the embeddings of the paired prompts "class c
with attribute a" (all normalised, all from the store). Then

    P0 = I − Q Qᵀ,            Q: an orthonormal basis of the row space of S
    M  = (1/|𝒫|) Σ_{(i,j) ∈ 𝒫} (z_i − z_j)(z_i − z_j)ᵀ,
         𝒫 = pairs of prompts of the same class with different attributes
    P* = P0 (I + λ M)⁻¹
    T' = normalize(T P*ᵀ),    logits = s · normalize(P_v h) · T'ᵀ

P0 removes every direction the spurious prompts span, so a class embedding can no longer
score an image higher for its background; P* is the closed-form minimiser of
‖P − P0‖² + λ/|𝒫| Σ ‖P z_i − P z_j‖², which also makes prompts that differ only in the
attribute map to the same point (the paper's "calibration"). λ = 0 is the paper's
Orth-Proj, λ > 0 its Orth-Cali; the default λ = 1000 is their code's.

Why: CLIP's class prompts lean toward their spurious attribute ("waterbird" toward
"water"); projecting the attribute subspace out of the classifier removes that lean
without a single label or training step.

Following the reference code (github chingyaoc/debias_vl, discriminative/main.py): the
spurious subspace is the uncentred span of the spurious embeddings (TruncatedSVD with as
many components as prompts), and every pair of same-class prompts is a positive pair.
Departure: one prompt-ensembled embedding per attribute value (the store's attr_text)
instead of several separate spurious prompts, so the subspace has dimension ≤ A.
"""

from __future__ import annotations

import torch

import bench


def spurious_projection(spurious: torch.Tensor, tol: float = 1e-6) -> torch.Tensor:
    """P0 = I − Q Qᵀ with Q an orthonormal basis of span(rows of `spurious`) [D, D]."""
    s = spurious.to(torch.float64)
    _, sv, vh = torch.linalg.svd(s, full_matrices=False)
    q = vh[sv > tol * sv.max().clamp_min(1e-30)].T  # [D, r]
    return torch.eye(s.shape[1], dtype=torch.float64, device=s.device) - q @ q.T


def pair_scatter(pairs: torch.Tensor) -> torch.Tensor:
    """M = mean over same-class, different-attribute prompt pairs of (z_i − z_j)(z_i − z_j)ᵀ,
    from `pairs` [C, A, D]; zero when there are fewer than two attribute values."""
    z = pairs.to(torch.float64)
    c, a, d = z.shape
    i, j = torch.triu_indices(a, a, offset=1, device=z.device)
    if len(i) == 0:
        return torch.zeros(d, d, dtype=torch.float64, device=z.device)
    diff = (z[:, i] - z[:, j]).reshape(-1, d)  # [C·A(A−1)/2, D]
    return diff.T @ diff / len(diff)


def calibrated_projection(
    spurious: torch.Tensor, pairs: torch.Tensor | None, lam: float
) -> torch.Tensor:
    """P* = P0 (I + λ M)⁻¹ (P0 alone when λ = 0 or there are no paired prompts)."""
    p0 = spurious_projection(spurious)
    if pairs is None or lam == 0:
        return p0
    g = torch.eye(len(p0), dtype=torch.float64, device=p0.device) + lam * pair_scatter(pairs)
    return p0 @ torch.linalg.inv(g)


def debiased_text(store: bench.FeatureStore, lam: float) -> torch.Tensor:
    """The class text embeddings with the spurious subspace projected out, renormalised."""
    proj = calibrated_projection(store.attr_text, store.class_attr_text, lam)
    text = store.class_text.to(torch.float64) @ proj.T
    return torch.nn.functional.normalize(text, dim=1).to(torch.float32)


@bench.method
class OrthProj(bench.Method):
    name = "orth-proj"
    description = (
        "Zero-shot with the attribute prompts' subspace projected out of the class text "
        "(calibrated), no training, no labels"
    )
    group_labels = frozenset()
    family = "CLIP-specific"
    paper = "Chuang et al. 2023, Debiasing Vision-Language Models via Biased Prompts"
    needs_training_data = False  # the text embeddings are its whole input
    untuned_because = (
        "it does not train: the class and attribute prompts fix the projection, and λ is "
        "an option (the paper's 1000), not searched: with no labels there is no score to "
        "tune it on"
    )

    def search_space(self) -> dict:
        # λ of the calibration; 0 is the uncalibrated Orth-Proj. An option, not searched:
        # the method is zero-shot, so it has nothing to tune on
        return {"lam": bench.Float(0.0, 1e5, 1000.0, tune=False)}

    def unsupported(self, store):
        if store.class_text is None:
            return "orth-proj needs class text embeddings; this encoder has no text tower"
        if store.attr_text is None:
            return ("orth-proj needs attribute text embeddings (attr_text); this dataset "
                    "or encoder provides none")
        return None

    def fit(self, train, val, ctx):
        store = ctx.store
        lam = float(ctx.params.get("lam", 1000.0))
        calibrated = lam > 0 and store.class_attr_text is not None
        if lam > 0 and not calibrated:
            ctx.log.warning("orth-proj: no paired (class with attribute) prompt embeddings; "
                            "projecting without the calibration (λ = 0)")
        text = debiased_text(store, lam if calibrated else 0.0)
        head = bench.PromptHead(text, store.visual_projection, store.dim, store.logit_scale)
        return bench.Predictor(head.to(store.device).eval(),
                               info={"calibrated": calibrated, "debiased_text": text.cpu()})

"""zeroshot: CLIP's zero-shot classifier, the prompt head with no training (Radford et al. 2021)."""

from __future__ import annotations

import bench


@bench.method
class ZeroShot(bench.Method):
    name = "zeroshot"
    description = "Zero-shot prompt head (class text embeddings), no training, no labels"
    group_labels = frozenset()
    family = "CLIP-specific"
    needs_training_data = False
    untuned_because = "it does not train: the class prompts are its whole model"
    paper = (
        "Radford et al. 2021, Learning Transferable Visual Models From Natural Language Supervision"
    )

    def unsupported(self, store):
        if store.class_text is None:
            return "zero-shot needs class text embeddings; this encoder has no text tower"
        return None

    def fit(self, train, val, ctx):
        return ctx.references.zeroshot()

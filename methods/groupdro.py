"""groupdro: online group DRO (Sagawa et al. 2020), q persists across batches.

Per batch: ℓ_g = mean cross-entropy of the batch's examples in group g;
q_g ← q_g · exp(η · (ℓ_g + C/√n_g)) for the groups present in the batch; q ← q / Σq;
loss = Σ_g q_g ℓ_g. Groups absent from a batch keep their q (our choice; the reference
code adds the bare adjustment C/√n_g for them too, which only matters when C > 0).

Batches are uniform by default; `sampling=group` draws group-balanced batches (with
replacement), as the reference code's commands do (`--reweight_groups`).
"""

from __future__ import annotations

import bench
from bench import GroupDRORule


@bench.method
class GroupDRO(bench.Method):
    name = "groupdro"
    description = "Group DRO: online minimax over training groups (Sagawa et al. 2020)"
    group_labels = frozenset({"train"})
    family = "robust optimisation"
    paper = "Sagawa et al. 2020, Distributionally Robust Neural Networks for Group Shifts"

    def search_space(self) -> dict:
        return GroupDRORule.space()

    def train(self, train, val, ctx):
        p = ctx.params
        head = ctx.make_head()
        rule = GroupDRORule(train.g, train.n_groups, p["eta"], p["adjustment"])
        cfg = bench.TrainConfig.from_params(p)
        sampler = None
        if p.get("sampling", "uniform") == "group":
            sampler = bench.Sampler.group_balanced(train.g, train.n_groups, cfg.batch_size)
        head = yield bench.Stage(head, train, cfg, bench.Hooks(batch_rule=rule, sampler=sampler))
        return bench.Predictor(head, info={"q": rule.q.cpu()})

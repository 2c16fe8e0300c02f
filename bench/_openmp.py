"""OpenMP helper threads spin briefly, then sleep: set before torch is first imported.

Why: after each parallel region libgomp's helper threads spin for some milliseconds
(300,000 spins by default). On a machine with few cores that spinning thread holds the
core the next piece of work needs, e.g. the second worker of a full-batch epoch. Measured
on 2 vCPUs: a CelebA-scale full-batch epoch 41 → 34 ms with 10,000 spins; the default
`bench run` and `--parallel-trials 8` unchanged. (Sleeping at once, OMP_WAIT_POLICY=
PASSIVE, made `--parallel-trials 8` 1.6× slower: many small parallel regions then pay a
wake-up each.) An explicit GOMP_SPINCOUNT wins; importing torch before bench leaves
libgomp's default in place. Other OpenMP runtimes ignore the variable.
"""

import os

os.environ.setdefault("GOMP_SPINCOUNT", "10000")

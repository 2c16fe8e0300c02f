"""Idle OpenMP threads sleep instead of spinning: set before torch is first imported.

Why: after each parallel region libgomp's helper threads spin for milliseconds (its
default spin count). On a machine with few cores that spinning thread holds the core the
next piece of work needs, e.g. the second worker of a full-batch epoch (measured on
2 vCPUs: 41 ms → 35 ms per CelebA-scale epoch; the default `bench run` unchanged).
An explicit OMP_WAIT_POLICY in the environment wins; importing torch before bench
leaves torch's own setting in place.
"""

import os

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

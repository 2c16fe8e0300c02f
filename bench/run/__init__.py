"""Run orchestration: one run, sweeps, workers, run directories, tracking.
"""

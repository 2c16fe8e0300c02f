"""Tuning: search spaces, Optuna studies (sequential and batched), seeds, selection rules
and trial heartbeats.
"""

"""Reporting: metrics, result tables, leaderboards, plots, compare and gate.
"""

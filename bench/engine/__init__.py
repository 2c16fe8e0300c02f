"""The training engine: stages, heads, the analytic engine and its autograd reference,
samplers, batch rules and shared reference heads.
"""

"""Encoders: identity and open_clip, and the choice between them.
"""

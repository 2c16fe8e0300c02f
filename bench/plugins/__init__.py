"""The plugin registry, the method contract and the static plugin index.
"""

"""Datasets and their cache: the plugin contract, the spec, official formats, the verified
feature cache and the device-resident store.
"""

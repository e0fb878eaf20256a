"""Adapters: storage, sources, datasets, models, the reference cache, metrics, and the one door to TRL's private API."""

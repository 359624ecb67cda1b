"""Packaging: the service directory a node loads, and its serving image."""

"""Shared fixtures; tests run from the repository root (``python -m pytest``)."""

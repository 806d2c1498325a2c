"""Sweeps: cells (method x dataset x shots x seed x backbone x hyperparameters) run on Ray.

``config`` reads and checks a sweep YAML (includes, overrides), ``plan`` expands it into cells
with their estimated queries and status, ``runner`` runs what is missing on model servers,
``run_cell`` runs one cell, ``cli`` is ``craft bench``.
"""

"""Sweeps: cells (method x dataset x shots x seed x backbone x hyperparameters) run on Ray.

``config`` reads and checks a sweep YAML (includes, overrides), ``plan`` expands it into cells
with their estimated queries and status, ``runner`` schedules what is missing on the server pool,
``run_cell`` runs one cell, ``cli`` is ``craft bench`` and ``demo`` is ``craft demo``.
May import every other room of ``benchmark`` (``demo`` prints its table through ``report``); never ``tuning``.
"""

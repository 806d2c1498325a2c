"""Sweeps: cells (method x dataset x shots x seed x backbone x hyperparameters) run on Ray.

``grid`` reads and checks the grid keys of a sweep and of a ``craft tune`` search (methods,
datasets, shots, seeds, backbones, hyperparameters), ``config`` reads and checks a sweep YAML
(includes, overrides), ``plan`` expands a sweep into cells with their estimated queries and
status, ``cell`` is one run (its typed config, id and budget made once), ``runner`` schedules what is missing on the server pool,
``run_cell`` runs one cell, ``cli`` is ``craft bench`` and ``demo`` is ``craft demo``.
May import every other room of ``benchmark`` (``demo`` prints its table through ``report``); never ``tuning``.
"""

"""Serving the model: the model server, the client a run holds (``client``: free of open_clip),
the Ray runtime and the server pool, query batching, colocated runs and the white-box references.

May import ``benchmark.model`` and ``benchmark.datasets``; never the sweep, report or tuning rooms.
"""

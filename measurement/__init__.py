"""Measurement, outside the product: ``craft perf`` (a plugin command), its loops, profile and
server runs, the GPU device script, and the scripts that print each figure in ``docs/``
(``python -m measurement.NAME``).

May import anything of the product; the product never imports it (``tests/test_boundaries.py``).
"""

"""Data: the dataset registry, loaders of CoOp's folder layout, the few-shot protocol, transforms,
the built-in suite and the synthetic paper-shapes suite, and ``TaskSpec`` (which data a run uses).

Imports no other room of ``benchmark`` (only ``benchmark.errors``), and neither torch's models nor Ray.
"""

"""Experiment tracking: result rows into MLflow or Weights & Biases (``--track``, ``craft export``)."""

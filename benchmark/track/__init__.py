"""Experiment tracking: result rows into MLflow or Weights & Biases (``--track``, ``craft export``).

Holds the trackers and the ``craft export`` command; imports benchmark.results and, lazily, mlflow
and wandb (the ``track`` extra); never torch, ray or the model.
"""

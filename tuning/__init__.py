"""Hyperparameter search (``craft tune``): Optuna studies run as Ray Tune trials on the sweep's server pool.

Uses ``benchmark``'s rooms (configs, cells, servers, results); the product side never imports it back
except the CLI's lazy ``tune`` command.
"""

"""Sweeps: cells (method x dataset x shots x seed x backbone x hyperparameters) run on Ray."""

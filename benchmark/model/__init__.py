"""The model: the open_clip engine and its text tower, model loading (``craft-tiny`` included), the
image-feature cache and its keys, and a run's task prepared on it.

May import ``benchmark.datasets``, torch and open_clip; never the serving, sweep or result rooms, nor Ray.
"""

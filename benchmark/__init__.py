"""The model side of the black box and everything around it: rooms by job.

``datasets`` (data, few-shot protocol, built-in suite) < ``model`` (open_clip engine, feature cache,
task preparation) < ``serve`` (model servers, their client, Ray) < ``sweep`` (configs, cells,
scheduling, ``craft bench``/``craft demo``); ``results`` (schema, store) and ``report`` (tables,
figures) read what sweeps write. ``tests/test_boundaries.py`` holds each room to its walls.
"""

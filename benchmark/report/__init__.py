"""Tables and figures of the paper, from a results folder, with the published numbers beside ours.

Reads rows through ``benchmark.results``; needs no model, torch or Ray (``tests/test_boundaries.py``).
"""

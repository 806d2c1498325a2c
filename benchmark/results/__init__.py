"""Results: the row schema, the store (atomic writes, verified done files, listing, locks) and provenance.

Imports pyarrow and the standard library only: reading a results folder needs no model, torch or Ray.
"""

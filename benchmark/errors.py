"""Errors that the ``craft`` command reports as one clear sentence (exit status 2)."""


class UserError(Exception):
    """Bad input from the user: a config key, a path, a name. Raised before expensive work."""

"""Errors that the ``craft`` command reports as one clear sentence (exit status 2)."""


class UserError(Exception):
    """Bad input from the user: a config key, a path, a name. Raised before expensive work."""


class Terminated(KeyboardInterrupt):
    """SIGTERM: stop as Ctrl-C stops (servers stopped, locks released, what is done kept), exit 143."""


_terminated = False


def raise_terminated(signum: int, frame: object) -> None:
    """A SIGTERM handler: :class:`Terminated` in the main thread (remembered, as Ray's waits may turn
    it into a plain KeyboardInterrupt on its way out)."""
    global _terminated
    _terminated = True
    raise Terminated()


def was_terminated(exc: BaseException) -> bool:
    """Whether ``exc`` (a KeyboardInterrupt) came from SIGTERM."""
    return isinstance(exc, Terminated) or _terminated


def show(value: object, limit: int = 200) -> str:
    """``repr(value)`` for an error message, cut to about ``limit`` characters without building it whole.

    A YAML alias bomb of a few hundred bytes expands to a structure whose full repr is gigabytes;
    :mod:`reprlib` stops at a few items per level and a few levels deep.
    """
    import reprlib

    r = reprlib.Repr()
    r.maxlevel, r.maxlist, r.maxtuple, r.maxdict, r.maxset = 3, 6, 6, 6, 6
    r.maxstring, r.maxother, r.maxlong = limit, limit, 40
    text = r.repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."

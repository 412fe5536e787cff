"""Errors a user can act on. The CLI prints ``kat: <path>: <message>`` and exits 2; the GUI shows a dialog."""

from __future__ import annotations

import os


class KatInputError(Exception):
    """Bad input: a file that is missing, truncated, corrupt, empty, of the wrong kind, or inconsistent.

    ``path`` names the file (or directory) at fault; ``message`` says what is wrong and, where possible,
    what to do. ``str(err)`` is the one line shown to the user.
    """

    def __init__(self, path: str | os.PathLike | None, message: str):
        self.path = os.fspath(path) if path is not None else None
        self.message = message
        super().__init__(f"{self.path}: {message}" if self.path else message)

    def __reduce__(self):
        # Raised in a dask worker, the error travels back pickled: rebuilt with the same one-line text and
        # attributes whatever the subclass's own __init__ takes (default pickling would call cls(*args)).
        return (_restore_input_error, (type(self), self.args, dict(self.__dict__)))


def _restore_input_error(cls: type, args: tuple, state: dict) -> KatInputError:
    err = cls.__new__(cls)
    Exception.__init__(err, *args)
    err.__dict__.update(state)
    return err


class Cancelled(Exception):
    """Raised inside long work when the user pressed cancel (GUI) or Ctrl-C (CLI)."""

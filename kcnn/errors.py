"""kcnn's errors: one base class, and the two kinds the command line turns into one ``Error:`` line.

- :class:`UsageError`: a bad option, argument or setting (an unknown model, a value out of range,
  a destination with the wrong suffix). The command line exits with status 2. It is also a
  ``ValueError``, so Python callers that catch ``ValueError`` for bad arguments keep working.
- :class:`DataError`: input or a run that is missing, damaged or unreadable (a dataset not
  prepared, a truncated shard, a model file that does not load, an unfinished run). Exit status 1.

Any other exception escaping a command is a bug, in kcnn or below it: the command line shows its
traceback and asks for a bug report (:mod:`kcnn.cli`). Standard library only.
"""

from __future__ import annotations


class KcnnError(Exception):
    """The base of kcnn's own errors; ``exit_code`` is the command line's exit status for it."""

    exit_code = 1


class UsageError(KcnnError, ValueError):
    """A bad option, argument or setting; the message names it (``"... Received: name=value"``)."""

    exit_code = 2


class DataError(KcnnError):
    """Input or a run that is missing, damaged or unreadable; the message names the file or dataset."""

    exit_code = 1

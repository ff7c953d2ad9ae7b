"""Keep TensorFlow's and TFDS' start-up notices off the terminal, so kcnn's header is the first line.

TensorFlow 2.21 logs its C++ start-up notices (absl's "All log messages before
absl::InitializeLog() is called...", the oneDNN and CPU-feature notices) through
absl while its shared libraries load, before ``TF_CPP_MIN_LOG_LEVEL`` is read, so
the variable cannot hide them: :func:`import_tensorflow` points file descriptor 2
at a temporary file for the import and replays it only when the import fails.
TFDS logs "Variant folder ... has no dataset_info.json" through Python's ``absl``
logger each time it looks for a dataset that is not prepared; kcnn says that
itself, so a filter on that logger drops those records and nothing else.
Without a network, urllib3 logs one "Retrying (Retry(total=N...))" warning per
URL and attempt while TFDS' downloader retries (about 40 lines for MNIST);
:func:`no_retry_warnings` drops them during a download, whose failure kcnn
reports in one line.
"""

from __future__ import annotations

import contextlib
import logging
import os
import sys
import tempfile

#: Message starts of TFDS log records kcnn answers itself (dataset not prepared yet).
TFDS_NOTICES = ("Variant folder",)


class _DropStartingWith(logging.Filter):
    """Drops the log records whose message (format string) starts with one of ``prefixes``."""

    def __init__(self, *prefixes: str):
        super().__init__()
        self.prefixes = prefixes

    def filter(self, record: logging.LogRecord) -> bool:
        return not str(record.msg).startswith(self.prefixes)


@contextlib.contextmanager
def no_retry_warnings():
    """Inside the block, urllib3's per-attempt "Retrying ..." warnings are dropped."""
    logger, drop = logging.getLogger("urllib3.connectionpool"), _DropStartingWith("Retrying")
    logger.addFilter(drop)
    try:
        yield
    finally:
        logger.removeFilter(drop)


@contextlib.contextmanager
def _stderr_to_file():
    """Send what C++ code writes to fd 2 into a temporary file; yields a function reading it back."""
    sys.stderr.flush()
    saved = os.dup(2)
    with tempfile.TemporaryFile(mode="w+b") as sink:
        os.dup2(sink.fileno(), 2)
        try:
            yield lambda: (sink.seek(0), sink.read().decode(errors="replace"))[1]
        finally:
            sys.stderr.flush()
            os.dup2(saved, 2)
            os.close(saved)


@contextlib.contextmanager
def native_notices_hidden():
    """Inside the block, what C++ code writes to file descriptor 2 is dropped (TensorFlow's start-up
    notices; LiteRT's "Created TensorFlow Lite XNNPACK delegate for CPU."); written to stderr after all
    when the block raises."""
    with _stderr_to_file() as captured:
        try:
            yield
        except BaseException:
            sys.stderr.write(captured())
            raise


def import_tensorflow():
    """Import TensorFlow without its start-up notices on stderr; returns the module.

    Raises:
        ImportError: TensorFlow cannot be imported (its captured output is written to stderr first).
    """
    if "tensorflow" not in sys.modules:
        with native_notices_hidden():
            import tensorflow  # noqa: F401
    logging.getLogger("absl").addFilter(_DROP)
    return sys.modules["tensorflow"]


_DROP = _DropStartingWith(*TFDS_NOTICES)

"""Crash-safe file writes: every file kcnn writes goes to a temporary name beside it, then is renamed
into place (``os.replace`` is atomic on POSIX and Windows), so a crash, a full disk or Ctrl-C leaves
either the previous file or the new one, never half of one."""

from __future__ import annotations

import contextlib
import json
import os
from pathlib import Path


@contextlib.contextmanager
def atomic_path(path: str | Path):
    """Yield a temporary path beside ``path`` to write to; on success it replaces ``path``.

    The temporary name keeps the suffix (``.model.partial.keras``), for writers that choose the
    format by it. On an exception the temporary file is removed and ``path`` is left as it was.
    Parent folders are made.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.stem}.partial{path.suffix}")
    try:
        yield tmp
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def write_text(path: str | Path, text: str) -> Path:
    """Write ``text`` to ``path`` atomically; returns ``path``."""
    with atomic_path(path) as tmp:
        tmp.write_text(text)
    return Path(path)


def write_json(path: str | Path, obj, **dumps) -> Path:
    """Write ``obj`` as indented JSON (keys sorted unless ``sort_keys=False``) atomically; returns ``path``."""
    return write_text(path, json.dumps(obj, **{"indent": 2, "sort_keys": True, **dumps}) + "\n")

"""Durable file operations: a rename is only durable once its directory is fsynced."""

from __future__ import annotations

import os
from pathlib import Path


def fsync_dir(folder: Path) -> None:
    """Flush a directory's entries (a rename or a new file in it) to disk; a no-op where the OS
    cannot open directories (Windows)."""
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)

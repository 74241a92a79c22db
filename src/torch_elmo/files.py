"""Writing files so that nothing is lost: a new file appears whole or not at all, with the mode
the user's umask gives new files (a temporary file's own mode is private to its owner)."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path


def umask() -> int:
    """The process's umask: read from /proc where it is there (setting it to read it back, the
    only other way, briefly changes it for every thread)."""
    try:
        with open("/proc/self/status", encoding="ascii") as f:
            for line in f:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except (OSError, ValueError, IndexError):
        pass
    mask = os.umask(0)
    os.umask(mask)
    return mask


def make_readable(path: str | os.PathLike, directory: bool = False) -> None:
    """The mode the umask gives a new file (0o666) or folder (0o777), as open() would."""
    os.chmod(path, (0o777 if directory else 0o666) & ~umask())


class atomic_path:
    """A temporary path beside `path` that replaces it on success and vanishes on failure, so
    that an interrupted write (a full disk, a kill) never leaves a file that looks complete and
    never damages the file it replaces."""

    def __init__(self, path: str | os.PathLike):
        self.path = Path(path)

    def __enter__(self) -> str:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd, self.tmp = tempfile.mkstemp(prefix=f".{self.path.name}.", suffix=".tmp", dir=self.path.parent)
        os.close(fd)
        return self.tmp

    def __exit__(self, exc_type, exc, tb) -> None:
        try:
            if exc_type is None:
                make_readable(self.tmp)
                with open(self.tmp, "rb") as f:  # on disk before the rename makes it the file
                    os.fsync(f.fileno())
                os.replace(self.tmp, self.path)
        finally:
            if os.path.exists(self.tmp):  # the write or the rename failed
                os.unlink(self.tmp)

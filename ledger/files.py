"""Small files written so that a crash leaves the old contents or the new, never part:
key files, and a witness's state. Each is synced, its directory too, before it is
relied on."""

from __future__ import annotations

import contextlib
import errno
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path

_NO_LINKS = {errno.EPERM, errno.ENOTSUP, errno.EOPNOTSUPP, errno.EXDEV, errno.ENOSYS}


def create_once(path: Path, data: bytes) -> bool:
    """Write `data` to a new file at `path` (0600), whole or not at all: False if there
    is one already.

    The bytes are synced in a private file beside it before a hard link gives them the
    name, which fails if the name is taken: a reader never finds the file half written,
    and of two writers only one thinks its bytes are there. Where hard links cannot be
    made, the file is created exclusively under its name instead.
    """
    with _synced_beside(path, data) as tmp:
        try:
            os.link(tmp, path)
        except FileExistsError:
            return False
        except OSError as e:
            if e.errno not in _NO_LINKS:
                raise
            return _create_in_place(path, data)
    sync_directory(path.parent)
    return True


def replace(path: Path, data: bytes) -> None:
    """Replace `path` with `data`: after a crash at any point it holds the old bytes or
    the new, and the new once this returns."""
    with _synced_beside(path, data) as tmp:
        os.replace(tmp, path)
    sync_directory(path.parent)


def sync_directory(directory: Path) -> None:
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


@contextlib.contextmanager
def _synced_beside(path: Path, data: bytes) -> Iterator[str]:
    """A private (0600) file in `path`'s directory holding `data` on disk, removed
    afterwards unless it was renamed."""
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".new")
    try:
        _write_synced(fd, data)
        yield tmp
    finally:
        with contextlib.suppress(OSError):
            os.unlink(tmp)


def _create_in_place(path: Path, data: bytes) -> bool:
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        return False
    _write_synced(fd, data)
    sync_directory(path.parent)
    return True


def _write_synced(fd: int, data: bytes) -> None:
    """Write `data` to the new file `fd` and close it, on disk when this returns."""
    with os.fdopen(fd, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())

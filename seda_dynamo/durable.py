"""Small files a node must never lose or half-write: its data incarnation, its counters,
and the gossip stage's view of the cluster (``FileStore``, a ``membership.ViewStore``).

Support for paper section 4.4 (data versioning): the actor ids a node stamps versions with
are built from values kept here, and a node must never issue the same (actor, counter)
pair twice, even across crashes, so every write here is atomic (write, fsync, rename,
fsync the directory).
"""

from __future__ import annotations

import fcntl
import os
import threading
from collections.abc import Callable
from pathlib import Path


def write_atomically(path: Path, text: str) -> None:
    """Replace ``path`` with ``text``: after a crash the file holds the old or the new text.

    The temporary file is this writer's own (process and thread in its name), so two
    writers never write into one another's half-made file."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{threading.get_ident()}.tmp")
    with open(tmp, "w") as fh:
        fh.write(text)
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(tmp, path)
    dir_fd = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)


def bump_counter(path: Path, after_read: Callable[[int], None] | None = None) -> int:
    """Durably add one to the counter stored in ``path`` (0 when missing) and return it.

    A value returned once is never returned again for the same file, whatever crashes,
    and whatever other processes or threads bump it at the same moment: the
    read-modify-write holds an exclusive ``flock`` on ``path.lock``. ``after_read`` (a
    test's hook) runs between the read and the write, holding the lock.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path.with_name(path.name + ".lock"), os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        try:
            value = int(path.read_text().strip() or "0")
        except FileNotFoundError:
            value = 0
        except ValueError as exc:
            raise ValueError(f"{path} does not hold a counter: {exc}") from None
        if after_read is not None:
            after_read(value)
        value += 1
        write_atomically(path, str(value))
        return value
    finally:
        os.close(fd)  # releases the lock


class FileStore:
    """A ``membership.ViewStore`` in a file, replaced whole (write, fsync, rename)."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def load(self) -> bytes | None:
        try:
            return self.path.read_bytes()
        except FileNotFoundError:
            return None

    def save(self, data: bytes) -> None:
        tmp = self.path.with_suffix(".tmp")
        with open(tmp, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, self.path)

    def __str__(self) -> str:
        return str(self.path)

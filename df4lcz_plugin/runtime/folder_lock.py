"""One process at a time per folder: an OS file lock in a file beside the folder, ``<parent>/.lock-<name>``.

The dependency installer holds it on its ``.deps/py<XY>`` (``dependencies``), the command line on its work folder
(``cli``). The operating system ends the lock with the process that holds it, however that process ends (SIGKILL
included), and with the children that inherited its descriptor (the installer's pip): a lock file left by a run
that is gone is taken over, not obeyed. The file records its holder (process id, host, start time), so that a
process refused can name it; the holder deletes the file when it lets go. POSIX: ``flock``; Windows:
``msvcrt.locking`` of one byte far beyond the record, which thus stays readable to the others.
"""

import contextlib
import datetime
import errno
import json
import os
import socket
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path

if sys.platform == "win32":
    import msvcrt
else:
    import fcntl

#: Windows: where the locked byte lies (locks there are mandatory; the record before it stays readable).
_WINDOWS_LOCK_OFFSET = 1 << 30
#: How long a refused process waits for a holder that has just taken the lock to write its record.
_RECORD_WAIT_S = 1.0


@dataclass(frozen=True)
class Holder:
    """Who holds a lock: process id, host name, start time (ISO 8601, local time with its offset)."""

    pid: int
    host: str
    started: str

    def __str__(self) -> str:
        return f"process {self.pid} on {self.host}, started {self.started}"


class LockError(RuntimeError):
    """The folder cannot be locked: the file system offers no file locks, or the lock file cannot be made."""


class Busy(LockError):
    """Another process holds the lock. ``holder``: its record (a Holder), or None when it wrote none yet."""

    def __init__(self, folder: Path, holder: Holder | None) -> None:
        self.folder, self.holder = folder, holder
        super().__init__(f"{folder} is locked by {holder or 'a process that has just taken the lock'}.")


def lock_path(folder: Path) -> Path:
    """The lock file of ``folder``: ``.lock-<name>`` beside it."""
    folder = Path(folder)
    return folder.parent / f".lock-{folder.name}"


class FolderLock:
    """The lock of ``folder``, taken when made (the parent folder is made if missing); a context manager that
    lets it go on leaving. ``fd``: the lock file's descriptor, which a child process may inherit (POSIX) to keep
    holding the lock after this process is gone.

    Raises Busy, touching nothing, while another live process holds it; LockError if it cannot be taken at all.
    """

    def __init__(self, folder: Path) -> None:
        self.folder, self.path = Path(folder), lock_path(folder)
        self.fd: int | None = None
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            while self.fd is None:  # None: the holder deleted the file between our open and our lock; again
                self.fd = self._take()
            record = Holder(os.getpid(), socket.gethostname(),
                            datetime.datetime.now().astimezone().isoformat(timespec="seconds"))
            os.ftruncate(self.fd, 0)
            os.lseek(self.fd, 0, os.SEEK_SET)
            os.write(self.fd, json.dumps(asdict(record)).encode())
        except OSError as error:
            if self.fd is not None:
                self.release()
            raise LockError(f"Cannot lock {self.folder} with {self.path} ({error}).") from None

    def _take(self) -> int | None:
        """Open the lock file and lock it: its descriptor, or None (closed) if it is no longer the file at
        ``path``. Raises Busy, OSError."""
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT)
        try:
            _lock(fd)
        except OSError as error:
            if error.errno not in (errno.EAGAIN, errno.EWOULDBLOCK, errno.EACCES):
                os.close(fd)
                raise
            holder = _holder(fd)
            os.close(fd)
            raise Busy(self.folder, holder) from None
        if _is_at(fd, self.path):
            return fd
        os.close(fd)
        return None

    def release(self) -> None:
        """Let the lock go and delete its file. POSIX: deleted while still held (a process that opened it
        meanwhile sees that it is gone, ``_take``); Windows: after, and not while another process has it open."""
        fd = self.fd
        if fd is None:  # nothing to let go: a lock that was not taken has no file open
            return
        if sys.platform == "win32":
            os.lseek(fd, _WINDOWS_LOCK_OFFSET, os.SEEK_SET)
            msvcrt.locking(fd, msvcrt.LK_UNLCK, 1)
            os.close(fd)
            with contextlib.suppress(OSError):
                self.path.unlink()
        else:
            if _is_at(fd, self.path):  # not a newer lock file, had someone deleted ours
                self.path.unlink()
            os.close(fd)

    def __enter__(self) -> "FolderLock":
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.release()


def _lock(fd: int) -> None:
    """Lock the open lock file ``fd`` without waiting; raises OSError (EAGAIN, EWOULDBLOCK or EACCES: held)."""
    if sys.platform == "win32":
        os.lseek(fd, _WINDOWS_LOCK_OFFSET, os.SEEK_SET)
        msvcrt.locking(fd, msvcrt.LK_NBLCK, 1)
    else:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)


def _is_at(fd: int, path: Path) -> bool:
    """Whether the open file ``fd`` is the file at ``path`` (not one deleted since it was opened)."""
    try:
        return os.path.samestat(os.fstat(fd), os.stat(path))
    except FileNotFoundError:
        return False


def _holder(fd: int) -> Holder | None:
    """The record in the lock file ``fd`` that another process holds; None if it has written none within
    ``_RECORD_WAIT_S`` (it has just taken the lock)."""
    deadline = time.monotonic() + _RECORD_WAIT_S
    while True:
        os.lseek(fd, 0, os.SEEK_SET)
        with contextlib.suppress(ValueError, TypeError):
            return Holder(**json.loads(os.read(fd, 4096)))
        if time.monotonic() > deadline:
            return None
        time.sleep(0.05)

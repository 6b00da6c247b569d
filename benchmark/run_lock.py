"""The lock that lets one run at a time write into a run folder.

`RunLock` holds an `fcntl.flock` on `RUN_DIR/.lock` (the pid inside is only for the message
to a second run). The kernel drops an flock when its process dies, however it dies, so a
lock left by a killed run never blocks.
"""

from __future__ import annotations

import contextlib
import os
from pathlib import Path

from benchmark.errors import RunFolderError

try:
    import fcntl
except ImportError:  # Windows: no flock; runs are then not protected against each other
    fcntl = None

LOCK_NAME = ".lock"


class RunLock:
    """`with RunLock(run_dir):` -- exclusive right to write into run_dir, or RunFolderError."""

    def __init__(self, run_dir: str | Path):
        self.path = Path(run_dir) / LOCK_NAME
        self._fd: int | None = None

    def acquire(self) -> RunLock:
        if fcntl is None:
            return self
        while True:
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError:
                holder = os.read(fd, 100).decode(errors="replace").strip() or "unknown"
                os.close(fd)
                raise RunFolderError(
                    f"another run (pid {holder}) is writing into {self.path.parent}; wait for it to "
                    f"finish, or choose another --out folder") from None
            # The previous holder unlinks the file as it releases: if we locked a file that is
            # no longer at this path, a third run could lock the new one too, so start again.
            try:
                same = os.path.samestat(os.fstat(fd), os.stat(self.path))
            except FileNotFoundError:
                same = False
            if same:
                break
            os.close(fd)
        os.ftruncate(fd, 0)
        os.write(fd, f"{os.getpid()}\n".encode())
        self._fd = fd
        return self

    def release(self) -> None:
        if self._fd is None:
            return
        with contextlib.suppress(FileNotFoundError):
            self.path.unlink()  # while still holding the lock; see acquire
        os.close(self._fd)  # closing drops the flock
        self._fd = None

    def __enter__(self) -> RunLock:
        return self.acquire()

    def __exit__(self, *exc_info) -> None:
        self.release()

"""The files of a run folder: the writer's lock, atomic writes, and the integrity of records.

`records.csv` grows chunk by chunk; `run.json` lists each chunk (its byte range and sha256)
only once the chunk's bytes are on disk. So the records a run vouches for are exactly the
bytes `[0, records_bytes)` of `records.csv`, and `verify_records` checks them chunk by chunk:
a file shorter than that, or a chunk whose hash differs, was truncated or edited and is
refused, naming the file. Bytes after the last listed chunk are an interrupted append: they
are ignored by the report and dropped on resume.

Only one process writes into a run folder at a time. `RunLock` holds an `fcntl.flock` on
`RUN_DIR/.lock` (the pid inside is only for the message to a second run). The kernel drops an
flock when its process dies, however it dies, so a lock left by a killed run never blocks.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shutil
import tempfile
from pathlib import Path

from benchmark.errors import ConfigError

try:
    import fcntl
except ImportError:  # Windows: no flock; runs are then not protected against each other
    fcntl = None

RUN_FORMAT = "oneshot-benchmark/run/v1"
LOCK_NAME = ".lock"


class RunFolderError(ConfigError):
    """A run folder that is locked by another run, or whose records cannot be trusted."""


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


def write_atomically(path: Path, content: str | bytes) -> None:
    """Write to a temporary file in the same folder, flush it to disk, then rename it over `path`."""
    path = Path(path)
    data = content.encode("utf-8") if isinstance(content, str) else content
    temporary = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        with open(temporary, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(temporary, path)
    finally:
        temporary.unlink(missing_ok=True)


@contextlib.contextmanager
def staged_outputs(out_dir: Path):
    """Yield an empty staging folder inside out_dir; on success move its files into out_dir.

    Each file appears complete or not at all (a rename), so an interrupted report never
    leaves a half-written summary that looks finished. On an error nothing is moved.
    """
    out_dir = Path(out_dir)
    staging = Path(tempfile.mkdtemp(dir=out_dir, prefix=".staging-"))
    try:
        yield staging
        for path in sorted(staging.iterdir()):
            if path.is_file():
                os.replace(path, out_dir / path.name)
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def read_manifest(run_dir: Path) -> dict:
    path = Path(run_dir) / "run.json"
    try:
        manifest = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as error:
        raise RunFolderError(f"{path} is unreadable ({error}): choose a new --out folder") from None
    if not isinstance(manifest, dict) or manifest.get("format") != RUN_FORMAT:
        raise RunFolderError(f"{path} is not a run manifest of this project")
    return manifest


def verify_records(run_dir: Path, manifest: dict) -> tuple[bytes, int]:
    """(the listed bytes of records.csv, the number of unlisted bytes after them).

    Raises RunFolderError, naming the file, when records.csv is shorter than run.json says or
    any listed chunk's bytes do not hash to the sha256 run.json recorded for them.
    """
    records_path = Path(run_dir) / "records.csv"
    chunks, listed = manifest.get("chunks"), manifest.get("records_bytes")
    if not isinstance(chunks, list) or not isinstance(listed, int):
        raise RunFolderError(f"{Path(run_dir) / 'run.json'} has no valid list of record chunks")
    try:
        with open(records_path, "rb") as handle:
            data = handle.read()
    except FileNotFoundError:
        if listed == 0:
            return b"", 0
        raise RunFolderError(f"{records_path} is missing but run.json lists {len(chunks)} chunks of "
                             f"records: the run folder was damaged; start a new --out folder") from None
    if len(data) < listed:
        raise RunFolderError(f"{records_path} was truncated: it has {len(data)} bytes, run.json lists "
                             f"{listed}; start a new --out folder")
    position = 0
    for index, chunk in enumerate(chunks):
        try:
            start, end = chunk["bytes"]
            expected = chunk["sha256"]
        except (KeyError, TypeError, ValueError):
            raise RunFolderError(f"{Path(run_dir) / 'run.json'}: chunk {index} is malformed") from None
        if start != position or not start <= end <= listed:
            raise RunFolderError(f"{Path(run_dir) / 'run.json'}: chunk {index} has byte range "
                                 f"[{start}, {end}), expected it to start at {position}")
        if hashlib.sha256(data[start:end]).hexdigest() != expected:
            raise RunFolderError(
                f"{records_path} was edited: bytes {start}-{end} ({_describe(chunk)}) do not match "
                f"the sha256 run.json recorded; rerun those results into a new --out folder")
        position = end
    if position != listed:
        raise RunFolderError(f"{Path(run_dir) / 'run.json'}: its chunks cover {position} bytes, "
                             f"not the {listed} it lists")
    return data[:listed], len(data) - listed


def _describe(chunk: dict) -> str:
    return (f"{chunk.get('method')} seed {chunk.get('seed')} on {chunk.get('task_set')} "
            f"{chunk.get('n_way')}-way {chunk.get('k_shot')}-shot")

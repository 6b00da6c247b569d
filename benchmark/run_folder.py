"""A run folder: the one place that knows its files (records.csv, run.json, the writer's lock).

`records.csv` grows chunk by chunk; `run.json` (benchmark/run_manifest.py) lists each chunk
(its byte range and sha256) only once the chunk's bytes are on disk. So the records a run
vouches for are exactly the bytes `[0, records_bytes)` of `records.csv`, and they are
checked chunk by chunk on every read: a file shorter than that, or a chunk whose hash
differs, was truncated or edited and is refused, naming the file. Bytes after the last
listed chunk are an interrupted append: the report leaves them out and a resume drops them.

Only one process writes into a run folder at a time, through a `RunWriter` from
`RunFolder.writer(...)`. It holds an `fcntl.flock` on `RUN_DIR/.lock` (the pid inside is only
for the message to a second run); the kernel drops an flock when its process dies, however
it dies, so a lock left by a killed run never blocks.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import json
import os
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pandas as pd

from benchmark.errors import ConfigError, RunFolderError
from benchmark.files import write_atomically
from benchmark.run_manifest import Chunk, MethodEntry, RunManifest

try:
    import fcntl
except ImportError:  # Windows: no flock; runs are then not protected against each other
    fcntl = None

RECORDS_NAME, MANIFEST_NAME, LOCK_NAME = "records.csv", "run.json", ".lock"
# One row per query. `episode` and `query` index the task set's episode ids (run.json has their hash).
RECORD_DTYPES = {"run_id": str, "method": str, "seed": np.int64, "task_set": str, "split": str,
                 "protocol": str, "n_way": np.int64, "k_shot": np.int64, "episode": np.int64,
                 "query": np.int64, "label": np.int64, "predicted": np.int64, "correct": np.int8}
RECORD_COLUMNS = list(RECORD_DTYPES)


def records_frame(run_id: str, method: str, seed: int, task_set, scores: np.ndarray) -> pd.DataFrame:
    """The records of one task set's scores (E, Q, N): one row per query."""
    episodes = task_set.episodes
    n_episodes, n_queries = episodes.query.shape
    predicted = scores.argmax(axis=-1)  # ties go to the lowest index; true positions are random
    labels = episodes.query_label
    return pd.DataFrame({
        "run_id": run_id, "method": method, "seed": seed, "task_set": task_set.name,
        "split": task_set.split, "protocol": episodes.protocol, "n_way": episodes.n_way,
        "k_shot": episodes.k_shot,
        "episode": np.repeat(np.arange(n_episodes), n_queries),
        "query": np.tile(np.arange(n_queries), n_episodes),
        "label": labels.reshape(-1), "predicted": predicted.reshape(-1),
        "correct": (predicted == labels).reshape(-1).astype(np.int8),
    }, columns=RECORD_COLUMNS)


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


class RunFolder:
    """Reads a run folder; `writer()` is the only way to change one."""

    def __init__(self, path: str | Path):
        self.path = Path(path)
        self.records_path = self.path / RECORDS_NAME
        self.manifest_path = self.path / MANIFEST_NAME

    def has_manifest(self) -> bool:
        return self.manifest_path.is_file()

    def has_records(self) -> bool:
        return self.records_path.is_file() and self.records_path.stat().st_size > 0

    def read_manifest(self) -> RunManifest:
        try:
            raw = json.loads(self.manifest_path.read_text(encoding="utf-8"))
        except (OSError, ValueError) as error:
            raise RunFolderError(f"{self.manifest_path} is unreadable ({error}): choose a new --out folder") from None
        return RunManifest.from_json(raw, str(self.manifest_path))

    def verified_records(self, manifest: RunManifest) -> tuple[bytes, int]:
        """(the listed bytes of records.csv, the number of unlisted bytes after them).

        Raises RunFolderError, naming the file, when records.csv is shorter than run.json says
        or any listed chunk's bytes do not hash to the sha256 run.json recorded for them.
        """
        try:
            data = self.records_path.read_bytes()
        except FileNotFoundError:
            if manifest.records_bytes == 0:
                return b"", 0
            raise RunFolderError(f"{self.records_path} is missing but run.json lists {len(manifest.chunks)} "
                                 f"chunks of records: the run folder was damaged; start a new --out folder") from None
        listed = manifest.records_bytes
        if len(data) < listed:
            raise RunFolderError(f"{self.records_path} was truncated: it has {len(data)} bytes, run.json lists "
                                 f"{listed}; start a new --out folder")
        position = 0
        for index, chunk in enumerate(manifest.chunks):
            start, end = chunk.bytes
            if start != position or not start <= end <= listed:
                raise RunFolderError(f"{self.manifest_path}: chunk {index} has byte range [{start}, {end}), "
                                     f"expected it to start at {position}")
            if hashlib.sha256(data[start:end]).hexdigest() != chunk.sha256:
                raise RunFolderError(
                    f"{self.records_path} was edited: bytes {start}-{end} ({chunk.describe()}) do not match "
                    f"the sha256 run.json recorded; rerun those results into a new --out folder")
            position = end
        if position != listed:
            raise RunFolderError(f"{self.manifest_path}: its chunks cover {position} bytes, not the {listed} it lists")
        return data[:listed], len(data) - listed

    def read_records(self, log=None) -> pd.DataFrame:
        """The records, after checking them against the chunk hashes in run.json.

        Rows after the last listed chunk (an append cut short) are left out, and `log` says so.
        A records.csv without run.json is read unchecked, and `log` says that too.
        """
        log = log or (lambda message: None)
        if not self.records_path.exists():
            raise ConfigError(f"{self.records_path} not found: give a run folder written by run_benchmark.py")
        if self.has_manifest():
            content, unlisted = self.verified_records(self.read_manifest())
            if not content:
                raise ConfigError(f"{self.records_path} holds no finished records yet: resume the run with "
                                  f"`python run_benchmark.py --resume {self.path}`")
            if unlisted:
                log(f"note: {self.records_path} ends with {unlisted} bytes of an unfinished chunk, left out; "
                    f"resume the run to complete it")
            source = io.BytesIO(content)
        else:
            log(f"note: {self.manifest_path} not found: the records in {self.records_path} cannot be checked "
                f"against their hashes")
            source = self.records_path
        try:
            records = pd.read_csv(source, dtype=RECORD_DTYPES)
        except (ValueError, pd.errors.ParserError) as error:
            raise ConfigError(f"{self.records_path} is malformed ({str(error).splitlines()[0]}): rerun into that "
                              f"folder to resume, or start a new one") from None
        missing = set(RECORD_DTYPES) - set(records.columns)
        if missing:
            raise ConfigError(f"{self.records_path} lacks the columns {', '.join(sorted(missing))}")
        return records

    @contextlib.contextmanager
    def writer(self, fresh: RunManifest, log=None) -> Iterator[RunWriter]:
        """Lock the folder and yield its writer: on the manifest already there when `fresh`'s run
        may continue it (a resume), else on `fresh` (ConfigError naming what differs)."""
        log = log or (lambda message: None)
        self.path.mkdir(parents=True, exist_ok=True)
        with RunLock(self.path):  # before reading run.json: a second run must not truncate the first's
            manifest = self._resumed(fresh, log) if self.has_manifest() else self._started(fresh)
            yield RunWriter(self, manifest)

    def _started(self, fresh: RunManifest) -> RunManifest:
        if self.records_path.exists():
            self.records_path.unlink()  # rows without a manifest cannot be trusted
        return fresh

    def _resumed(self, fresh: RunManifest, log) -> RunManifest:
        previous = self.read_manifest()
        problem = previous.resume_problem(fresh)
        if problem:
            raise ConfigError(f"{self.path} holds a run with {problem}: choose a new --out folder")
        # Keep only chunks whose bytes are intact; drop rows appended after the last listed one.
        _, unlisted = self.verified_records(previous)
        if unlisted:
            with open(self.records_path, "r+b") as handle:
                handle.truncate(previous.records_bytes)
        previous.methods_requested = list(dict.fromkeys([*previous.methods_requested, *fresh.methods_requested]))
        previous.seeds = list(dict.fromkeys([*previous.seeds, *fresh.seeds]))
        log(f"resuming {self.path}: {len(previous.chunks)} chunks already done"
            + (f", {unlisted} bytes of an unfinished chunk dropped" if unlisted else ""))
        return previous


class RunWriter:
    """Changes a locked run folder: appends chunks of records and saves run.json after each."""

    def __init__(self, folder: RunFolder, manifest: RunManifest):
        self.folder = folder
        self.manifest = manifest

    def record_method(self, name: str, source: str, params: dict, capabilities: dict, device: str) -> None:
        """Where a method came from and how it is set up, saved before it runs (so that a method
        that fails is traced as well as one that works).

        A folder holding results of the method under other hyperparameters is refused; one where
        it only failed before takes the new ones (fixing a hyperparameter is a resume).
        """
        entry = self.manifest.methods.setdefault(name, MethodEntry())
        if self.manifest.has_results(name) and entry.params is not None and entry.params != params:
            raise ConfigError(f"{self.folder.path} holds results of {name!r} with other hyperparameters "
                              f"({entry.params}): choose a new --out folder")
        entry.source, entry.params, entry.capabilities, entry.device = source, params, capabilities, device

    def append(self, records: pd.DataFrame) -> None:
        """Append one chunk's rows, then list it in run.json: a chunk not listed is not done."""
        manifest = self.manifest
        text = records.to_csv(header=not manifest.chunks, index=False, lineterminator="\n").encode()
        start = manifest.records_bytes
        with open(self.folder.records_path, "ab") as handle:
            handle.write(text)
            handle.flush()
            os.fsync(handle.fileno())
        first = records.iloc[0]
        manifest.chunks.append(Chunk(
            method=str(first["method"]), seed=int(first["seed"]), task_set=str(first["task_set"]),
            n_way=int(first["n_way"]), k_shot=int(first["k_shot"]), rows=len(records),
            bytes=(start, start + len(text)), sha256=hashlib.sha256(text).hexdigest()))
        manifest.records_bytes = start + len(text)
        self.save()

    def record_components(self, built: dict[str, float], method: str) -> None:
        """Shared parts that `method`'s fit built: their seconds, kept apart from its fit time."""
        for key, seconds in built.items():
            self.manifest.components[key] = {"seconds": round(seconds, 3), "built_during": method}

    def record_outcome(self, name: str, label: str, seed: int, timing: dict | None, failure: str | None) -> None:
        """A method's times for one seed, or why it failed; a failure of an earlier attempt is cleared."""
        if timing is not None:
            self.manifest.methods[name].timing[str(seed)] = timing
        if failure is None:
            self.manifest.failures.pop(label, None)
        else:
            self.manifest.failures[label] = failure
        self.save()

    def save(self) -> None:
        write_atomically(self.folder.manifest_path, json.dumps(self.manifest.to_json(), indent=1) + "\n")

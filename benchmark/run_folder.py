"""A run folder: the one place that knows its layout.

    RUN_DIR/run.json                     the manifest (benchmark/run_manifest.py)
    RUN_DIR/records/CHUNK.parquet        one file per finished (method, seed, task set, N, k)
    RUN_DIR/episodes/TASKSET.npz         the episode ids of each task set
    RUN_DIR/.lock                        held by the run writing into it (benchmark/run_lock.py)

(The file formats are in benchmark/record_files.py.) A chunk file is written whole (atomically)
and only then listed in run.json with its sha256, so the records a run vouches for are exactly
the listed files, checked on every read: a missing file, or one whose bytes no longer match,
is refused, naming it. A file not listed is an append an interruption cut short: the report
leaves it out and a resume deletes it.

Only one process writes into a run folder at a time, through the `RunWriter` that
`RunFolder.writer(...)` yields under the folder's lock.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import zipfile
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pandas as pd

from benchmark import record_files
from benchmark.errors import ConfigError, RunFolderError
from benchmark.files import write_atomically
from benchmark.run_lock import RunLock
from benchmark.run_manifest import Chunk, MethodEntry, RunManifest, task_set_key
from tasks.episodes import ids_sha256

MANIFEST_NAME, RECORDS_DIR, EPISODES_DIR = "run.json", "records", "episodes"
RECORD_COLUMNS = record_files.RECORD_COLUMNS
OLD_RECORDS = "records.csv"  # run format v1


class RunFolder:
    """Reads a run folder; `writer()` is the only way to change one."""

    def __init__(self, path: str | Path):
        self.path = Path(path)
        self.manifest_path = self.path / MANIFEST_NAME

    def has_manifest(self) -> bool:
        return self.manifest_path.is_file()

    def has_records(self) -> bool:
        return self.has_manifest() and bool(self.read_manifest().chunks)

    def read_manifest(self) -> RunManifest:
        try:
            raw = json.loads(self.manifest_path.read_text(encoding="utf-8"))
        except (OSError, ValueError) as error:
            raise RunFolderError(f"{self.manifest_path} is unreadable ({error}): choose a new --out folder") from None
        return RunManifest.from_json(raw, str(self.manifest_path))

    def verified(self, relative: str, sha256: str) -> bytes:
        """A listed file's bytes, checked against the sha256 run.json holds for them."""
        path = self.path / relative
        try:
            content = path.read_bytes()
        except FileNotFoundError:
            raise RunFolderError(f"{path} is missing but run.json lists it: the run folder was damaged; "
                                 f"run those results again into a new --out folder") from None
        if hashlib.sha256(content).hexdigest() != sha256:
            raise RunFolderError(f"{path} was edited: its bytes do not match the sha256 run.json recorded; "
                                 f"run those results again into a new --out folder")
        return content

    def unlisted(self, manifest: RunManifest) -> list[Path]:
        """Files in records/ that run.json does not list: appends an interruption cut short."""
        listed = {chunk.file for chunk in manifest.chunks}
        folder = self.path / RECORDS_DIR
        return sorted(path for path in folder.iterdir() if f"{RECORDS_DIR}/{path.name}" not in listed) \
            if folder.is_dir() else []

    def read_records(self, log=None) -> pd.DataFrame:
        """The records of every listed chunk, checked against run.json's hashes (RECORD_COLUMNS).

        Chunk files the manifest does not list are left out, and `log` says so.
        """
        log = log or (lambda message: None)
        if (self.path / OLD_RECORDS).exists() and not self.has_manifest():
            raise ConfigError(f"{self.path} holds a records.csv without run.json: a run folder of an earlier "
                              f"version of this harness, or damaged; run it again into a new --out folder")
        if not self.has_manifest():
            raise ConfigError(f"{self.manifest_path} not found: give a run folder written by run_benchmark.py")
        manifest = self.read_manifest()
        if not manifest.chunks:
            raise ConfigError(f"{self.path} holds no finished records yet: resume the run with "
                              f"`python run_benchmark.py --resume {self.path}`")
        unlisted = self.unlisted(manifest)
        if unlisted:
            log(f"note: {len(unlisted)} file(s) in {self.path / RECORDS_DIR} are not listed in run.json (an "
                f"interrupted write), left out; resume the run to complete it")
        chunks = []
        for chunk in manifest.chunks:
            try:
                chunks.append(record_files.read_chunk(self.verified(chunk.file, chunk.sha256)))
            except (ValueError, OSError) as error:
                raise RunFolderError(f"{self.path / chunk.file} is not a chunk of records ({error})") from None
        return record_files.records_frame(manifest.run_id, chunks)

    def read_episodes(self, key: str) -> dict[str, np.ndarray]:
        """The episode ids of task set `key` ('cross/5way/1shot'), checked against run.json."""
        manifest = self.read_manifest()
        if key not in manifest.task_sets:
            raise ConfigError(f"{self.manifest_path} has no task set {key!r}: it has {', '.join(manifest.task_sets)}")
        path = self.path / episodes_file(key)
        try:
            arrays = record_files.read_episodes(path.read_bytes())
        except (OSError, ValueError, KeyError, EOFError, zipfile.BadZipFile) as error:
            raise RunFolderError(f"{path} is unreadable ({type(error).__name__}: {error})") from None
        if ids_sha256(*(arrays[name] for name in record_files.EPISODE_ARRAYS)) != manifest.task_sets[key]:
            raise RunFolderError(f"{path} does not hold the episodes run.json hashed")
        return arrays

    @contextlib.contextmanager
    def writer(self, fresh: RunManifest, log=None) -> Iterator[RunWriter]:
        """Lock the folder and yield its writer: on the manifest already there when `fresh`'s run
        may continue it (a resume), else on `fresh` (ConfigError naming what differs)."""
        log = log or (lambda message: None)
        self.path.mkdir(parents=True, exist_ok=True)
        with RunLock(self.path):  # before reading run.json: a second run must not delete the first's files
            manifest = self._resumed(fresh, log) if self.has_manifest() else self._started(fresh)
            yield RunWriter(self, manifest)

    def _started(self, fresh: RunManifest) -> RunManifest:
        for path in self.unlisted(fresh):  # files without a manifest cannot be trusted
            path.unlink()
        return fresh

    def _resumed(self, fresh: RunManifest, log) -> RunManifest:
        previous = self.read_manifest()
        problem = previous.resume_problem(fresh)
        if problem:
            raise ConfigError(f"{self.path} holds a run with {problem}: choose a new --out folder")
        for chunk in previous.chunks:  # finished chunks are kept only when their bytes are intact
            self.verified(chunk.file, chunk.sha256)
        dropped = self.unlisted(previous)
        for path in dropped:
            path.unlink()
        previous.methods_requested = list(dict.fromkeys([*previous.methods_requested, *fresh.methods_requested]))
        previous.seeds = list(dict.fromkeys([*previous.seeds, *fresh.seeds]))
        log(f"resuming {self.path}: {len(previous.chunks)} chunks already done"
            + (f", {len(dropped)} unfinished file(s) dropped" if dropped else ""))
        return previous


def episodes_file(key: str) -> str:
    """Where the episodes of task set `key` ('cross/5way/1shot') are, relative to the run folder."""
    return f"{EPISODES_DIR}/{key.replace('/', '-')}.npz"


class RunWriter:
    """Changes a locked run folder: writes chunk files and saves run.json after each."""

    def __init__(self, folder: RunFolder, manifest: RunManifest):
        self.folder = folder
        self.manifest = manifest
        self._episodes_written: set[str] = set()

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

    def append(self, method: str, seed: int, task_set, scores: np.ndarray) -> None:
        """Write one task set's records, then list them in run.json: a chunk not listed is not done."""
        episodes = task_set.episodes
        key = task_set_key(task_set.name, episodes.n_way, episodes.k_shot)
        self._write_episodes(key, episodes)
        constants = {"method": method, "seed": seed, "task_set": task_set.name, "split": task_set.split,
                     "protocol": episodes.protocol, "n_way": episodes.n_way, "k_shot": episodes.k_shot}
        content = record_files.chunk_bytes(constants, scores, episodes.query_label)
        relative = f"{RECORDS_DIR}/{method}-s{seed}-{key.replace('/', '-')}.parquet"
        (self.folder.path / RECORDS_DIR).mkdir(exist_ok=True)
        write_atomically(self.folder.path / relative, content)
        self.manifest.chunks.append(Chunk(
            method=method, seed=seed, task_set=task_set.name, n_way=episodes.n_way, k_shot=episodes.k_shot,
            rows=episodes.query.size, file=relative, sha256=hashlib.sha256(content).hexdigest()))
        self.save()

    def _write_episodes(self, key: str, episodes) -> None:
        """Once per task set and writer: the same for every method (run.json holds their hash)."""
        if key not in self._episodes_written:
            (self.folder.path / EPISODES_DIR).mkdir(exist_ok=True)
            write_atomically(self.folder.path / episodes_file(key), record_files.episodes_bytes(episodes))
            self._episodes_written.add(key)

    def record_components(self, built: dict[str, float], method: str) -> None:
        """Shared parts that `method`'s fit built: their seconds, kept apart from its fit time."""
        for key, seconds in built.items():
            self.manifest.components[key] = {"seconds": round(seconds, 3), "built_during": method}

    def record_outcome(self, name: str, label: str, key: str, timing: dict | None, failure: str | None) -> None:
        """A method's times for one fit (`key`: seed/training split), or why it failed; a failure
        of an earlier attempt is cleared."""
        if timing is not None:
            self.manifest.methods[name].timing[key] = timing
        if failure is None:
            self.manifest.failures.pop(label, None)
        else:
            self.manifest.failures[label] = failure
        self.save()

    def save(self) -> None:
        write_atomically(self.folder.manifest_path, json.dumps(self.manifest.to_json(), indent=1) + "\n")

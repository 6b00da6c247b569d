"""Lake et al.'s 20 official one-shot runs (all_runs.zip) as image ids of the evaluation split.

The runs ship as PNGs, not ids, so each PNG is matched to the evaluation image with exactly
the same pixels; every one of the 800 is there (see shared/omniglot/README.md). The result
is a plain dict so that this module does not depend on how episode sets are represented.
"""

from __future__ import annotations

import re
import zipfile
import zlib
from pathlib import Path

import numpy as np

from benchmark.data import OmniglotSplit, ink_from_png
from benchmark.errors import DataError

N_RUNS = 20
N_WAY = 20
N_QUERY = 20
_LABEL_LINE = re.compile(r"(run\d\d/test/item(\d\d)\.png)\s+(run\d\d/training/class(\d\d)\.png)")
_READ_ERRORS = (OSError, ValueError, KeyError, EOFError, zipfile.BadZipFile, zlib.error, SyntaxError)


def load_official_runs(runs_zip: Path, evaluation: OmniglotSplit) -> dict[str, np.ndarray]:
    """{"support": (20, 20, 1), "query": (20, 20), "query_label": (20, 20)}, all int64.

    Run r is a 20-way 1-shot task: support[r, j, 0] is training/class{j+1:02d}.png,
    query[r, i] is test/item{i+1:02d}.png and query_label[r, i] the j of its true class.
    """
    runs_zip = Path(runs_zip)
    ids = _id_by_pixels(evaluation)
    support = np.empty((N_RUNS, N_WAY, 1), dtype=np.int64)
    query = np.empty((N_RUNS, N_QUERY), dtype=np.int64)
    query_label = np.empty((N_RUNS, N_QUERY), dtype=np.int64)
    try:
        with zipfile.ZipFile(runs_zip) as archive:
            for r in range(N_RUNS):
                run = f"run{r + 1:02d}"
                pairs = _read_class_labels(archive, runs_zip, run)
                for j in range(N_WAY):
                    member = f"{run}/training/class{j + 1:02d}.png"
                    support[r, j, 0] = _image_id(archive, runs_zip, member, ids)
                for i in range(N_QUERY):
                    query[r, i] = _image_id(archive, runs_zip, f"{run}/test/item{i + 1:02d}.png", ids)
                    query_label[r, i] = pairs[i]
    except _READ_ERRORS as error:
        raise DataError(f"cannot read the official runs {runs_zip} ({type(error).__name__}: {error}); "
                        "delete it and run `python run_benchmark.py download`") from None
    return {"support": support, "query": query, "query_label": query_label}


def _id_by_pixels(evaluation: OmniglotSplit) -> dict[bytes, int]:
    """Packed bitmap bytes -> image id. Packing makes the keys 8x smaller than raw pixels."""
    packed = np.packbits(evaluation.flat_images, axis=-1).reshape(len(evaluation.flat_images), -1)
    ids: dict[bytes, int] = {}
    for image_id, row in enumerate(packed):
        # Byte-identical drawings would be indistinguishable anyway; the first id stands for all.
        ids.setdefault(row.tobytes(), image_id)
    return ids


def _read_class_labels(archive: zipfile.ZipFile, runs_zip: Path, run: str) -> list[int]:
    """For each query item 1..20 (in order), the 0-based index of its true class."""
    name = f"{run}/class_labels.txt"
    if name not in archive.NameToInfo:
        raise DataError(f"{runs_zip} has no {name}: it is not the official all_runs.zip; "
                        "delete it and run `python run_benchmark.py download`")
    labels: dict[int, int] = {}
    for line in archive.read(name).decode("utf-8").splitlines():
        if not line.strip():
            continue
        match = _LABEL_LINE.fullmatch(line.strip())
        if match is None or not match.group(1).startswith(run) or not match.group(3).startswith(run):
            raise DataError(f"{runs_zip}: {name} has an unexpected line {line.strip()!r}; "
                            "delete it and run `python run_benchmark.py download`")
        labels[int(match.group(2)) - 1] = int(match.group(4)) - 1
    if sorted(labels) != list(range(N_QUERY)) or not all(0 <= j < N_WAY for j in labels.values()):
        raise DataError(f"{runs_zip}: {name} does not label items 01..{N_QUERY} with classes 01..{N_WAY}; "
                        "delete it and run `python run_benchmark.py download`")
    return [labels[i] for i in range(N_QUERY)]


def _image_id(archive: zipfile.ZipFile, runs_zip: Path, member: str, ids: dict[bytes, int]) -> int:
    if member not in archive.NameToInfo:
        raise DataError(f"{runs_zip} has no {member}: it is not the official all_runs.zip; "
                        "delete it and run `python run_benchmark.py download`")
    try:
        mask = ink_from_png(archive.read(member))
    except _READ_ERRORS as error:
        raise DataError(f"{runs_zip}: cannot read {member} ({type(error).__name__}: {error}); "
                        "delete it and run `python run_benchmark.py download`") from None
    image_id = ids.get(np.packbits(mask, axis=-1).tobytes())
    if image_id is None:
        raise DataError(f"{runs_zip}: {member} is not an image of the evaluation split: the runs file or "
                        "the data is not the standard Omniglot; run `python run_benchmark.py download`")
    return image_id


def official_episode_set(runs_zip: Path, evaluation: OmniglotSplit):
    """The 20 official runs as an EpisodeSet (protocol "official", no seed: they are fixed)."""
    from tasks.episodes import EpisodeSet

    runs = load_official_runs(runs_zip, evaluation)
    return EpisodeSet("official", N_WAY, 1, N_QUERY // N_WAY, None, evaluation.sha256,
                      runs["support"], runs["query"], runs["query_label"])

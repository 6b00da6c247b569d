"""The files that hold a run's results (benchmark/run_folder.py decides where they go).

- A chunk file, `records/METHOD-sSEED-TASKSET-Nway-Kshot.parquet`: one row per query of one
  (method, seed, task set, N, k) with `episode`, `query`, `label`, `predicted`, `correct`;
  what is the same for every row (method, seed, task set, split, protocol, N, k) is written
  once, in the file's metadata. Parquet: typed, compressed (zstd), read in milliseconds.
- An episodes file, `episodes/TASKSET-Nway-Kshot.npz`: the image ids of that task set's
  episodes (`support` (E, N, k), `query` (E, Q), `query_label` (E, Q)), shared by every
  method, so a result can be checked without generating episodes again: query `q` of
  episode `e` is image `query[e, q]`, its true class `support[e, query_label[e, q]]`.

In memory, records are one DataFrame with RECORD_COLUMNS, the repeated ones categorical.
"""

from __future__ import annotations

import io
import json

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

# One row per query; the first eight are the same for every row of a chunk.
CHUNK_CONSTANTS = ("method", "seed", "task_set", "split", "protocol", "n_way", "k_shot")
PER_QUERY = {"episode": np.int32, "query": np.int32, "label": np.int16, "predicted": np.int16, "correct": np.int8}
RECORD_COLUMNS = ["run_id", *CHUNK_CONSTANTS, *PER_QUERY]
METADATA_KEY = b"oneshot-benchmark/chunk"
EPISODE_ARRAYS = ("support", "query", "query_label")


def chunk_bytes(constants: dict, scores: np.ndarray, query_label: np.ndarray) -> bytes:
    """A chunk file's bytes from one task set's scores (E, Q, N) and its true labels (E, Q).

    Ties go to the lowest index (argmax); the true class's position is random, so that favours
    no class. The same scores always give the same bytes.
    """
    n_episodes, n_queries = query_label.shape
    predicted = scores.argmax(axis=-1)
    columns = {"episode": np.repeat(np.arange(n_episodes), n_queries),
               "query": np.tile(np.arange(n_queries), n_episodes),
               "label": query_label.reshape(-1), "predicted": predicted.reshape(-1),
               "correct": (predicted == query_label).reshape(-1)}
    table = pa.table({name: np.asarray(values, dtype=PER_QUERY[name]) for name, values in columns.items()})
    table = table.replace_schema_metadata({METADATA_KEY: json.dumps(constants, sort_keys=True)})
    sink = io.BytesIO()
    pq.write_table(table, sink, compression="zstd")
    return sink.getvalue()


def read_chunk(content: bytes) -> tuple[dict, dict[str, np.ndarray]]:
    """(the chunk's constants, its per-query columns) from a chunk file's bytes (ValueError or
    OSError when they are not one)."""
    table = pq.read_table(io.BytesIO(content))
    metadata = table.schema.metadata or {}
    if METADATA_KEY not in metadata:
        raise ValueError("it holds no chunk metadata")
    constants = json.loads(metadata[METADATA_KEY])
    if set(constants) != set(CHUNK_CONSTANTS) or set(table.column_names) != set(PER_QUERY):
        raise ValueError("its columns are not those of a chunk")
    return constants, {name: table.column(name).to_numpy().astype(dtype, copy=False) for name, dtype in PER_QUERY.items()}


NUMBERS = ("seed", "n_way", "k_shot")  # of the chunk constants; the others are names


def records_frame(run_id: str, chunks: list[tuple[dict, dict[str, np.ndarray]]]) -> pd.DataFrame:
    """All chunks as one DataFrame of RECORD_COLUMNS; the names repeated on every row of a chunk
    categorical (a full run has millions of rows but a few dozen distinct names)."""
    lengths = np.array([len(columns["episode"]) for _, columns in chunks], dtype=np.int64)
    frame = {"run_id": pd.Categorical.from_codes(np.zeros(lengths.sum(), dtype=np.int8), [run_id])}
    for name in CHUNK_CONSTANTS:
        values = [constants[name] for constants, _ in chunks]
        if name in NUMBERS:
            frame[name] = np.repeat(np.array(values, dtype=np.int64), lengths)
            continue
        categories = list(dict.fromkeys(values))
        codes = np.repeat(np.array([categories.index(value) for value in values], dtype=np.int32), lengths)
        frame[name] = pd.Categorical.from_codes(codes, categories)
    for name, dtype in PER_QUERY.items():
        frame[name] = np.concatenate([columns[name] for _, columns in chunks]) if chunks else np.zeros(0, dtype)
    return pd.DataFrame(frame, columns=RECORD_COLUMNS)


def episodes_bytes(episodes) -> bytes:
    """An episodes file's bytes: the ids of an EpisodeSet."""
    sink = io.BytesIO()
    np.savez_compressed(sink, **{name: np.asarray(getattr(episodes, name), dtype=np.int32) for name in EPISODE_ARRAYS})
    return sink.getvalue()


def read_episodes(content: bytes) -> dict[str, np.ndarray]:
    """{support, query, query_label} as int64 from an episodes file's bytes."""
    with np.load(io.BytesIO(content), allow_pickle=False) as arrays:
        return {name: arrays[name].astype(np.int64) for name in EPISODE_ARRAYS}

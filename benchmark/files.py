"""Writing files so that they appear whole or not at all: the one atomic-write helper.

Every file the project writes and later trusts (run.json, checkpoints, frozen episodes,
golden numbers, the converted data, downloads, report tables) goes through `atomic_output`:
the new content is written to a temporary file in the same folder, flushed to disk, then
renamed over the target. A crash or an error midway leaves the old file (or none), never a
half-written one, and removes the temporary file.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import BinaryIO


@contextlib.contextmanager
def atomic_output(path: str | Path) -> Iterator[BinaryIO]:
    """`with atomic_output(path) as handle:` write bytes into handle; `path` gets them on success."""
    path = Path(path)
    handle = tempfile.NamedTemporaryFile(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp", delete=False)
    temporary = Path(handle.name)
    try:
        with handle:
            yield handle
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(temporary, path)
    finally:
        temporary.unlink(missing_ok=True)


def write_atomically(path: str | Path, content: str | bytes) -> None:
    """Replace `path` by `content` (str is written as UTF-8), atomically."""
    with atomic_output(path) as handle:
        handle.write(content.encode("utf-8") if isinstance(content, str) else content)


@contextlib.contextmanager
def staged_outputs(out_dir: str | Path) -> Iterator[Path]:
    """Yield an empty staging folder inside out_dir; on success move its files into out_dir.

    For a group of files (a report): each appears complete or not at all (a rename), so an
    interrupted report never leaves a half-written summary that looks finished. On an error
    nothing is moved.
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

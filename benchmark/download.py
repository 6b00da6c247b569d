"""Fetching the official Omniglot files over HTTP, checked against their published md5.

Only the standard library's urllib is used, so downloading adds no dependency. A file is
streamed to a temporary name next to its destination and renamed into place only once its
md5 matches, so an interrupted or corrupt download never looks like a good file.
"""

from __future__ import annotations

import hashlib
import http.client
import sys
import urllib.error
import urllib.request
from collections.abc import Iterable
from pathlib import Path

from tqdm import tqdm

from benchmark.errors import DataError
from benchmark.files import atomic_output

OFFICIAL_BASE_URL = "https://raw.githubusercontent.com/brendenlake/omniglot/master/python/"

# md5 sums as published by torchvision's Omniglot dataset (and the Omniglot README here).
OFFICIAL_FILES = {
    "images_background.zip": "68d2efa1b9178cc56df9314c21c6e718",
    "images_evaluation.zip": "6b91aef0f799c5bb55b94e3f2daec811",
    "all_runs.zip": "e8996daecdf12afeeb4a53a179f06b19",
}

# Where each file lives below OFFICIAL_BASE_URL in the brendenlake/omniglot repository.
OFFICIAL_PATHS = {
    "images_background.zip": "images_background.zip",
    "images_evaluation.zip": "images_evaluation.zip",
    "all_runs.zip": "one-shot-classification/all_runs.zip",
}

TIMEOUT_S = 60
_CHUNK_BYTES = 1 << 20
_WHERE_ELSE = (
    "get the files elsewhere and point the benchmark at them with --data-dir DIR or OMNIGLOT_DIR=DIR"
)


class DownloadError(DataError):
    """A download that failed; `reason` is the short cause, without advice around it."""

    def __init__(self, message: str, reason: str):
        super().__init__(message)
        self.reason = reason


def file_md5(path: Path) -> str:
    digest = hashlib.md5()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(_CHUNK_BYTES), b""):
            digest.update(chunk)
    return digest.hexdigest()


def official_url(name: str, base_url: str = OFFICIAL_BASE_URL) -> str:
    return base_url.rstrip("/") + "/" + OFFICIAL_PATHS[name]


def download_omniglot(
    dest: Path,
    *,
    base_url: str = OFFICIAL_BASE_URL,
    progress: bool = True,
    names: Iterable[str] | None = None,
) -> list[Path]:
    """Download the official files (all of OFFICIAL_FILES by default) into `dest`.

    Files already there with the right md5 are kept as they are. Returns their paths.
    """
    names = list(OFFICIAL_FILES) if names is None else list(names)
    unknown = sorted(set(names) - set(OFFICIAL_FILES))
    if unknown:
        raise DataError(f"unknown Omniglot file(s) {', '.join(unknown)}; known: {', '.join(OFFICIAL_FILES)}")
    dest = Path(dest)
    created = [folder for folder in (dest, *dest.parents) if not folder.exists()]
    try:
        dest.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        reason = f"cannot create {dest}: {error.strerror or error}"
        raise DownloadError(f"could not download Omniglot: {reason}; {_WHERE_ELSE}", reason) from None
    paths = []
    try:
        for name in names:
            target = dest / name
            if not (target.is_file() and file_md5(target) == OFFICIAL_FILES[name]):
                _fetch(official_url(name, base_url), target, OFFICIAL_FILES[name], progress)
            paths.append(target)
    except BaseException:
        _remove_if_empty(created)  # a failed first download leaves no empty folders behind
        raise
    return paths


def _remove_if_empty(folders: list[Path]) -> None:
    """Remove these folders, deepest first, as long as each is empty (files already downloaded
    and verified are kept, with their folders)."""
    for folder in folders:
        try:
            folder.rmdir()
        except OSError:
            return


def _fetch(url: str, target: Path, expected_md5: str, progress: bool) -> None:
    """Stream `url` into `target` through a temporary file, keeping it only if the md5 matches."""
    try:
        with atomic_output(target) as temp:
            actual_md5 = _stream(url, temp, target.name, progress)
            if actual_md5 != expected_md5:
                reason = f"{target.name} from {url} has md5 {actual_md5}, expected {expected_md5}"
                raise DownloadError(
                    f"downloaded {reason}: the download is corrupt or the file changed upstream; "
                    "nothing was saved, try again or " + _WHERE_ELSE, reason)
    except urllib.error.HTTPError as error:
        raise _network_error(url, f"HTTP {error.code} {error.reason}") from None
    except urllib.error.URLError as error:
        raise _network_error(url, str(error.reason)) from None
    except (OSError, http.client.HTTPException, ValueError) as error:
        # OSError covers timeouts and an unwritable destination; ValueError a malformed URL.
        raise _network_error(url, f"{type(error).__name__}: {error}") from None


def _stream(url: str, out, label: str, progress: bool) -> str:
    digest = hashlib.md5()
    with urllib.request.urlopen(url, timeout=TIMEOUT_S) as response:
        length = response.headers.get("Content-Length")
        total = int(length) if length and length.isdigit() else None
        with tqdm(total=total, unit="B", unit_scale=True, unit_divisor=1024, desc=label,
                  disable=not progress, file=sys.stderr, leave=False) as bar:
            for chunk in iter(lambda: response.read(_CHUNK_BYTES), b""):
                out.write(chunk)
                digest.update(chunk)
                bar.update(len(chunk))
    return digest.hexdigest()


def _network_error(url: str, reason: str) -> DownloadError:
    reason = f"{url}: {reason}"
    return DownloadError(f"could not download {reason}; check the network, or {_WHERE_ELSE}", reason)

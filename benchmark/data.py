"""Omniglot loading: the packed `omniglot.npz`, the official zips or their extracted folders.

Whatever the source, the images end up in one canonical order (see shared/omniglot/README.md):
characters sorted by (alphabet, character number), the 20 drawings of a character sorted by
the sha256 of their packed bitmap. That order makes every split's sha256 a fingerprint of
the data, checked against KNOWN_SHA256, so results from two machines are comparable.
Official files are converted once into `omniglot.npz` next to them and that is read after.
"""

from __future__ import annotations

import hashlib
import io
import os
import re
import sys
import zipfile
import zlib
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

import numpy as np
from PIL import Image
from tqdm import tqdm

from benchmark.download import (OFFICIAL_BASE_URL, OFFICIAL_FILES, DownloadError, download_omniglot,
                                file_md5)
from benchmark.errors import DataError
from benchmark.files import atomic_output
from benchmark.paths import DEFAULT_DATA_DIR

__all__ = [
    "SPLITS", "KNOWN_SHA256", "OFFICIAL_BASE_URL", "OFFICIAL_FILES", "PROJECT_DATA_DIR",
    "OmniglotSplit", "Omniglot", "resolve_data_dir", "load_omniglot", "download_omniglot",
    "official_runs_zip", "make_split", "locate_data_dir", "ink_from_png", "read_official_zip", "read_official_folder",
]

SPLITS = ("background", "evaluation")
KNOWN_SHA256 = {
    "background": "d76a797711dbd624b3f7220dd5e55408e548966dbf9957ab1f67359a86a4ce89",
    "evaluation": "0800cb9fcceb0597ffa03b6472cbbdf35f3ebf9dc7ec1d2b55724c3128ceffa5",
}
PROJECT_DATA_DIR = DEFAULT_DATA_DIR
NPZ_NAME = "omniglot.npz"
IMAGE_SIZE = 105
DRAWINGS = 20
_PACKED_WIDTH = (IMAGE_SIZE + 7) // 8
_CHARACTER_DIR = re.compile(r"character(\d+)")
_GET_DATA = ("point the benchmark at a copy with --data-dir DIR or OMNIGLOT_DIR=DIR, "
             "or run `python run_benchmark.py download`")


# The arrays make field-wise equality meaningless (and slow), hence eq=False.
@dataclass(frozen=True, eq=False)
class OmniglotSplit:
    """One split: images (characters, 20, 105, 105) uint8 with 1 = ink, read-only."""

    name: str
    images: np.ndarray
    alphabet: np.ndarray
    character: np.ndarray
    sha256: str

    @property
    def n_characters(self) -> int:
        return self.images.shape[0]

    @property
    def flat_images(self) -> np.ndarray:
        """All images as (characters * 20, 105, 105); image id = character_index * 20 + drawing."""
        return self.images.reshape(-1, IMAGE_SIZE, IMAGE_SIZE)

    def alphabets(self) -> list[str]:
        return sorted(set(self.alphabet.tolist()))

    def subset(self, alphabets: Iterable[str], name: str) -> OmniglotSplit:
        """The characters of `alphabets` only, in the same order, with their own sha256."""
        wanted = set(alphabets)
        unknown = sorted(wanted - set(self.alphabets()))
        if unknown:
            raise DataError(f"unknown alphabet(s) {', '.join(unknown)} in the {self.name} split; "
                            f"it has: {', '.join(self.alphabets())}")
        keep = np.isin(self.alphabet, list(wanted))
        return make_split(name, self.images[keep], self.alphabet[keep], self.character[keep])

    def __repr__(self) -> str:
        return (f"OmniglotSplit(name={self.name!r}, characters={self.n_characters}, "
                f"alphabets={len(self.alphabets())}, sha256={self.sha256[:12]}...)")


@dataclass(frozen=True, eq=False)
class Omniglot:
    root: Path
    background: OmniglotSplit
    evaluation: OmniglotSplit


def make_split(name: str, images: np.ndarray, alphabet: np.ndarray, character: np.ndarray) -> OmniglotSplit:
    """An OmniglotSplit from unpacked 0/1 images, computing its sha256 (also for synthetic data)."""
    images = np.asarray(images, dtype=np.uint8)
    if images.size and images.max() > 1:
        raise DataError(f"the {name} split's images must be 0/1 ink masks, found values up to {images.max()}")
    return _split_from_packed(name, np.packbits(images, axis=-1), alphabet, character, images)


def _split_from_packed(name, ink, alphabet, character, images=None) -> OmniglotSplit:
    if images is None:
        images = np.unpackbits(ink, axis=-1, count=IMAGE_SIZE)
    alphabet, character = np.asarray(alphabet, dtype=str), np.asarray(character, dtype=str)
    if images.ndim != 4 or images.shape[1:] != (DRAWINGS, IMAGE_SIZE, IMAGE_SIZE) or \
            alphabet.shape != (images.shape[0],) or character.shape != alphabet.shape:
        raise DataError(f"the {name} split has inconsistent shapes (images {images.shape}, alphabet "
                        f"{alphabet.shape}, character {character.shape}): the data is damaged; "
                        "run `python run_benchmark.py download`")
    for array in (images, alphabet, character):
        array.setflags(write=False)
    sha256 = hashlib.sha256(np.ascontiguousarray(ink)).hexdigest()
    return OmniglotSplit(name, images, alphabet, character, sha256)


# ---------------------------------------------------------------- where the data is

def locate_data_dir(data_dir: str | Path | None) -> tuple[Path, str]:
    """The data directory and, for messages, where that choice came from."""
    if data_dir is not None and str(data_dir) != "":
        return Path(data_dir).expanduser(), "given by --data-dir"
    if os.environ.get("OMNIGLOT_DIR"):
        return Path(os.environ["OMNIGLOT_DIR"]).expanduser(), "from OMNIGLOT_DIR"
    return PROJECT_DATA_DIR, "the default data directory"


def resolve_data_dir(data_dir: str | Path | None) -> Path:
    """The explicit argument, else $OMNIGLOT_DIR, else the project's data/omniglot."""
    return locate_data_dir(data_dir)[0]


def official_runs_zip(root: Path, *, download: bool = True, base_url: str = OFFICIAL_BASE_URL,
                      progress: bool = True) -> Path:
    """Path of Lake et al.'s all_runs.zip in `root`, downloading it if absent and allowed."""
    path = Path(root) / "all_runs.zip"
    if not path.is_file():
        if not download:
            raise DataError(f"the official runs file all_runs.zip is not in {root}; {_GET_DATA}")
        download_omniglot(Path(root), base_url=base_url, progress=progress, names=["all_runs.zip"])
    # Cheap (350 kB), and it is what makes "the official runs" official.
    actual = file_md5(path)
    if actual != OFFICIAL_FILES["all_runs.zip"]:
        raise DataError(f"{path} has md5 {actual}, expected {OFFICIAL_FILES['all_runs.zip']}: "
                        "it is not the official file; delete it and run `python run_benchmark.py download`")
    return path


# ---------------------------------------------------------------- loading

def load_omniglot(data_dir: str | Path | None = None, *, download: bool = True,
                  progress: bool = True) -> Omniglot:
    """Both splits, from omniglot.npz, else the official zips or folders (downloaded if allowed)."""
    directory, source = locate_data_dir(data_dir)
    if directory.exists() and not directory.is_dir():
        raise DataError(f"the Omniglot data directory {directory} ({source}) is not a directory; {_GET_DATA}")
    npz_path = directory / NPZ_NAME
    if npz_path.is_file():
        background, evaluation = _read_npz(npz_path)
        return Omniglot(directory, background, evaluation)

    missing = [split for split in SPLITS if _official_source(directory, split) is None]
    if missing:
        _download_missing(directory, source, missing, download, progress)
    packed = {}
    for split in SPLITS:
        official = _official_source(directory, split)
        packed[split] = _read_official(official, progress)
        _check_sha256(split, packed[split][0], str(official),
                      "delete it and run `python run_benchmark.py download`")
    _write_npz(npz_path, packed)
    background, evaluation = (_split_from_packed(split, *packed[split]) for split in SPLITS)
    return Omniglot(directory, background, evaluation)


def _official_source(directory: Path, split: str) -> Path | None:
    for candidate in (directory / f"images_{split}.zip", directory / f"images_{split}"):
        if candidate.exists():
            return candidate
    return None


def _download_missing(directory: Path, source: str, missing: list[str], download: bool,
                      progress: bool) -> None:
    what = "no Omniglot data" if len(missing) == len(SPLITS) else f"no Omniglot {missing[0]} split"
    looked_for = (f"looked for {NPZ_NAME}, " + ", ".join(f"images_{s}.zip or images_{s}/" for s in missing))
    if not download:
        raise DataError(f"{what} found in {directory} ({source}; {looked_for}); {_GET_DATA}")
    print(f"{what} found in {directory}; downloading the official files there from {OFFICIAL_BASE_URL}",
          file=sys.stderr)
    names = None if len(missing) == len(SPLITS) else [f"images_{s}.zip" for s in missing]
    try:
        download_omniglot(directory, progress=progress, names=names)
    except DownloadError as error:
        raise DataError(f"{what} found in {directory} ({source}) and the download failed ({error.reason}); "
                        "point the benchmark at a copy with --data-dir DIR or OMNIGLOT_DIR=DIR, or run "
                        "`python run_benchmark.py download` where there is network") from None


def _check_sha256(split: str, ink: np.ndarray, where: str, remedy: str) -> None:
    actual = hashlib.sha256(np.ascontiguousarray(ink)).hexdigest()
    if actual != KNOWN_SHA256[split]:
        raise DataError(f"the {split} split in {where} has sha256 {actual[:16]}..., expected "
                        f"{KNOWN_SHA256[split][:16]}...: the data is corrupt or not the standard "
                        f"Omniglot; {remedy}")


# Everything a damaged npz or zip can raise while being read; all mean "the file is bad".
# zipfile raises RuntimeError (a member flagged encrypted) and NotImplementedError (an unknown
# compression) for a damaged central directory.
_READ_ERRORS = (OSError, ValueError, KeyError, EOFError, RuntimeError, NotImplementedError, zipfile.BadZipFile,
                zlib.error)


def _read_npz(path: Path) -> tuple[OmniglotSplit, OmniglotSplit]:
    remedy = (f"delete {path} and run again (it is rebuilt from the official zips or downloaded), "
              "or run `python run_benchmark.py download`")
    if not zipfile.is_zipfile(path):  # else np.load mistakes it for a pickle and says so
        raise DataError(f"cannot read {path}: it is not an npz archive (damaged or incomplete); {remedy}")
    splits = []
    try:
        with np.load(path, allow_pickle=False) as npz:
            for split in SPLITS:
                ink, alphabet, character = (npz[f"{split}_{key}"] for key in ("ink", "alphabet", "character"))
                packed_shape = (DRAWINGS, IMAGE_SIZE, _PACKED_WIDTH)
                if ink.dtype != np.uint8 or ink.ndim != 4 or ink.shape[1:] != packed_shape:
                    raise ValueError(f"{split}_ink has dtype {ink.dtype} and shape {ink.shape}")
                _check_sha256(split, ink, str(path), remedy)
                splits.append(_split_from_packed(split, ink, alphabet, character))
    except _READ_ERRORS as error:
        raise DataError(f"cannot read {path} ({type(error).__name__}: {error}); {remedy}") from None
    return splits[0], splits[1]


def _write_npz(path: Path, packed: dict) -> None:
    """Cache the converted splits atomically; a read-only directory only costs a reconversion."""
    arrays = {f"{split}_{key}": array for split, (ink, alphabet, character) in packed.items()
              for key, array in (("ink", ink), ("alphabet", alphabet), ("character", character))}
    try:
        with atomic_output(path) as handle:
            np.savez_compressed(handle, **arrays)
    except OSError as error:
        print(f"note: cannot cache the converted data as {path} ({error.strerror or error}); "
              "it will be converted again next time", file=sys.stderr)


# ---------------------------------------------------------------- the official PNGs

def ink_from_png(data: bytes) -> np.ndarray:
    """A bool (105, 105) ink mask from the bytes of an Omniglot PNG (ink is black, value 0)."""
    with Image.open(io.BytesIO(data)) as image:
        if image.size != (IMAGE_SIZE, IMAGE_SIZE):
            raise ValueError(f"image is {image.size[0]}x{image.size[1]}, expected {IMAGE_SIZE}x{IMAGE_SIZE}")
        if image.mode == "1":
            return ~np.asarray(image)
        return np.asarray(image.convert("L")) < 128


def _read_official(source: Path, progress: bool):
    if source.suffix == ".zip":
        return read_official_zip(source, progress)
    return read_official_folder(source, progress)


def read_official_zip(path: Path, progress: bool = False) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(packed ink, alphabet, character) of an official images_*.zip, in canonical order.

    ink is (characters, 20, 105, 14) as `np.packbits(mask, axis=-1)`, like omniglot.npz.
    """
    path = Path(path)
    try:
        with zipfile.ZipFile(path) as archive:
            for info in archive.infolist():
                _check_member_name(path, info.filename)
            members = [info.filename for info in archive.infolist() if not info.is_dir()]
            pngs = [m for m in members if m.lower().endswith(".png") and not _is_junk(m)]
            entries = [(PurePosixPath(m).parts, lambda m=m: archive.read(m)) for m in pngs]
            return _assemble(path, entries, progress)
    except _READ_ERRORS as error:
        raise DataError(f"cannot read {path} ({type(error).__name__}: {error}); it is damaged or not an "
                        "Omniglot zip: delete it and run `python run_benchmark.py download`") from None


def read_official_folder(path: Path, progress: bool = False) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Like read_official_zip, for an extracted images_*/ALPHABET/characterNN/*.png folder."""
    path = Path(path)
    pngs = sorted(p for p in path.rglob("*.png") if not _is_junk(p.relative_to(path).as_posix()))
    entries = [(p.relative_to(path).parts, p.read_bytes) for p in pngs]
    try:
        return _assemble(path, entries, progress)
    except _READ_ERRORS as error:
        raise DataError(f"cannot read the images in {path} ({type(error).__name__}: {error}); "
                        "delete the folder and run `python run_benchmark.py download`") from None


def _check_member_name(archive: Path, member: str) -> None:
    # Names that could reach outside the directory mean a hostile or broken archive.
    parts = PurePosixPath(member.replace("\\", "/")).parts
    if member.startswith(("/", "\\")) or ".." in parts or re.match(r"^[A-Za-z]:", member):
        raise DataError(f"{archive} contains the unsafe member name {member!r}; refusing to read it: "
                        "delete the file and run `python run_benchmark.py download`")


def _is_junk(name: str) -> bool:
    """macOS resource forks that archivers slip into zips."""
    return name.startswith("__MACOSX/") or PurePosixPath(name).name.startswith("._")


def _assemble(source: Path, entries, progress: bool):
    """Group (path parts, read bytes) entries by character and sort everything canonically."""
    characters: dict[tuple[str, int, str], list[bytes]] = {}
    for parts, read in tqdm(entries, desc=f"converting {source.name}", unit="img",
                            disable=not progress, file=sys.stderr, leave=False):
        # The last three parts are ALPHABET/characterNN/FILE whatever folders sit above them.
        match = _CHARACTER_DIR.fullmatch(parts[-2]) if len(parts) >= 3 else None
        if match is None:
            raise DataError(f"{source}: {'/'.join(parts)!r} is not laid out as ALPHABET/characterNN/IMAGE.png; "
                            "is this an official Omniglot images_*.zip?")
        data = read()
        try:
            mask = ink_from_png(data)
        except (OSError, ValueError, SyntaxError) as error:  # PIL's ways of saying "not a PNG"
            raise DataError(f"{source}: {'/'.join(parts)!r} is not a usable image ({error}); "
                            "delete it and run `python run_benchmark.py download`") from None
        key = (parts[-3], int(match.group(1)), parts[-2])
        characters.setdefault(key, []).append(np.packbits(mask, axis=-1).tobytes())
    if not characters:
        raise DataError(f"{source} holds no Omniglot images; "
                        "delete it and run `python run_benchmark.py download`")
    keys = sorted(characters)
    ink = np.empty((len(keys), DRAWINGS, IMAGE_SIZE, _PACKED_WIDTH), dtype=np.uint8)
    for index, key in enumerate(keys):
        drawings = characters.pop(key)
        if len(drawings) != DRAWINGS:
            raise DataError(f"{source}: {key[0]}/{key[2]} has {len(drawings)} images, expected {DRAWINGS}; "
                            "the data is incomplete: delete it and run `python run_benchmark.py download`")
        drawings.sort(key=lambda packed: hashlib.sha256(packed).hexdigest())
        ink[index] = np.frombuffer(b"".join(drawings), dtype=np.uint8).reshape(ink.shape[1:])
    alphabet = np.array([key[0] for key in keys])
    character = np.array([key[2] for key in keys])
    return ink, alphabet, character

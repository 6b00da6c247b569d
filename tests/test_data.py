"""benchmark.data: real-data checks plus tiny synthetic official files (downloading: tests/test_download.py)."""

import hashlib
import io
import zipfile
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from benchmark import data, files
from benchmark.data import (KNOWN_SHA256, PROJECT_DATA_DIR, load_omniglot, read_official_folder,
                            read_official_zip, resolve_data_dir)
from benchmark.errors import DataError

SMALL_ZIP = "images_background_small1.zip"
SMALL_ALPHABETS = ["Balinese", "Early_Aramaic", "Greek", "Korean", "Latin"]


# ---------------------------------------------------------------- synthetic official files

def png_bytes(mask: np.ndarray) -> bytes:
    """An official-style PNG: 1-bit, ink black (False)."""
    out = io.BytesIO()
    Image.fromarray(~mask).save(out, format="PNG")
    return out.getvalue()


def official_members(seed: int, top: str, characters: dict[str, list[int]]) -> dict[str, bytes]:
    """top/ALPHABET/characterNN/IIII_DD.png -> PNG bytes, 20 random drawings a character."""
    rng = np.random.default_rng(seed)
    members = {}
    for alphabet, numbers in characters.items():
        for number in numbers:
            for drawer in range(1, 21):
                mask = rng.random((105, 105)) < 0.05
                name = f"{top}/{alphabet}/character{number:02d}/{number:04d}_{drawer:02d}.png"
                members[name] = png_bytes(mask)
    return members


def write_zip(path: Path, members: dict[str, bytes]) -> Path:
    with zipfile.ZipFile(path, "w") as archive:
        for name, content in members.items():
            archive.writestr(name, content)
    return path


def write_folder(root: Path, members: dict[str, bytes]) -> None:
    for name, content in members.items():
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_bytes(content)


SYNTHETIC = {
    "background": official_members(1, "images_background", {"Beta": [2, 1], "Alpha": [10, 9]}),
    "evaluation": official_members(2, "images_evaluation", {"Gamma": [1, 3]}),
}


@pytest.fixture
def synthetic_sha(monkeypatch, tmp_path):
    """Make the synthetic splits 'the standard Omniglot' for the duration of a test."""
    for split, members in SYNTHETIC.items():
        ink, _, _ = read_official_zip(write_zip(tmp_path / f"reference_{split}.zip", members))
        monkeypatch.setitem(KNOWN_SHA256, split, hashlib.sha256(ink).hexdigest())


def write_official_zips(directory: Path) -> None:
    directory.mkdir(parents=True, exist_ok=True)
    for split, members in SYNTHETIC.items():
        write_zip(directory / f"images_{split}.zip", members)


# ---------------------------------------------------------------- real data

def test_real_splits_have_the_documented_format(omniglot, omniglot_dir):
    assert omniglot.root == omniglot_dir
    for split, n_characters, n_alphabets in (("background", 964, 30), ("evaluation", 659, 20)):
        s = getattr(omniglot, split)
        assert s.name == split and s.n_characters == n_characters and len(s.alphabets()) == n_alphabets
        assert s.images.shape == (n_characters, 20, 105, 105) and s.images.dtype == np.uint8
        assert s.sha256 == KNOWN_SHA256[split]
        assert not s.images.flags.writeable and not s.flat_images.flags.writeable
        assert np.shares_memory(s.flat_images, s.images)
        assert np.array_equal(s.flat_images[7 * 20 + 3], s.images[7, 3])
    assert set(np.unique(omniglot.evaluation.images[:10])) == {0, 1}
    # Ink is the minority of pixels: 1 really means ink, not paper.
    assert omniglot.evaluation.images.mean() < 0.2


def test_subset_keeps_order_and_has_its_own_sha(omniglot):
    background = omniglot.background
    part = background.subset(["Latin", "Greek"], "background[validation]")
    keep = np.isin(background.alphabet, ["Greek", "Latin"])
    assert part.name == "background[validation]" and part.alphabets() == ["Greek", "Latin"]
    assert np.array_equal(part.images, background.images[keep])
    assert np.array_equal(part.character, background.character[keep])
    assert part.sha256 == hashlib.sha256(np.packbits(part.images, axis=-1).tobytes()).hexdigest()
    assert not part.images.flags.writeable
    with pytest.raises(DataError, match="Klingon"):
        background.subset(["Latin", "Klingon"], "oops")


def test_official_zip_reader_matches_the_npz(omniglot, omniglot_dir):
    ink, alphabet, character = read_official_zip(omniglot_dir / SMALL_ZIP)
    expected = omniglot.background.subset(SMALL_ALPHABETS, "small1")
    assert list(alphabet) == list(expected.alphabet) and list(character) == list(expected.character)
    assert np.array_equal(np.unpackbits(ink, axis=-1, count=105), expected.images)
    assert hashlib.sha256(ink).hexdigest() == expected.sha256


def test_extracted_folder_reads_like_the_zip(omniglot_dir, tmp_path):
    with zipfile.ZipFile(omniglot_dir / SMALL_ZIP) as archive:
        archive.extractall(tmp_path)
    from_folder = read_official_folder(tmp_path / "images_background_small1")
    from_zip = read_official_zip(omniglot_dir / SMALL_ZIP)
    for a, b in zip(from_folder, from_zip):
        assert np.array_equal(a, b)


# ---------------------------------------------------------------- synthetic official files

def test_canonical_order_of_official_files(tmp_path):
    ink, alphabet, character = read_official_zip(write_zip(tmp_path / "b.zip", SYNTHETIC["background"]))
    # Numeric character order: character09 before character10; alphabets sorted by name.
    assert list(zip(alphabet, character)) == [("Alpha", "character09"), ("Alpha", "character10"),
                                              ("Beta", "character01"), ("Beta", "character02")]
    digests = [hashlib.sha256(drawing.tobytes()).hexdigest() for drawing in ink[0]]
    assert digests == sorted(digests)


def test_conversion_is_cached_and_reused(tmp_path, synthetic_sha, monkeypatch):
    write_official_zips(tmp_path)
    first = load_omniglot(tmp_path, download=False, progress=False)
    assert (tmp_path / "omniglot.npz").is_file()
    assert sorted(p.name for p in tmp_path.iterdir() if p.name.startswith(".")) == []

    def fail(*args, **kwargs):
        raise AssertionError("the official zips were read again instead of omniglot.npz")

    monkeypatch.setattr(data, "read_official_zip", fail)
    second = load_omniglot(tmp_path, download=False, progress=False)
    for split in ("background", "evaluation"):
        a, b = getattr(first, split), getattr(second, split)
        assert a.sha256 == b.sha256 == KNOWN_SHA256[split]
        assert np.array_equal(a.images, b.images) and list(a.alphabet) == list(b.alphabet)


def test_folders_load_like_zips(tmp_path, synthetic_sha):
    write_official_zips(tmp_path / "zips")
    for members in SYNTHETIC.values():
        write_folder(tmp_path / "folders", members)
    from_zips = load_omniglot(tmp_path / "zips", download=False, progress=False)
    from_folders = load_omniglot(tmp_path / "folders", download=False, progress=False)
    assert np.array_equal(from_zips.background.images, from_folders.background.images)
    assert from_folders.evaluation.sha256 == from_zips.evaluation.sha256


def test_read_only_directory_loads_without_cache(tmp_path, synthetic_sha, monkeypatch, capsys):
    write_official_zips(tmp_path)

    def read_only(*args, **kwargs):
        raise PermissionError(13, "Permission denied")

    # Tests may run as root, where chmod does not stop writes; fail the write itself instead.
    monkeypatch.setattr(files.tempfile, "NamedTemporaryFile", read_only)
    loaded = load_omniglot(tmp_path, download=False, progress=False)
    assert loaded.evaluation.n_characters == 2
    assert not (tmp_path / "omniglot.npz").exists()
    assert capsys.readouterr().err.count("cannot cache") == 1


def test_wrong_content_is_refused(tmp_path, monkeypatch):
    write_official_zips(tmp_path)  # real KNOWN_SHA256: synthetic images are not Omniglot
    with pytest.raises(DataError, match="not the standard Omniglot"):
        load_omniglot(tmp_path, download=False, progress=False)
    assert not (tmp_path / "omniglot.npz").exists()


def test_incomplete_character_is_refused(tmp_path):
    members = dict(SYNTHETIC["evaluation"])
    members.pop(next(iter(members)))
    with pytest.raises(DataError, match="19 images, expected 20"):
        read_official_zip(write_zip(tmp_path / "e.zip", members))


@pytest.mark.parametrize("name", ["../evil.png", "/abs/evil.png", "images_background/a/../../evil.png"])
def test_unsafe_zip_member_is_refused(tmp_path, name):
    members = dict(SYNTHETIC["evaluation"])
    members[name] = next(iter(members.values()))
    with pytest.raises(DataError, match="unsafe"):
        read_official_zip(write_zip(tmp_path / "e.zip", members))


def test_garbled_files_are_refused(tmp_path):
    (tmp_path / "images_background.zip").write_bytes(b"PK\x03\x04 not really a zip")
    with pytest.raises(DataError, match="cannot read"):
        read_official_zip(tmp_path / "images_background.zip")
    members = {"images_evaluation/Gamma/character01/0001_01.png": b"\x89PNG broken"}
    with pytest.raises(DataError, match="character01/0001_01.png"):
        read_official_zip(write_zip(tmp_path / "e.zip", members))


# ---------------------------------------------------------------- the packed npz

def fake_npz(path: Path, n_characters: int = 1) -> Path:
    """The omniglot.npz format with content that is not Omniglot."""
    rng = np.random.default_rng(0)
    arrays = {}
    for split in ("background", "evaluation"):
        arrays[f"{split}_ink"] = rng.integers(0, 256, (n_characters, 20, 105, 14), dtype=np.uint8)
        arrays[f"{split}_alphabet"] = np.array(["Fake"] * n_characters)
        arrays[f"{split}_character"] = np.array([f"character{i + 1:02d}" for i in range(n_characters)])
    np.savez_compressed(path, **arrays)
    return path


def test_npz_with_wrong_sha_is_refused(tmp_path):
    fake_npz(tmp_path / "omniglot.npz")
    with pytest.raises(DataError, match="not the standard Omniglot.*download"):
        load_omniglot(tmp_path, download=False)


@pytest.mark.parametrize("damage", ["truncate", "garble", "flip"])
def test_damaged_npz_is_refused(tmp_path, damage):
    content = fake_npz(tmp_path / "omniglot.npz", n_characters=30).read_bytes()
    middle = len(content) // 2
    damaged = {"truncate": content[:middle],
               "garble": content[:100] + b"\0" * 5000,
               "flip": content[:middle] + bytes([content[middle] ^ 0xFF]) + content[middle + 1:]}[damage]
    (tmp_path / "omniglot.npz").write_bytes(damaged)
    # A flipped byte may surface as a read error or only as a wrong sha256: a DataError either way.
    with pytest.raises(DataError, match="cannot read|not the standard Omniglot") as error:
        load_omniglot(tmp_path, download=False)
    assert str(tmp_path / "omniglot.npz") in str(error.value)


# ---------------------------------------------------------------- where the data is

def test_resolve_data_dir_precedence(monkeypatch, tmp_path):
    monkeypatch.setenv("OMNIGLOT_DIR", str(tmp_path / "env"))
    assert resolve_data_dir(tmp_path / "arg") == tmp_path / "arg"
    assert resolve_data_dir(str(tmp_path / "arg")) == tmp_path / "arg"
    assert resolve_data_dir(None) == tmp_path / "env"
    monkeypatch.delenv("OMNIGLOT_DIR")
    assert resolve_data_dir(None) == PROJECT_DATA_DIR
    assert PROJECT_DATA_DIR == Path(data.__file__).resolve().parent.parent / "data" / "omniglot"


def test_missing_data_without_download_says_where_it_looked(tmp_path, monkeypatch):
    with pytest.raises(DataError) as error:
        load_omniglot(tmp_path / "nowhere", download=False)
    message = str(error.value)
    assert str(tmp_path / "nowhere") in message and "--data-dir" in message and "\n" not in message
    assert "OMNIGLOT_DIR=DIR" in message and "run_benchmark.py download" in message
    monkeypatch.setenv("OMNIGLOT_DIR", str(tmp_path))
    with pytest.raises(DataError, match="from OMNIGLOT_DIR"):
        load_omniglot(None, download=False)


def test_missing_data_is_downloaded_and_converted(tmp_path, synthetic_sha, monkeypatch, capsys):
    calls = []

    def fake_download(dest, **kwargs):
        calls.append(dest)
        write_official_zips(dest)

    monkeypatch.setattr(data, "download_omniglot", fake_download)
    loaded = load_omniglot(tmp_path / "new", progress=False)
    assert calls == [tmp_path / "new"] and loaded.background.n_characters == 4
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and str(tmp_path / "new") in err and "downloading" in err

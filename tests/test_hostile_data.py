"""Hostile data files, tried systematically: truncated, bit-flipped or reshaped copies of the
real omniglot.npz and official zips with damaged or hostile members must be refused with a
DataError, never read as data or crash (see tests/test_hostile.py for the inputs of the
config loader and the episode generator).
"""

import io
import shutil
import zipfile

import numpy as np
import pytest
from hypothesis import event, example, given
from hypothesis import strategies as st

from benchmark.data import load_omniglot, read_official_zip
from benchmark.errors import DataError
from tests.test_hostile import hostile


@pytest.fixture(scope="module")
def real_npz(omniglot_dir, tmp_path_factory):
    """A copy of the real omniglot.npz in a temporary folder (never in the repository)."""
    folder = tmp_path_factory.mktemp("npz")
    shutil.copy(omniglot_dir / "omniglot.npz", folder / "original.npz")
    return folder / "original.npz"


@hostile(25)
@given(fraction=st.floats(0, 1, exclude_max=True))
@example(fraction=0.0)
def test_truncated_real_npz_is_refused(real_npz, tmp_path_factory, fraction):
    content = real_npz.read_bytes()
    folder = tmp_path_factory.mktemp("truncated")
    (folder / "omniglot.npz").write_bytes(content[:int(fraction * len(content))])
    with pytest.raises(DataError, match="omniglot.npz") as error:
        load_omniglot(folder, download=False, progress=False)
    assert "\n" not in str(error.value)


@hostile(10)
@given(position=st.floats(0, 1, exclude_max=True), xor=st.integers(1, 255))
@example(position=0.00002, xor=0xFF)  # inside the first member's header
def test_bit_flipped_real_npz_is_refused(real_npz, tmp_path_factory, position, xor):
    content = bytearray(real_npz.read_bytes())
    content[int(position * len(content))] ^= xor
    folder = tmp_path_factory.mktemp("flipped")
    (folder / "omniglot.npz").write_bytes(bytes(content))
    try:
        load_omniglot(folder, download=False, progress=False)
    except DataError as error:
        assert "omniglot.npz" in str(error) and "\n" not in str(error)
        event("refused")
        return
    event("loaded: the flip changed nothing that matters")
    # A flip the zip format does not protect (e.g. in an unused header field) is harmless
    # only if the images are still exactly the standard ones: load_omniglot checks their sha256.


# Damage to the background split, which is read first: most are refused before any unpacking.
WRONG_SHAPES = {
    "ink 3-d": lambda a: {**a, "background_ink": a["background_ink"][0]},
    "ink width 13": lambda a: {**a, "background_ink": a["background_ink"][..., :13]},
    "ink int16": lambda a: {**a, "background_ink": a["background_ink"].astype(np.int16)},
    "alphabet too short": lambda a: {**a, "background_alphabet": a["background_alphabet"][:-1]},
    "character missing": lambda a: {k: v for k, v in a.items() if k != "background_character"},
    "object array": lambda a: {**a, "background_alphabet": a["background_alphabet"].astype(object)},
}


@pytest.mark.parametrize("damage", list(WRONG_SHAPES))
def test_real_npz_with_wrong_shapes_is_refused(real_npz, tmp_path, damage):
    with np.load(real_npz, allow_pickle=False) as npz:
        arrays = {key: npz[key] for key in npz.files}
    np.savez(tmp_path / "omniglot.npz", **WRONG_SHAPES[damage](arrays))
    with pytest.raises(DataError, match="omniglot.npz|inconsistent shapes"):
        load_omniglot(tmp_path, download=False, progress=False)


def small_official_zip() -> bytes:
    """One character of 20 tiny-but-valid official PNGs, as an in-memory zip."""
    from PIL import Image

    out = io.BytesIO()
    with zipfile.ZipFile(out, "w") as archive:
        for drawer in range(1, 21):
            image = io.BytesIO()
            Image.fromarray(np.full((105, 105), drawer % 2 == 0)).save(image, format="PNG")
            archive.writestr(f"images_evaluation/Gamma/character01/0001_{drawer:02d}.png", image.getvalue())
    return out.getvalue()


SMALL_ZIP = small_official_zip()


@hostile(40)
@given(cut=st.integers(0, len(SMALL_ZIP) - 1))
def test_truncated_official_zip_is_refused(tmp_path_factory, cut):
    path = tmp_path_factory.mktemp("zip") / "images_evaluation.zip"
    path.write_bytes(SMALL_ZIP[:cut])
    with pytest.raises(DataError, match="images_evaluation.zip"):
        read_official_zip(path)


@hostile(60)
@given(name=st.one_of(
    st.text(min_size=1, max_size=30),
    st.builds("{}/{}".format, st.sampled_from(["..", "/", "C:", "\\", "a/../..", "images_evaluation/..", ".", "~"]),
              st.text(max_size=10)),
).filter(lambda name: "\0" not in name),  # zipfile itself cuts names at NUL, on writing and reading
       content=st.binary(max_size=50))
@example(name="../../evil.png", content=b"")
@example(name="images_evaluation\\..\\..\\evil.png", content=b"")
@example(name="C:/Windows/evil.png", content=b"")
def test_hostile_member_names_in_official_zip(tmp_path_factory, name, content):
    path = tmp_path_factory.mktemp("zip") / "images_evaluation.zip"
    with zipfile.ZipFile(path, "w") as archive:
        with zipfile.ZipFile(io.BytesIO(SMALL_ZIP)) as source:
            for info in source.infolist():
                archive.writestr(info, source.read(info))
        archive.writestr(name, content)
    try:
        ink, alphabet, character = read_official_zip(path)
    except DataError as error:
        assert "\n" not in str(error)
        event("refused")
        return
    event("read, member ignored or harmless")
    parts = name.replace("\\", "/").split("/")
    assert ".." not in parts and not name.startswith(("/", "\\"))
    assert ink.shape[1:] == (20, 105, 14) and len(alphabet) == len(character) == ink.shape[0]

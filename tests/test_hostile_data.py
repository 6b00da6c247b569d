"""Hostile data files, tried systematically: truncated, bit-flipped or reshaped copies of the
real omniglot.npz and official zips with damaged or hostile members. Each input has an
expected outcome (see tests/test_hostile.py): a one-line DataError that names the file, or a
load that is exactly the original data; anything else fails.
"""

from __future__ import annotations

import hashlib
import io
import shutil
import string
import struct
import zipfile
from collections import defaultdict

import numpy as np
import pytest
from hypothesis import example, given
from hypothesis import strategies as st

from benchmark.data import KNOWN_SHA256, load_omniglot, read_official_zip
from benchmark.errors import DataError
from tests.hostile_counts import record
from tests.hostile import (LINE_BREAKS, Accepted, Refused, RefusedOrAccepted, check_outcome, hostile,
                                labelled_examples, one_line_text, outcome_name)

SPLITS = ("background", "evaluation")
NPZ_NAME = "omniglot.npz"


@pytest.fixture(scope="module")
def real_npz(omniglot_dir, tmp_path_factory):
    """A copy of the real omniglot.npz in a temporary folder (never in the repository)."""
    folder = tmp_path_factory.mktemp("npz")
    shutil.copy(omniglot_dir / NPZ_NAME, folder / "original.npz")
    return folder / "original.npz"


@pytest.fixture(scope="module")
def original_arrays(real_npz):
    with np.load(real_npz, allow_pickle=False) as npz:
        return {key: npz[key] for key in npz.files}


def refused_npz() -> Refused:
    return Refused(DataError, ((NPZ_NAME,),))


def check_is_original(data, original: dict) -> None:
    """Both splits exactly as in the pristine file: the standard images, alphabets and characters."""
    for name in SPLITS:
        split = getattr(data, name)
        assert split.sha256 == KNOWN_SHA256[name]
        assert np.array_equal(np.packbits(split.images, axis=-1), original[f"{name}_ink"])
        assert np.array_equal(split.alphabet, original[f"{name}_alphabet"])
        assert np.array_equal(split.character, original[f"{name}_character"])


def load_copy(folder, content: bytes):
    (folder / NPZ_NAME).write_bytes(content)
    return load_omniglot(folder, download=False, progress=False)


# ---------------------------------------------------------------- truncated and bit-flipped npz

@hostile(25)
@given(fraction=st.floats(0, 1, exclude_max=True))
@example(fraction=0.0)
def test_truncated_real_npz_is_refused(real_npz, tmp_path_factory, fraction):
    # A zip's directory is at its end: no proper prefix of the file is readable.
    content = real_npz.read_bytes()
    cut = content[:int(fraction * len(content))]
    outcome, _ = check_outcome(refused_npz(), lambda: load_copy(tmp_path_factory.mktemp("truncated"), cut))
    record(outcome)


def zip_layout(content: bytes) -> dict[str, list[range]]:
    """The bytes of a pristine zip, by kind (PKWARE's APPNOTE.TXT layout)."""
    with zipfile.ZipFile(io.BytesIO(content)) as archive:
        members, position = archive.infolist(), archive.start_dir
    layout = defaultdict(list)
    for member in members:
        local = member.header_offset
        name_length, extra_length = struct.unpack_from("<HH", content, local + 26)
        data = local + 30 + name_length + extra_length
        layout["signature"].append(range(local, local + 4))
        layout["header"] += [range(local + 4, local + 10), range(local + 14, data)]
        layout["timestamp"].append(range(local + 10, local + 14))
        # The last byte of a deflate stream may end in padding bits that nobody reads.
        layout["member data"].append(range(data, data + member.compress_size - 1))
    while content[position:position + 4] == b"PK\x01\x02":  # the central directory
        name_length, extra_length, comment_length = struct.unpack_from("<HHH", content, position + 28)
        end = position + 46 + name_length + extra_length + comment_length
        layout["signature"].append(range(position, position + 4))
        layout["header"] += [range(position + 4, position + 6), range(position + 20, end)]
        # Version needed, flags, method: zipfile refuses the member (RuntimeError, NotImplementedError).
        layout["central flags"].append(range(position + 6, position + 12))
        layout["timestamp"].append(range(position + 12, position + 16))
        layout["crc"].append(range(position + 16, position + 20))
        position = end
    end_record = content.rindex(b"PK\x05\x06")
    layout["header"] += [range(position, end_record), range(end_record + 4, len(content))]
    layout["signature"].append(range(end_record, end_record + 4))
    layout["anywhere"] = [range(len(content))]
    return layout


def nth_byte(ranges: list[range], fraction: float) -> int:
    """The byte at `fraction` of the way through `ranges`, taken as one sequence."""
    index = int(fraction * sum(map(len, ranges)))
    for piece in ranges:
        if index < len(piece):
            return piece[index]
        index -= len(piece)
    raise AssertionError("fraction must be below 1")


FLIP_EXPECTED = {
    "signature": refused_npz(),  # every reader checks the magic numbers
    "crc": refused_npz(),  # the content no longer matches its checksum
    "member data": refused_npz(),  # a changed deflate stream decodes to other bytes (CRC-32 and sha256 catch it)
    "timestamp": Accepted(),  # no reader checks a member's date
    # Version needed, flags, method of a member: what zipfile reads them to mean, it cannot do,
    # or (some version bits) it does not read them at all.
    "central flags": RefusedOrAccepted(DataError, ((NPZ_NAME,),)),
    # Other header fields: some are read and checked, some are not (which ones is the zip
    # reader's business); a refusal must still be a DataError, a load still the original data.
    "header": RefusedOrAccepted(DataError, ((NPZ_NAME,),)),
    "anywhere": RefusedOrAccepted(DataError, ((NPZ_NAME,),)),
}


@pytest.fixture(scope="module")
def npz_layout(real_npz):
    return zip_layout(real_npz.read_bytes())


@pytest.mark.both_outcomes
@hostile(6)
@given(kind=st.sampled_from(list(FLIP_EXPECTED)), fraction=st.floats(0, 1, exclude_max=True),
       xor=st.integers(1, 255))
@example(kind="anywhere", fraction=0.00002, xor=0xFF)  # inside the first member's data
@example(kind="timestamp", fraction=0.5, xor=0xFF)
@example(kind="signature", fraction=0.99, xor=0x01)  # the end of central directory record
@example(kind="crc", fraction=0.0, xor=0x80)
@example(kind="header", fraction=0.985, xor=0x01)  # the end record's count of members
def test_bit_flipped_real_npz_is_refused_or_unchanged(real_npz, original_arrays, npz_layout, tmp_path_factory,
                                                      kind, fraction, xor):
    content = bytearray(real_npz.read_bytes())
    content[nth_byte(npz_layout[kind], fraction)] ^= xor
    folder = tmp_path_factory.mktemp("flipped")
    outcome, data = check_outcome(FLIP_EXPECTED[kind], lambda: load_copy(folder, bytes(content)))
    record(outcome)
    if outcome == "accepted":
        check_is_original(data, original_arrays)


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
def test_real_npz_with_wrong_shapes_is_refused(original_arrays, tmp_path, damage):
    np.savez(tmp_path / NPZ_NAME, **WRONG_SHAPES[damage](original_arrays))
    # Arrays that disagree are refused by the split's own check, which names the split, not the file.
    expected = Refused(DataError, ((NPZ_NAME,), ("background", "inconsistent shapes")))
    outcome, _ = check_outcome(expected, lambda: load_omniglot(tmp_path, download=False, progress=False))
    record(outcome)


# ---------------------------------------------------------------- the official zips

ZIP_NAME = "images_evaluation.zip"


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


def small_zip_contents():
    """What SMALL_ZIP holds, worked out from how it was made: white is paper, black is ink, so
    the odd drawers are all ink; drawings in the order of their packed bitmaps' sha256."""
    drawings = [np.packbits(np.full((105, 105), drawer % 2 == 1), axis=-1) for drawer in range(1, 21)]
    drawings.sort(key=lambda packed: hashlib.sha256(packed.tobytes()).hexdigest())
    return np.stack(drawings)[None], np.array(["Gamma"]), np.array(["character01"])


def check_is_small_zip(read) -> None:
    for actual, wanted in zip(read, small_zip_contents(), strict=True):
        assert np.array_equal(actual, wanted)


def test_the_small_official_zip_reads_as_made(tmp_path):
    path = tmp_path / ZIP_NAME
    path.write_bytes(SMALL_ZIP)
    check_is_small_zip(read_official_zip(path))


@hostile(40)
@given(cut=st.integers(0, len(SMALL_ZIP) - 1))
def test_truncated_official_zip_is_refused(tmp_path_factory, cut):
    path = tmp_path_factory.mktemp("zip") / ZIP_NAME
    path.write_bytes(SMALL_ZIP[:cut])
    outcome, _ = check_outcome(Refused(DataError, ((ZIP_NAME,),)), lambda: read_official_zip(path))
    record(outcome)


def expected_member(name: str) -> Refused | Accepted:
    """What adding a member `name` (of at most 50 bytes) to SMALL_ZIP must do."""
    parts = name.replace("\\", "/").split("/")  # Windows archivers write either separator
    drive = len(name) >= 2 and name[0] in string.ascii_letters and name[1] == ":"
    if name.startswith(("/", "\\")) or ".." in parts or drive:  # it could reach outside the folder
        return Refused(DataError, ((ZIP_NAME, repr(name)),))
    macos_junk = name.startswith("__MACOSX/") or name.split("/")[-1].startswith("._")
    if name.endswith("/") or not name.lower().endswith(".png") or macos_junk:
        return Accepted()  # a folder, not an image, or a resource fork: ignored
    return Refused(DataError, ((ZIP_NAME,),))  # 50 bytes are no 105x105 PNG, wherever they lie


MEMBER_CASES = [  # hand-labelled: (name, content), expected outcome
    (dict(name="../../evil.png", content=b""), "refused"),
    (dict(name="images_evaluation\\..\\..\\evil.png", content=b""), "refused"),
    (dict(name="C:/Windows/evil.png", content=b""), "refused"),
    (dict(name="/etc/passwd", content=b""), "refused"),
    (dict(name="images_evaluation/Gamma/character01/0001_01.png", content=b"\x89PNG"), "refused"),  # a duplicate
    (dict(name="images_evaluation/Gamma/character02/0002_01.png", content=b"\x89PNG"), "refused"),
    (dict(name="Gamma/notes.txt", content=b"hello"), "accepted"),
    (dict(name="__MACOSX/images_evaluation/Gamma/character01/._0001_01.png", content=b"x"), "accepted"),
    (dict(name="images_evaluation/Gamma/character01/._0001_01.png", content=b"x"), "accepted"),
    (dict(name="images_evaluation/Gamma/character03.png/", content=b""), "accepted"),  # a folder
    (dict(name="a..b/..c", content=b""), "accepted"),  # dots, but no '..' part
]
member_names = st.one_of(
    st.text(min_size=1, max_size=30),
    st.builds("{}/{}".format, st.sampled_from(["..", "/", "C:", "\\", "a/../..", "images_evaluation/..", ".", "~"]),
              st.text(max_size=10)),
    # Image names, so that layout and content are judged too (no line breaks: test_known_data_bugs).
    st.builds("{}/{}/{}{}".format, one_line_text(max_size=6),
              st.sampled_from(["character01", "character7", "chars", "."]), one_line_text(max_size=6),
              st.sampled_from([".png", ".PNG", ".png/", ".pngx"])),
).filter(lambda name: "\0" not in name  # zipfile itself cuts names at NUL, on writing and reading
         and not (name.lower().endswith(".png") and set(LINE_BREAKS) & set(name)))  # test_known_data_bugs


@pytest.mark.both_outcomes
@pytest.mark.filterwarnings("ignore:Duplicate name:UserWarning")  # a member that shadows a drawing: intended
@hostile(60)
@given(name=member_names, content=st.binary(max_size=50))
@labelled_examples(MEMBER_CASES)
def test_hostile_member_names_in_official_zip(tmp_path_factory, name, content):
    path = tmp_path_factory.mktemp("zip") / ZIP_NAME
    with zipfile.ZipFile(path, "w") as archive:
        with zipfile.ZipFile(io.BytesIO(SMALL_ZIP)) as source:
            for info in source.infolist():
                archive.writestr(info, source.read(info))
        archive.writestr(name, content)
    outcome, read = check_outcome(expected_member(name), lambda: read_official_zip(path))
    record(outcome)
    if outcome == "accepted":
        check_is_small_zip(read)  # the member was ignored


@pytest.mark.parametrize("kwargs, label", MEMBER_CASES,
                         ids=lambda value: value["name"] if isinstance(value, dict) else None)
def test_member_oracle_agrees_with_hand_labelled_cases(kwargs, label):
    assert outcome_name(expected_member(kwargs["name"])) == label


# ---------------------------------------------------------------- bugs these tests found, fixed

def flip_central_directory(content: bytes, offset: int, xor: int) -> bytes:
    """Flip bits at `offset` in the first central directory header."""
    content = bytearray(content)
    content[content.index(b"PK\x01\x02") + offset] ^= xor
    return bytes(content)


@pytest.mark.parametrize("offset, xor", [
    pytest.param(8, 0x01, id="flags-say-encrypted"),
    pytest.param(8, 0x20, id="flags-say-patch-data"),
    pytest.param(10, 0x01, id="method-unsupported"),
    pytest.param(6, 0x40, id="version-needed-too-high"),
])
def test_a_flipped_central_directory_is_refused_not_a_crash(real_npz, tmp_path, offset, xor):
    # zipfile raises RuntimeError / NotImplementedError for these, which the loader once let through.
    content = flip_central_directory(real_npz.read_bytes(), offset, xor)
    check_outcome(refused_npz(), lambda: load_copy(tmp_path, content))


def test_a_member_path_with_a_line_break_is_a_one_line_refusal(tmp_path):
    path = tmp_path / ZIP_NAME
    with zipfile.ZipFile(path, "w") as archive:
        archive.writestr("Gamma/a\nb/x.png", b"")
    check_outcome(Refused(DataError, ((ZIP_NAME,),)), lambda: read_official_zip(path))

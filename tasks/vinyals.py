"""Vinyals et al.'s (2016) Omniglot split: the class lists shipped in tasks/splits/vinyals/.

`trainval` (4800 classes: 1200 characters x 4 rotations) is what methods are fitted on, with
`val` (688 of them) held out by methods that validate; `test` (1692 classes: 423
characters) is where the episodes come from. The lists draw characters from both of Lake's
splits; a class is a (character, rotation) pair, its images rotated as they are read
(benchmark/rotations.py), so the split costs no images of its own.
"""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np

from benchmark.errors import DataError
from benchmark.rotations import ClassTable, RotatedSplit

LISTS_DIR = Path(__file__).resolve().parent / "splits" / "vinyals"
LIST_NAMES = ("trainval", "train", "val", "test")
# Which lists make each split a protocol can use, and which list a method validates on.
SPLIT_LISTS = {"vinyals_trainval": "trainval", "vinyals_test": "test"}
VALIDATION_LIST = {"vinyals_trainval": "val"}
_LINE = re.compile(r"([^/]+)/([^/]+)/rot(000|090|180|270)")


def read_list(name: str, lists_dir: Path = LISTS_DIR) -> list[str]:
    """The class names of one list (`Alphabet/characterNN/rotDDD`), in file order."""
    path = Path(lists_dir) / f"{name}.txt"
    try:
        lines = path.read_text(encoding="utf-8").split()
    except OSError as error:
        raise DataError(f"the Vinyals class list {path} cannot be read ({error}): restore it from git") from None
    for line in lines:
        if not _LINE.fullmatch(line):
            raise DataError(f"{path} has a line that is not Alphabet/characterNN/rotDDD: {line[:80]!r}")
    return lines


def vinyals_split(data, name: str, lists_dir: Path = LISTS_DIR) -> RotatedSplit:
    """Split `name` ("vinyals_trainval" or "vinyals_test") of Lake's data as the lists say."""
    classes = read_list(SPLIT_LISTS[name], lists_dir)
    validation = VALIDATION_LIST.get(name)
    table = class_table(classes, (data.background, data.evaluation))
    held_out = None if validation is None else read_list(validation, lists_dir)
    if held_out is not None and not set(held_out) <= set(classes):
        raise DataError(f"the Vinyals list {validation}.txt names classes that {SPLIT_LISTS[name]}.txt does not have")
    return RotatedSplit.build(name, table, held_out)


def class_table(classes: list[str], sources: tuple) -> ClassTable:
    """Where each `Alphabet/characterNN/rotDDD` class's images are, in `sources` (Omniglot splits)."""
    where = {}
    for index, split in enumerate(sources):
        for position, (alphabet, character) in enumerate(zip(split.alphabet.tolist(), split.character.tolist())):
            where[f"{alphabet}/{character}"] = (index, position)
    source, character, turns = (np.empty(len(classes), dtype=np.int64) for _ in range(3))
    for i, line in enumerate(classes):
        alphabet, name, degrees = _LINE.fullmatch(line).groups()
        found = where.get(f"{alphabet}/{name}")
        if found is None:
            raise DataError(f"the Vinyals split names {alphabet}/{name}, which the Omniglot data here does not "
                            f"have: use the standard data (`python run_benchmark.py download`)")
        source[i], character[i] = found
        turns[i] = int(degrees) // 90
    return ClassTable(tuple(sources), source, character, turns)

"""Classes made of a character turned by a multiple of 90 degrees, without copying its images.

Vinyals et al.'s split counts each character in 4 rotations as 4 classes. Stored, that is 4
times the images (1.4 GB more for the 6492 classes); here a split of such classes keeps the
Omniglot splits' images as they are and a table of its classes (which split, which
character, how many quarter turns), and rotates an image when it is read. A `RotatedSplit`
offers what methods use of an `OmniglotSplit` (`images`, `flat_images`, `alphabet`,
`character`, `n_characters`, `sha256`, `subset`), so `fit` and `predict` take it as they take
Lake's splits.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable
from dataclasses import dataclass

import numpy as np

from benchmark.data import DRAWINGS, IMAGE_SIZE, OmniglotSplit
from benchmark.errors import DataError

QUARTER_TURNS = (0, 1, 2, 3)  # counter-clockwise, as np.rot90


@dataclass(frozen=True, eq=False)
class ClassTable:
    """The classes of a rotated split: class c is character `character[c]` of split
    `source[c]`, turned `turns[c]` quarter turns counter-clockwise."""

    sources: tuple[OmniglotSplit, ...]
    source: np.ndarray
    character: np.ndarray
    turns: np.ndarray

    def __post_init__(self):
        for array in (self.source, self.character, self.turns):
            array.setflags(write=False)

    def __len__(self) -> int:
        return len(self.source)

    def take(self, classes: np.ndarray) -> ClassTable:
        return ClassTable(self.sources, self.source[classes], self.character[classes], self.turns[classes])

    def images(self, classes: np.ndarray, drawings: np.ndarray) -> np.ndarray:
        """Drawing `drawings[i]` of class `classes[i]` for each i: (n, 105, 105) uint8, rotated."""
        out = np.empty((len(classes), IMAGE_SIZE, IMAGE_SIZE), dtype=np.uint8)
        source, character, turns = self.source[classes], self.character[classes], self.turns[classes]
        for index, split in enumerate(self.sources):
            chosen = source == index
            out[chosen] = split.images[character[chosen], drawings[chosen]]
        for quarter_turns in QUARTER_TURNS[1:]:
            chosen = turns == quarter_turns
            if chosen.any():
                out[chosen] = np.rot90(out[chosen], quarter_turns, axes=(1, 2))
        return out


class RotatedImages:
    """A read-only array of images that rotates them as they are read.

    `per_class=False`: shaped (classes * 20, 105, 105) and indexed by image id (class * 20 +
    drawing), as `flat_images`; `per_class=True`: (classes, 20, 105, 105), indexed by class,
    as `images`. Indexing by an integer, a slice or an integer array gives a new numpy array;
    `np.asarray(view)` gives all of it (the memory this class exists to save).
    """

    dtype = np.dtype(np.uint8)

    def __init__(self, table: ClassTable, per_class: bool):
        self.table, self.per_class = table, per_class
        self.shape = (len(table), DRAWINGS, IMAGE_SIZE, IMAGE_SIZE) if per_class else \
            (len(table) * DRAWINGS, IMAGE_SIZE, IMAGE_SIZE)
        self.ndim = len(self.shape)

    def __len__(self) -> int:
        return self.shape[0]

    def __getitem__(self, key) -> np.ndarray:
        if isinstance(key, tuple):
            raise IndexError("index rotated images along their first axis only (an integer, a slice or an "
                             "integer array), then index the array you get")
        positions = np.arange(len(self))[key] if isinstance(key, slice) else np.asarray(key)
        if positions.dtype == bool or not np.issubdtype(positions.dtype, np.integer):
            raise IndexError(f"rotated images are indexed by integers, got {positions.dtype}")
        flat = positions.reshape(-1).astype(np.int64)
        if flat.size and (flat.min() < -len(self) or flat.max() >= len(self)):
            raise IndexError(f"index out of range for {len(self)} {'classes' if self.per_class else 'images'}")
        flat %= max(len(self), 1)
        if self.per_class:  # every drawing of each class
            classes, drawings = np.repeat(flat, DRAWINGS), np.tile(np.arange(DRAWINGS), len(flat))
        else:
            classes, drawings = np.divmod(flat, DRAWINGS)
        images = self.table.images(classes, drawings)
        return images.reshape(*positions.shape, *self.shape[1:])

    def __array__(self, dtype=None, copy=None):
        everything = self[np.arange(len(self))]
        return everything if dtype is None else everything.astype(dtype)

    def __repr__(self) -> str:
        return f"RotatedImages(shape={self.shape})"


@dataclass(frozen=True, eq=False)
class RotatedSplit:
    """A split whose classes are (character, rotation) pairs; see the module's docstring.

    `validation`: the names of the classes a method that validates holds out (`val` of the
    Vinyals split), or None: `benchmark.training.split_background` uses it instead of holding
    out alphabets.
    """

    name: str
    table: ClassTable
    alphabet: np.ndarray  # (classes,) the alphabet of each class's character
    character: np.ndarray  # (classes,) e.g. "character07/rot090": unique within an alphabet
    sha256: str
    validation: frozenset[str] | None = None

    @classmethod
    def build(cls, name: str, table: ClassTable, validation: Iterable[str] | None = None) -> RotatedSplit:
        """The split of `table`'s classes, named and hashed (from its sources' sha256 and the table)."""
        alphabet = np.array([split.alphabet[c] for split, c in _sources_of(table)], dtype=str)
        character = np.array([f"{split.character[c]}/rot{90 * t:03d}" for (split, c), t in
                              zip(_sources_of(table), table.turns)], dtype=str)
        for array in (alphabet, character):
            array.setflags(write=False)
        digest = hashlib.sha256()
        for split in table.sources:
            digest.update(split.sha256.encode())
        for array in (table.source, table.character, table.turns):
            digest.update(np.ascontiguousarray(array, dtype="<i8").tobytes())
        return cls(name, table, alphabet, character, digest.hexdigest(),
                   None if validation is None else frozenset(validation))

    @property
    def n_characters(self) -> int:
        """The number of classes (named as in OmniglotSplit, where a class is a character)."""
        return len(self.table)

    @property
    def images(self) -> RotatedImages:
        return RotatedImages(self.table, per_class=True)

    @property
    def flat_images(self) -> RotatedImages:
        return RotatedImages(self.table, per_class=False)

    @property
    def class_names(self) -> np.ndarray:
        """`Alphabet/characterNN/rotDDD` of each class, as the Vinyals lists write them."""
        return np.char.add(np.char.add(self.alphabet, "/"), self.character)

    def alphabets(self) -> list[str]:
        return sorted(set(self.alphabet.tolist()))

    def subset(self, alphabets: Iterable[str], name: str) -> RotatedSplit:
        """The classes of `alphabets` only, in the same order."""
        wanted = set(alphabets)
        unknown = sorted(wanted - set(self.alphabets()))
        if unknown:
            raise DataError(f"unknown alphabet(s) {', '.join(unknown)} in the {self.name} split")
        return self.with_classes(np.isin(self.alphabet, list(wanted)), name)

    def with_classes(self, keep: np.ndarray, name: str) -> RotatedSplit:
        """The classes where `keep` is true, in the same order (no validation classes of its own)."""
        return RotatedSplit.build(name, self.table.take(np.flatnonzero(keep)))

    def held_out(self) -> tuple[RotatedSplit, RotatedSplit] | None:
        """(train, validation) as the split's own lists name them, or None when they name none."""
        if self.validation is None:
            return None
        chosen = np.isin(self.class_names, list(self.validation))
        return (self.with_classes(~chosen, f"{self.name}[train]"),
                self.with_classes(chosen, f"{self.name}[validation]"))

    def __repr__(self) -> str:
        return (f"RotatedSplit(name={self.name!r}, classes={self.n_characters}, "
                f"alphabets={len(self.alphabets())}, sha256={self.sha256[:12]}...)")


def _sources_of(table: ClassTable):
    return ((table.sources[s], c) for s, c in zip(table.source, table.character))

"""Tiny synthetic Omniglot-like data, for the method contract and for tests (like torchvision's
FakeData): no download, built in milliseconds, trivially separable.

A character is a random 8x8 grid of 9-pixel ink blocks; its 20 drawings shift it by at most
one pixel and flip 30 pixels, so any two drawings of one character differ in fewer pixels
than any drawings of two characters (tests/test_checks.py checks it), also after
downsampling. Every sensible method separates them; a method that does not is broken.

    from benchmark.synthetic import synthetic_splits, synthetic_omniglot
    background, evaluation = synthetic_splits()      # what check_method runs on
    data = synthetic_omniglot()                      # an Omniglot with both splits
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from benchmark.data import DRAWINGS, IMAGE_SIZE, Omniglot, OmniglotSplit, make_split

GRID, BLOCK, SHIFT, FLIPS = 8, 9, 1, 30
# Six background alphabets leave room for methods that hold some out for validation.
CHECK_BACKGROUND = {f"Check_{letter}": 4 for letter in "ABCDEF"}
CHECK_EVALUATION = {f"Check_{letter}": 8 for letter in "GHI"}


def synthetic_split(name: str, alphabets: dict[str, int], rng: np.random.Generator) -> OmniglotSplit:
    """A split with `alphabets[alphabet]` characters in each alphabet, drawn from `rng`."""
    size = GRID * BLOCK
    offset = (IMAGE_SIZE - size - SHIFT) // 2
    count = sum(alphabets.values())
    images = np.zeros((count, DRAWINGS, IMAGE_SIZE, IMAGE_SIZE), np.uint8)
    for c in range(count):
        blob = np.kron((rng.random((GRID, GRID)) < 0.5).astype(np.uint8), np.ones((BLOCK, BLOCK), np.uint8))
        for d in range(DRAWINGS):
            y, x = offset + rng.integers(0, SHIFT + 1, size=2)
            images[c, d, y:y + size, x:x + size] = blob
            flips = rng.integers(0, IMAGE_SIZE, size=(FLIPS, 2))
            images[c, d, flips[:, 0], flips[:, 1]] ^= 1
    alphabet = np.array([a for a, n in alphabets.items() for _ in range(n)])
    character = np.array([f"character{i + 1:02d}" for n in alphabets.values() for i in range(n)])
    return make_split(name, images, alphabet, character)


def synthetic_splits(seed: int = 0, background: dict[str, int] = CHECK_BACKGROUND,
                     evaluation: dict[str, int] = CHECK_EVALUATION) -> tuple[OmniglotSplit, OmniglotSplit]:
    """(background, evaluation) drawn from one seed: by default 24 characters each, in 6 and 3
    alphabets (the method contract's data)."""
    rng = np.random.default_rng(seed)
    return synthetic_split("background", background, rng), synthetic_split("evaluation", evaluation, rng)


def synthetic_omniglot(root: str | Path = "synthetic", seed: int = 0, background: dict[str, int] = CHECK_BACKGROUND,
                       evaluation: dict[str, int] = CHECK_EVALUATION) -> Omniglot:
    """Both splits as an `Omniglot`, as `load_omniglot` returns the real data."""
    return Omniglot(Path(root), *synthetic_splits(seed, background, evaluation))

"""The tiny synthetic Omniglot-like splits the method contract (benchmark/checks.py) runs on.

Also handy in a plugin's own tests: `from benchmark.checks import synthetic_splits` (re-exported
there) or from here.
"""

from __future__ import annotations

import numpy as np

from benchmark.data import DRAWINGS, IMAGE_SIZE, make_split


def synthetic_splits(seed: int = 0):
    """(background, evaluation): 24 characters each, in 6 and 3 alphabets, trivially separable.

    Six background alphabets leave room for methods that hold some out for validation.

    A character is a random 8x8 grid of 9-pixel blocks; its 20 drawings shift it by at most
    one pixel and flip 30 pixels, so any two drawings of one character differ in fewer
    pixels than any drawings of two characters (tests/test_checks.py checks it), also after
    downsampling.
    """
    rng = np.random.default_rng(seed)
    grid, block, shift = 8, 9, 1
    size = grid * block
    offset = (IMAGE_SIZE - size - shift) // 2

    def split(name: str, alphabets: list[str], per_alphabet: int):
        count = len(alphabets) * per_alphabet
        images = np.zeros((count, DRAWINGS, IMAGE_SIZE, IMAGE_SIZE), np.uint8)
        for c in range(count):
            blob = np.kron((rng.random((grid, grid)) < 0.5).astype(np.uint8), np.ones((block, block), np.uint8))
            for d in range(DRAWINGS):
                y, x = offset + rng.integers(0, shift + 1, size=2)
                images[c, d, y:y + size, x:x + size] = blob
                flips = rng.integers(0, IMAGE_SIZE, size=(30, 2))
                images[c, d, flips[:, 0], flips[:, 1]] ^= 1
        alphabet = np.repeat(alphabets, per_alphabet)
        character = np.array([f"character{i % per_alphabet + 1:02d}" for i in range(count)])
        return make_split(name, images, alphabet, character)

    return (split("background", ["Check_A", "Check_B", "Check_C", "Check_D", "Check_E", "Check_F"], 4),
            split("evaluation", ["Check_G", "Check_H", "Check_I"], 8))

"""Tiny synthetic Omniglot-like data, made by the tests themselves.

Each character is a distinct random blob of ink; its 20 drawings are that blob shifted by a
pixel or two and with a few pixels flipped, so pixel 1-NN separates characters easily.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from benchmark.data import Omniglot, make_split


def synthetic_images(n_characters: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    images = np.zeros((n_characters, 20, 105, 105), dtype=np.uint8)
    for c in range(n_characters):
        blob = (rng.random((15, 15)) < 0.5).astype(np.uint8)
        blob = np.kron(blob, np.ones((5, 5), np.uint8))  # 75x75 blocky strokes
        for d in range(20):
            dy, dx = rng.integers(0, 4, size=2)
            image = np.zeros((105, 105), np.uint8)
            image[15 + dy:90 + dy, 15 + dx:90 + dx] = blob
            flips = rng.integers(0, 105, size=(30, 2))
            image[flips[:, 0], flips[:, 1]] ^= 1
            images[c, d] = image
    return images


def synthetic_split(name: str, alphabets: dict[str, int], seed: int = 0):
    """A split with `alphabets[name]` characters per alphabet."""
    names = [a for a, count in alphabets.items() for _ in range(count)]
    characters = [f"character{i + 1:02d}" for count in alphabets.values() for i in range(count)]
    return make_split(name, synthetic_images(len(names), seed), np.array(names), np.array(characters))


def synthetic_omniglot(root: Path | str = "synthetic") -> Omniglot:
    background = synthetic_split("background", {"Alpha": 6, "Beta": 5, "Gamma": 5}, seed=1)
    evaluation = synthetic_split("evaluation", {"Delta": 8, "Epsilon": 6, "Zeta": 4}, seed=2)
    return Omniglot(Path(root), background, evaluation)

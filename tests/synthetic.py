"""The layout of the tests' synthetic Omniglot (the generator is benchmark/synthetic.py).

Alphabets of different sizes, so that within-alphabet episodes have a largest N to hit.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from benchmark import synthetic
from benchmark.data import Omniglot

BACKGROUND = {"Alpha": 6, "Beta": 5, "Gamma": 5}
EVALUATION = {"Delta": 8, "Epsilon": 6, "Zeta": 4}


def synthetic_split(name: str, alphabets: dict[str, int], seed: int = 0):
    """A split with `alphabets[name]` characters per alphabet."""
    return synthetic.synthetic_split(name, alphabets, np.random.default_rng(seed))


def synthetic_omniglot(root: Path | str = "synthetic") -> Omniglot:
    return synthetic.synthetic_omniglot(root, seed=1, background=BACKGROUND, evaluation=EVALUATION)

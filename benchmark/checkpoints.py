"""A cache of trained weights, keyed by everything that determines them.

The key is a hash of the method's name, hyperparameters, training seed, the data's sha256
and a format version: change any of them and the method trains again. Files are written
atomically and loaded with `weights_only=True`, so loading never runs pickled code; a file
that is corrupt or was made for another key is reported and ignored (the method retrains).
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import Any

import torch

CHECKPOINT_FORMAT = 1


def checkpoint_key(method_name: str, params: dict[str, Any], seed: int, data_sha256: str,
                   version: int = 1) -> str:
    """Stable hash of what determines trained weights (`version`: bump when training changes)."""
    payload = json.dumps({"method": method_name, "params": params, "seed": seed,
                          "data": data_sha256, "version": version, "format": CHECKPOINT_FORMAT},
                         sort_keys=True, default=str)
    return hashlib.sha256(payload.encode()).hexdigest()


class CheckpointStore:
    def __init__(self, root: str | Path, log=print):
        self.root = Path(root)
        self.log = log

    def path(self, method_name: str, key: str) -> Path:
        return self.root / f"{method_name}-{key[:16]}.pt"

    def load(self, method_name: str, key: str) -> dict | None:
        """The saved state for this key, or None if there is none or it cannot be trusted."""
        path = self.path(method_name, key)
        if not path.exists():
            return None
        try:
            payload = torch.load(path, map_location="cpu", weights_only=True)
        except Exception as error:  # truncated, corrupt, or holding objects that are not weights
            self.log(f"checkpoint {path} is unreadable ({type(error).__name__}); training again")
            return None
        if not isinstance(payload, dict) or payload.get("key") != key or "state" not in payload:
            self.log(f"checkpoint {path} belongs to another configuration; training again")
            return None
        return payload["state"]

    def save(self, method_name: str, key: str, state: dict) -> Path:
        path = self.path(method_name, key)
        path.parent.mkdir(parents=True, exist_ok=True)
        temporary = path.with_name(path.name + f".tmp{os.getpid()}")
        torch.save({"key": key, "state": state}, temporary)
        os.replace(temporary, path)
        return path

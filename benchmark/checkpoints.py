"""A cache of trained weights, keyed by everything that determines them.

The key is a hash of the method's name, hyperparameters, training seed, the data's sha256
and a format version: change any of them and the method trains again. A file holds
`{"key", "state", "sha256"}`: the key it was made for and a sha256 of the state's contents.

A checkpoint is never silently used when it cannot be trusted: `CheckpointStore.load`
returns None, and logs why, for a file that is truncated or corrupt (unreadable, or its
contents do not hash to the sha256 saved with them), made for another key, or holding
anything but plain containers and tensors. Loading uses `torch.load(weights_only=True)`,
so unpickling never runs code or builds arbitrary objects.

Trained methods do not use it directly: `benchmark.training.load_or_train` does, like this:

    state = context.checkpoints.load(self.name, key)
    if state is None or not load_state_into(model, state["weights"], log=context.log):
        train(model)                      # retrain: the checkpoint was missing or foreign
        context.checkpoints.save(self.name, key, {"weights": model.state_dict()})

`load_state_into(model, state, log)` is the shape check: it loads `state` into the module
only if it has exactly the module's parameter and buffer names, shapes and dtypes, and
otherwise logs the first differences and returns False, leaving the module untouched.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch

from benchmark.files import atomic_output

CHECKPOINT_FORMAT = 1


def checkpoint_key(method_name: str, params: dict[str, Any], seed: int, data_sha256: str,
                   version: int = 1) -> str:
    """Stable hash of what determines trained weights (`version`: bump when training changes)."""
    payload = json.dumps({"method": method_name, "params": params, "seed": seed,
                          "data": data_sha256, "version": version, "format": CHECKPOINT_FORMAT},
                         sort_keys=True, default=str)
    return hashlib.sha256(payload.encode()).hexdigest()


def state_sha256(state: Any) -> str:
    """A sha256 of a state's structure and contents: names, dtypes, shapes and tensor bytes."""
    digest = hashlib.sha256()
    _feed(digest, state)
    return digest.hexdigest()


def _feed(digest, value) -> None:
    if isinstance(value, torch.Tensor):
        tensor = value.detach().to("cpu").contiguous().reshape(-1)
        digest.update(f"tensor {tensor.dtype} {tuple(value.shape)};".encode())
        digest.update(tensor.view(torch.uint8).numpy().tobytes() if tensor.numel() else b"")
    elif isinstance(value, Mapping):
        digest.update(f"dict {len(value)};".encode())
        for key in sorted(value, key=repr):
            digest.update(f"{key!r}:".encode())
            _feed(digest, value[key])
    elif isinstance(value, (list, tuple)):
        digest.update(f"{type(value).__name__} {len(value)};".encode())
        for item in value:
            _feed(digest, item)
    else:  # the plain values weights_only allows: numbers, strings, None, bools
        digest.update(f"{type(value).__name__} {value!r};".encode())


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
        if payload.get("sha256") != state_sha256(payload["state"]):
            self.log(f"checkpoint {path} is corrupt (its contents do not match their sha256); "
                     f"training again")
            return None
        return payload["state"]

    def save(self, method_name: str, key: str, state: dict) -> Path:
        path = self.path(method_name, key)
        path.parent.mkdir(parents=True, exist_ok=True)
        with atomic_output(path) as handle:
            torch.save({"key": key, "state": state, "sha256": state_sha256(state)}, handle)
        return path


def load_state_into(model: torch.nn.Module, state, log=print) -> bool:
    """Load `state` into `model` if it matches the model's names, shapes and dtypes exactly.

    Returns True when loaded. Otherwise logs one line naming the first differences and returns
    False without touching the model, so the caller trains instead.
    """
    expected = model.state_dict()
    if not isinstance(state, Mapping):
        log(f"checkpoint does not fit {type(model).__name__}: it holds a {type(state).__name__}, "
            f"not a state dict; training again")
        return False
    problems = [f"missing {name}" for name in expected if name not in state]
    problems += [f"unexpected {name!r}" for name in state if name not in expected]
    for name, tensor in expected.items():
        value = state.get(name)
        if name not in state:
            continue
        if not isinstance(value, torch.Tensor):
            problems.append(f"{name} is a {type(value).__name__}, not a tensor")
        elif value.shape != tensor.shape or value.dtype != tensor.dtype:
            problems.append(f"{name} is {value.dtype} {tuple(value.shape)}, the model has "
                            f"{tensor.dtype} {tuple(tensor.shape)}")
    if not problems:
        try:
            model.load_state_dict(state, strict=True)
            return True
        except (RuntimeError, TypeError, ValueError) as error:
            problems.append(str(error).splitlines()[0])
    shown = "; ".join(problems[:3]) + (f"; and {len(problems) - 3} more" if len(problems) > 3 else "")
    log(f"checkpoint does not fit {type(model).__name__} ({shown}); training again")
    return False

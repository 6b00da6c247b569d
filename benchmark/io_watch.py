"""Seeing the files a piece of code opens and the connections it makes: the method contract
(benchmark/checks.py) uses it to check that a constructor only stores its arguments."""

from __future__ import annotations

import builtins
import contextlib
import io
import os
import socket

_MODULE_SUFFIXES = (".py", ".pyc", ".so", ".pyd", ".pth")


@contextlib.contextmanager
def watched_io():
    """Collect the files opened and connections made inside the block (by wrapping `open`,
    `os.open` and `socket.connect` for its duration, and restoring them after)."""
    events: list[str] = []
    originals = [(builtins, "open", builtins.open), (io, "open", io.open), (os, "open", os.open),
                 (socket.socket, "connect", socket.socket.connect)]

    def noting_files(original):
        def opener(file, *args, **kwargs):
            path = os.fsdecode(file) if isinstance(file, (str, bytes, os.PathLike)) else None
            # Imports done lazily inside __init__ are fine; reading data or weights is not.
            if path and not path.endswith(_MODULE_SUFFIXES) and "__pycache__" not in path \
                    and not path.startswith(("/proc/", "/sys/", "/dev/")):
                events.append(f"the file {path}")
            return original(file, *args, **kwargs)
        return opener

    def connect(self, address):
        events.append(f"the network ({address})")
        return originals[3][2](self, address)

    replacements = [noting_files(builtins.open), noting_files(io.open), noting_files(os.open), connect]
    for (owner, name, _), replacement in zip(originals, replacements):
        setattr(owner, name, replacement)
    try:
        yield events
    finally:
        for owner, name, original in originals:
            setattr(owner, name, original)

"""Trained weights that ship with the project, so that a first `--methods all` trains nothing.

`weights/` holds checkpoints of the default config's trained methods (a few hundred
kilobytes each) and `weights/MANIFEST.json`, one entry per file:

    {"file": "protonet-1bc422ea319a9d7c.pt", "method": "protonet", "key": "<checkpoint key>",
     "sha256": "<the file's bytes>", "training_code": "<fingerprint>", "code_files": [...],
     "config": "default", "trained": {"commit", "date", "machine", "train_seconds"}}

A fit uses a shipped file only when nothing in the checkpoint cache fits, `--retrain` was not
given, its checkpoint key is the fit's (same method, hyperparameters, seed, data and version),
its bytes hash to the manifest's sha256 (else: refused as tampered with) and its training code
is today's (else: refused as stale). **Training code** is the method's module and every
project module it imports, transitively, as parsed code: comments and docstrings do not count,
any other edit does (`training_code`). The same fingerprint guards the checkpoint cache
(benchmark/training.py), and `tests/test_shipped_weights.py` fails when a shipped file is
stale, naming the command that regenerates them:

    python run_benchmark.py ship-weights      # fits (or takes from the cache) and writes weights/
"""

from __future__ import annotations

import ast
import hashlib
import json
import shutil
from pathlib import Path
from typing import Any

from benchmark.checkpoints import CheckpointStore
from benchmark.files import write_atomically
from benchmark.paths import PROJECT_ROOT

WEIGHTS_DIR = PROJECT_ROOT / "weights"
MANIFEST_NAME = "MANIFEST.json"
REGENERATE = "python run_benchmark.py ship-weights"
# Project modules that cannot change trained weights: messages, registration, file plumbing.
NOT_TRAINING_CODE = frozenset({"benchmark.errors", "benchmark.registry", "benchmark.files", "benchmark.paths",
                               "benchmark.checkpoints", "benchmark.shipped_weights", "benchmark.io_watch",
                               "benchmark.limits", "benchmark.threads", "benchmark.download"})


def module_path(name: str) -> Path | None:
    """The project file of a module name, None for a module outside the project."""
    base = PROJECT_ROOT.joinpath(*name.split("."))
    for path in (base.with_suffix(".py"), base / "__init__.py"):
        if path.is_file():
            return path
    return None


def _imported_modules(tree: ast.AST) -> set[str]:
    """Names of the modules a parsed file imports, anywhere in it (functions included)."""
    names = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module)
            names.update(f"{node.module}.{alias.name}" for alias in node.names)  # `from methods import x`
    return names


def _without_docstrings(tree: ast.AST) -> ast.AST:
    for node in ast.walk(tree):
        if isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)):
            body = node.body
            if body and isinstance(body[0], ast.Expr) and isinstance(body[0].value, ast.Constant) \
                    and isinstance(body[0].value.value, str):
                node.body = body[1:] or [ast.Pass()]
    return tree


def training_code(module_name: str) -> dict[str, str]:
    """{project-relative path: sha256 of its parsed code} of `module_name` and the project modules
    it imports, transitively, less NOT_TRAINING_CODE."""
    hashes, pending = {}, [module_name]
    seen = set()
    while pending:
        name = pending.pop()
        path = module_path(name)
        if name in seen or name in NOT_TRAINING_CODE or path is None:
            continue
        seen.add(name)
        tree = ast.parse(path.read_text(), filename=str(path))
        pending.extend(sorted(_imported_modules(tree)))
        code = ast.dump(_without_docstrings(tree), include_attributes=False)
        hashes[path.relative_to(PROJECT_ROOT).as_posix()] = hashlib.sha256(code.encode()).hexdigest()
    return dict(sorted(hashes.items()))


def code_fingerprint(module_name: str) -> str:
    return hashlib.sha256(json.dumps(training_code(module_name), sort_keys=True).encode()).hexdigest()


def file_sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


class ShippedWeights:
    """The read-only store of weights/: `load` hands out a state only when it can be trusted."""

    def __init__(self, root: str | Path = WEIGHTS_DIR, log=print):
        self.root = Path(root)
        self.log = log
        self.files = CheckpointStore(self.root, log=log)  # the files' format and their own checks

    def manifest(self) -> dict[str, Any]:
        path = self.root / MANIFEST_NAME
        if not path.is_file():
            return {"format": 1, "weights": []}
        return json.loads(path.read_text())

    def entry(self, method_name: str, key: str) -> dict | None:
        return next((entry for entry in self.manifest()["weights"]
                     if entry["method"] == method_name and entry["key"] == key), None)

    def problem(self, entry: dict) -> str | None:
        """Why an entry cannot be used (missing, tampered with, stale), or None."""
        path = self.root / entry["file"]
        if not path.is_file():
            return f"shipped weights {path} are missing"
        if file_sha256(path) != entry["sha256"]:
            return f"shipped weights {path} do not match their sha256 in {MANIFEST_NAME}: refused as tampered with"
        module = _method_module(entry["method"])
        if module is not None and code_fingerprint(module) != entry["training_code"]:
            changed = sorted(set(training_code(module).items()) ^ set(entry.get("code_files", {}).items()))
            files = sorted({name for name, _ in changed}) or ["the set of modules"]
            return (f"shipped weights {path} are stale: their training code changed since ({', '.join(files)}); "
                    f"regenerate them with `{REGENERATE}`")
        return None

    def load(self, method_name: str, key: str) -> dict | None:
        entry = self.entry(method_name, key)
        if entry is None:
            return None
        problem = self.problem(entry)
        if problem is not None:
            self.log(f"{problem}; training instead")
            return None
        return self.files.load(method_name, key)

    def path(self, method_name: str, key: str) -> Path:
        return self.files.path(method_name, key)

    def add(self, method_name: str, key: str, source: Path, config_name: str, trained: dict) -> Path:
        """Copy a checkpoint file in and record it (replacing an entry of the same method and config)."""
        self.root.mkdir(parents=True, exist_ok=True)
        target = self.path(method_name, key)
        shutil.copyfile(source, target)
        module = _method_module(method_name)
        entry = {"file": target.name, "method": method_name, "key": key, "sha256": file_sha256(target),
                 "training_code": code_fingerprint(module), "code_files": training_code(module),
                 "config": config_name, "trained": trained}
        manifest = self.manifest()
        kept = [old for old in manifest["weights"] if (old["method"], old["config"]) != (method_name, config_name)]
        in_use = {old["file"] for old in kept} | {target.name}
        for old in manifest["weights"]:  # the replaced entry's file, unless another entry still names it
            if old["file"] not in in_use:
                (self.root / old["file"]).unlink(missing_ok=True)
        manifest["weights"] = sorted(kept + [entry], key=lambda item: (item["config"], item["method"]))
        write_atomically(self.root / MANIFEST_NAME, json.dumps(manifest, indent=1) + "\n")
        return target


def _method_module(method_name: str) -> str | None:
    from benchmark import registry

    try:
        return registry.get_method(method_name).__module__
    except Exception:  # a method no longer registered: nothing to compare its code with
        return None

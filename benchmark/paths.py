"""Where the project's own files are: the project root and the folders under it, written once."""

from __future__ import annotations

from pathlib import Path

PROJECT_ROOT = Path(__file__).resolve().parent.parent
CONFIG_DIR = PROJECT_ROOT / "configs"
DEFAULT_CONFIG = CONFIG_DIR / "default.yaml"
SMOKE_CONFIG = CONFIG_DIR / "smoke.yaml"
DEFAULT_DATA_DIR = PROJECT_ROOT / "data" / "omniglot"
CHECKPOINT_DIR = PROJECT_ROOT / "results" / "checkpoints"
BASELINE_DIR = PROJECT_ROOT / "results" / "baselines"
EXAMPLES_DIR = PROJECT_ROOT / "examples"
# Relative on purpose: a run started from another folder writes its results there.
RUNS_DIR = Path("results") / "runs"


def project_file(given: str | Path) -> Path:
    """`given` as it is, or under the project root when it is relative and not found here.

    So `--config configs/smoke.yaml` works from any folder, and a user's own file wins.
    """
    path = Path(given)
    if not path.exists() and not path.is_absolute() and (PROJECT_ROOT / path).exists():
        return PROJECT_ROOT / path
    return path

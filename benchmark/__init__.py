"""One-shot learning benchmark harness for Omniglot: the public API.

What plugins, perf/ scripts and notebooks use, in one namespace:

    import benchmark

    config = benchmark.load_config("configs/default.yaml")
    data = benchmark.load_omniglot()                          # $OMNIGLOT_DIR or data/omniglot
    task_sets = benchmark.resolve_task_sets(config, data)     # seeded episodes, one set per (task set, N)
    method = benchmark.create_method("nearest_neighbor", config.methods["nearest_neighbor"])
    method.fit(data.background, benchmark.FitContext(progress=False))
    scores = method.predict(task_sets[0].batch(data))         # (episodes, queries, N)

Names are imported when first used, so `import benchmark` costs nothing until then (the
command line's --help stays instant). Everything else in the package is implementation.
"""

from __future__ import annotations

import importlib

__version__ = "0.1.0"

# public name -> the module that owns it
_PUBLIC = {
    # the method contract (benchmark/api.py)
    "Method": "benchmark.api", "EmbeddingMethod": "benchmark.api", "Capabilities": "benchmark.api",
    "EpisodeBatch": "benchmark.api", "FitContext": "benchmark.api", "checked_scores": "benchmark.api",
    "score_by_embedding": "benchmark.api",
    # methods by name
    "register_method": "benchmark.registry", "get_method": "benchmark.registry",
    "create_method": "benchmark.registry", "load_plugin": "benchmark.registry",
    "available_names": "benchmark.registry", "describe_methods": "benchmark.registry",
    # checking a method against the contract
    "check_method": "benchmark.checks", "parametrize_with_checks": "benchmark.checks",
    "synthetic_omniglot": "benchmark.synthetic", "synthetic_splits": "benchmark.synthetic",
    # configs, data, episodes
    "load_config": "benchmark.config", "config_from_dict": "benchmark.config", "RunConfig": "benchmark.config",
    "StatsConfig": "benchmark.config",
    "load_omniglot": "benchmark.data", "official_runs_zip": "benchmark.data",
    "resolve_task_sets": "tasks.sets", "TaskSet": "tasks.sets", "generate_episodes": "tasks.episodes",
    # training a method (the one loop, its schedule, validation and checkpoint cache)
    "train": "benchmark.training", "load_or_train": "benchmark.training", "Schedule": "benchmark.training",
    "learning_rate_factor": "benchmark.training", "Validator": "benchmark.training",
    "split_background": "benchmark.training", "split_tensor": "benchmark.training",
    "resize_images": "benchmark.training", "seeded_generator": "benchmark.training",
    "CheckpointStore": "benchmark.checkpoints",
    # running, reading and reporting runs
    "run_benchmark": "benchmark.runner", "RunOptions": "benchmark.runner", "RunFolder": "benchmark.run_folder",
    "report_runs": "benchmark.report", "Environment": "benchmark.environment",
    "peak_rss_mb": "benchmark.environment",
    # errors
    "BenchmarkError": "benchmark.errors", "ConfigError": "benchmark.errors", "DataError": "benchmark.errors",
    "MethodError": "benchmark.errors",
}
# Public names that are not spelled the same in their module.
_RENAMED = {"generate_episodes": "generate"}

__all__ = sorted(_PUBLIC)


def __getattr__(name: str):
    if name not in _PUBLIC:
        raise AttributeError(f"module 'benchmark' has no attribute {name!r}")
    value = getattr(importlib.import_module(_PUBLIC[name]), _RENAMED.get(name, name))
    globals()[name] = value  # the next lookup is a plain attribute
    return value


def __dir__() -> list[str]:
    return sorted([*globals(), *_PUBLIC])

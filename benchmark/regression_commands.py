"""The `freeze` and `update-baselines` commands (see benchmark/regression.py and README).

    python run_benchmark.py freeze --config configs/smoke.yaml       # write its frozen episodes
    python run_benchmark.py update-baselines [--methods a,b]         # rewrite the golden numbers
    python run_benchmark.py update-baselines --check                 # compare, write nothing

They share the command line's helpers (benchmark/cli.py) for parsing, data and task sets.
"""

from __future__ import annotations

from pathlib import Path

from benchmark.cli import PROJECT_ROOT, _load_data, _log, _method_names, _Parser, _task_sets


def _parser(prog: str, description: str) -> _Parser:
    parser = _Parser(prog=f"run_benchmark.py {prog}", description=description)
    parser.add_argument("--config", default="configs/smoke.yaml", help="YAML config (default: "
                        "configs/smoke.yaml)")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                        help="override a config field, e.g. --set frozen=/tmp/frozen")
    parser.add_argument("--data-dir", default=None, help="Omniglot directory (default: $OMNIGLOT_DIR, "
                        "else data/omniglot)")
    parser.add_argument("--no-download", action="store_true", help="never download missing data")
    return parser


def _config_path(given: str) -> Path:
    """As given, or under the project root when it is relative and not found here."""
    path = Path(given)
    if not path.exists() and not path.is_absolute() and (PROJECT_ROOT / path).exists():
        return PROJECT_ROOT / path
    return path


def _shown(path: Path) -> str:
    """A path relative to the current directory when it is below it (shorter to read)."""
    try:
        return str(Path(path).resolve().relative_to(Path.cwd().resolve()))
    except ValueError:
        return str(path)


def freeze_command(argv: list[str]) -> int:
    parser = _parser("freeze", "Generate the task sets of a config and write them to "
                                "frozen episode files (ids, parameters and hashes).")
    parser.add_argument("--out", default=None, help="directory to write into (default: the "
                        "config's `frozen` directory)")
    args = parser.parse_args(argv)
    from benchmark.config import load_config
    from benchmark.errors import ConfigError
    from tasks.sets import freeze, frozen_directory, stale_frozen_files

    config = load_config(_config_path(args.config), args.overrides)
    directory = Path(args.out) if args.out else frozen_directory(config)
    if directory is None:
        raise ConfigError(f"config {args.config} names no frozen directory: add `frozen: "
                          f"tasks/frozen/{config.name}` to it, or pass --out DIR")
    data = _load_data(args.data_dir, download=not args.no_download, progress=False)
    task_sets = _task_sets(config, data, download=not args.no_download, progress=False, use_frozen=False)
    written = freeze(task_sets, config, directory)
    for file in written:
        print(f"{file.status:<9}  {_shown(file.path)}  {file.episodes} episodes  ids sha256 {file.ids_sha256}")
    for path in stale_frozen_files(directory, written):
        print(f"not in the config, left alone: {_shown(path)}")
    return 0


def update_baselines_command(argv: list[str]) -> int:
    parser = _parser("update-baselines", "Run a config's methods on its frozen episodes "
                                "(CPU, deterministic) and rewrite its golden numbers, printing what "
                                "changed; with --check, compare with them instead (exit 1 if a "
                                "number moved).")
    parser.add_argument("--methods", default="all", help="'all' (the config's methods) or a "
                        "comma-separated list; the other methods' baselines are kept")
    parser.add_argument("--baselines", default=None, help="golden file (default: "
                        "results/baselines/CONFIG_NAME.json)")
    parser.add_argument("--check", action="store_true", help="compare with the golden file, "
                        "write nothing")
    args = parser.parse_args(argv)
    import shlex

    from benchmark import regression, registry
    from benchmark.config import check_hyperparameters, load_config
    from benchmark.runner import git_commit

    config = load_config(_config_path(args.config), args.overrides)
    method_names = _method_names(args.methods, config)
    for name in method_names:  # fail on a typo before loading data or running anything
        check_hyperparameters(name, registry.get_method(name), config.methods.get(name, {}))
    path = Path(args.baselines) if args.baselines else PROJECT_ROOT / "results" / "baselines" / f"{config.name}.json"
    data = _load_data(args.data_dir, download=not args.no_download, progress=False)
    task_sets = _task_sets(config, data, download=not args.no_download, progress=False)
    if args.check:
        baseline = regression.read_baseline(path)
        run = regression.run_smoke(config, method_names, data, task_sets, log=_log)
        comparison = regression.compare(baseline, run, method_names, config, task_sets)
        print(comparison.report())
        return 0 if comparison.ok else 1
    old = regression.read_baseline(path) if path.exists() else None
    command = shlex.join(["python", "run_benchmark.py", "update-baselines", *argv])
    entries, failures = regression.measure(config, method_names, data, task_sets, command,
                                           git_commit(), log=_log)
    new = regression.updated_baseline(old, entries, args.config, task_sets, method_names,
                                      keep_others=args.methods.strip() != "all")
    regression.write_baseline(path, new)
    print("\n".join(regression.diff_lines(old, new)))
    print(f"wrote {_shown(path)}")
    for name, reason in failures.items():
        _log(f"FAILED {name}: {reason} (its previous baseline, if any, is kept)")
    return 1 if failures else 0

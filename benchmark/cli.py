"""The command line: parse arguments, load config and data, call the runner, print the table.

    python run_benchmark.py --methods all              # run the default config
    python run_benchmark.py --resume RUN_DIR           # finish an interrupted run
    python run_benchmark.py download                   # fetch the official Omniglot files
    python run_benchmark.py report RUN_DIR [RUN_DIR]   # rebuild tables and plots from records
    python run_benchmark.py freeze                     # write configs/smoke.yaml's frozen episodes
    python run_benchmark.py update-baselines [--check] # rewrite (or check) the CI golden numbers
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

PROJECT_ROOT = Path(__file__).resolve().parent.parent
COMMANDS = ("run", "download", "report", "freeze", "update-baselines")


def main(argv: list[str] | None = None) -> int:
    from benchmark.errors import BenchmarkError

    argv = list(sys.argv[1:] if argv is None else argv)
    command = argv.pop(0) if argv and argv[0] in COMMANDS else "run"
    handlers = {"run": _run, "download": _download, "report": _report, "freeze": _freeze,
                "update-baselines": _update_baselines}
    try:
        return handlers[command](argv)
    except BenchmarkError as error:
        print(f"error: {error}", file=sys.stderr)
        return error.exit_code
    except KeyboardInterrupt:
        print("\ninterrupted: finished chunks are saved; rerun the same command with "
              "--out pointing at the run folder to resume", file=sys.stderr)
        return 130


class _Parser(argparse.ArgumentParser):
    """argparse, but usage errors raise (one line, exit code 2) instead of exiting."""

    def error(self, message):
        from benchmark.errors import ConfigError

        raise ConfigError(f"{message} (see --help)")


def _run_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="run_benchmark.py", description="Benchmark one-shot learning methods on "
                     "Omniglot. Other commands: download, report RUN_DIR.")
    parser.add_argument("--methods", default=None,
                        help="'all' (the config's methods, the default) or a comma-separated list "
                        "of names; with --resume, default: the methods the run was started with")
    parser.add_argument("--config", default=None, help="YAML config (default: configs/default.yaml)")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                        help="override a config field, e.g. --set task_sets.cross.episodes=100")
    parser.add_argument("--out", default=None, help="run folder (default: results/runs/TIME-CONFIG); "
                        "an existing run folder is resumed")
    parser.add_argument("--resume", default=None, metavar="RUN_DIR",
                        help="finish an interrupted run: reuses the config, methods and seeds saved "
                        "in RUN_DIR/run.json (--set, --methods and --device still apply)")
    parser.add_argument("--data-dir", default=None, help="Omniglot directory (default: $OMNIGLOT_DIR, "
                        "else data/omniglot)")
    parser.add_argument("--no-download", action="store_true", help="never download missing data")
    parser.add_argument("--device", choices=["auto", "cpu", "cuda"], default=None,
                        help="override the config's device")
    parser.add_argument("--retrain", action="store_true", help="ignore cached checkpoints")
    parser.add_argument("--seeds", default=None, metavar="S1,S2,...",
                        help="train and evaluate each trained method once per seed, on the same "
                        "episodes (default: the config's seed); untrained methods run once")
    parser.add_argument("--plugin", action="append", default=[], metavar="FILE.py|MODULE",
                        help="load methods from a plugin file or module (repeatable)")
    parser.add_argument("--list-methods", action="store_true", help="list the methods and exit")
    parser.add_argument("--quiet", action="store_true", help="no progress bars")
    return parser


def _default_config() -> Path:
    local = Path("configs/default.yaml")
    return local if local.exists() else PROJECT_ROOT / "configs" / "default.yaml"


def _log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def _run(argv: list[str]) -> int:
    args = _run_parser().parse_args(argv)
    from benchmark import registry

    for plugin in args.plugin:
        registry.load_plugin(plugin)
    if args.list_methods:
        rows = registry.describe_methods()
        width = max(len(name) for name, _ in rows)
        for name, summary in rows:
            print(f"{name:<{width}}  {summary}")
        return 0

    from benchmark.config import check_hyperparameters, load_config
    from benchmark.report import report_runs
    from benchmark.runner import RunOptions, resolve_device, run_benchmark

    seeds, data_dir = None, args.data_dir
    if args.resume is not None:
        out_dir, config, method_names, seeds, data_dir = _resumed_run(args)
    else:
        config_path = Path(args.config) if args.config else _default_config()
        config = load_config(config_path, args.overrides)
        method_names = _method_names(args.methods or "all", config)
        out_dir = _out_dir(args.out, config.name)
    if args.seeds is not None:  # with --resume: the run's seeds, then these
        seeds = tuple(dict.fromkeys([*(seeds or ()), *_parse_seeds(args.seeds)]))
    for name in method_names:  # fail on a typo before loading data or training anything
        check_hyperparameters(name, registry.get_method(name), config.methods.get(name, {}))
    device = resolve_device(args.device or config.device)
    data = _load_data(data_dir, download=not args.no_download, progress=not args.quiet)
    task_sets = _task_sets(config, data, download=not args.no_download, progress=not args.quiet)
    options = RunOptions(device=device, retrain=args.retrain, progress=not args.quiet,
                         checkpoint_dir=PROJECT_ROOT / "results" / "checkpoints", seeds=seeds, log=_log)
    _log(f"run folder: {out_dir}")
    try:
        outcome = run_benchmark(config, method_names, data, task_sets, out_dir, options)
        if (out_dir / "records.csv").exists() and (out_dir / "records.csv").stat().st_size:
            summary = report_runs([out_dir], out_dir, log=_log, stats=vars(config.stats))
            print((out_dir / "summary.md").read_text(encoding="utf-8"))
            _log(f"wrote {len(summary)} summary rows to {out_dir}")
    except KeyboardInterrupt:
        _log(_interrupted_message(args, out_dir))
        return 130
    for label, reason in outcome.failures.items():
        _log(f"FAILED {label}: {reason}")
    return outcome.exit_code


def _resumed_run(args):
    """(run folder, config, methods, seeds, data dir) of the run that --resume continues.

    The config is the resolved one saved in run.json, so the YAML file it came from may have
    changed or be gone; --set overrides apply on top of it (the runner refuses any that would
    change finished results).
    """
    import copy
    import os

    from benchmark.config import apply_override, config_from_dict
    from benchmark.errors import ConfigError
    from benchmark.run_folder import read_manifest

    run_dir = Path(args.resume)
    if args.config is not None:
        raise ConfigError("--resume reuses the config saved in the run folder's run.json: drop --config")
    if args.out is not None and Path(args.out).resolve() != run_dir.resolve():
        raise ConfigError("--resume RUN_DIR continues the run in RUN_DIR: drop --out")
    if not (run_dir / "run.json").is_file():
        raise ConfigError(f"--resume {run_dir}: there is no run.json there; give a run folder "
                          f"written by run_benchmark.py")
    manifest = read_manifest(run_dir)
    raw = copy.deepcopy(manifest.get("config"))
    if not isinstance(raw, dict):
        raise ConfigError(f"{run_dir / 'run.json'} holds no config to resume with")
    for override in args.overrides:
        apply_override(raw, override)
    config = config_from_dict(raw, source=str(run_dir / "run.json"))
    if args.methods is not None:
        method_names = _method_names(args.methods, config)
    else:
        method_names = [str(name) for name in manifest.get("methods_requested") or []]
        if not method_names:
            raise ConfigError(f"{run_dir / 'run.json'} names no methods: give them with --methods a,b")
    seeds = tuple(int(seed) for seed in manifest.get("seeds") or [config.seed])
    data_dir = args.data_dir
    recorded = (manifest.get("data") or {}).get("root")
    # Where the run found its data, unless told otherwise (the data's hashes are checked anyway).
    if data_dir is None and not os.environ.get("OMNIGLOT_DIR") and recorded and Path(recorded).is_dir():
        data_dir = recorded
    return run_dir, config, method_names, seeds, data_dir


def _interrupted_message(args, out_dir: Path) -> str:
    """What to type to continue: every option the run needs that run.json does not hold."""
    import shlex

    if not (out_dir / "run.json").exists():
        return "\ninterrupted before any results were saved: run the same command again"
    command = ["python", "run_benchmark.py", "--resume", str(out_dir)]
    if args.resume is not None:  # options given to this resume are not in run.json either
        command += [f"--set={override}" for override in args.overrides]
        command += ["--methods", args.methods] if args.methods is not None else []
    for plugin in args.plugin:
        command += ["--plugin", plugin]
    command += ["--data-dir", args.data_dir] if args.data_dir is not None else []
    command += ["--device", args.device] if args.device is not None else []
    command += ["--no-download"] * args.no_download + ["--quiet"] * args.quiet
    return (f"\ninterrupted: finished chunks are saved in {out_dir}; resume with:\n"
            f"  {shlex.join(command)}")


def _parse_seeds(spec: str) -> tuple[int, ...]:
    from benchmark.config import check_seed
    from benchmark.errors import ConfigError

    try:
        seeds = tuple(dict.fromkeys(int(part) for part in spec.split(",") if part.strip()))
    except ValueError:
        raise ConfigError(f"--seeds {spec!r} is malformed: give integers separated by commas, "
                          f"e.g. --seeds 0,1,2") from None
    if not seeds:
        raise ConfigError("--seeds is empty: give integers separated by commas, e.g. --seeds 0,1,2")
    for seed in seeds:
        check_seed(seed, "--seeds")
    return seeds


def _method_names(spec: str, config) -> list[str]:
    from benchmark.errors import ConfigError

    if spec.strip() == "all":
        names = list(config.methods)
        if not names:
            raise ConfigError("the config lists no methods: name them with --methods a,b")
        return names
    names = [name.strip() for name in spec.split(",") if name.strip()]
    if not names:
        raise ConfigError("--methods is empty: give 'all' or names separated by commas")
    return list(dict.fromkeys(names))


def _out_dir(requested: str | None, config_name: str) -> Path:
    from benchmark.errors import ConfigError

    if requested is None:
        stamp = time.strftime("%Y%m%d-%H%M%S")
        return Path("results") / "runs" / f"{stamp}-{config_name}"
    out_dir = Path(requested)
    if not out_dir.parent.is_dir():
        raise ConfigError(f"the parent folder of --out {out_dir} does not exist: create it first "
                          f"or choose another --out")
    if out_dir.exists() and not out_dir.is_dir():
        raise ConfigError(f"--out {out_dir} is a file, not a folder")
    return out_dir


def _load_data(data_dir, download: bool, progress: bool):
    from benchmark.data import load_omniglot

    return load_omniglot(data_dir, download=download, progress=progress)


def _task_sets(config, data, download: bool, progress: bool, use_frozen: bool = True):
    from benchmark.data import official_runs_zip
    from tasks.official import official_episode_set
    from tasks.sets import resolve_task_sets

    def official_runs():
        runs_zip = official_runs_zip(data.root, download=download, progress=progress)
        return official_episode_set(runs_zip, data.evaluation)

    return resolve_task_sets(config, data, official_runs, use_frozen=use_frozen)


def _download(argv: list[str]) -> int:
    parser = _Parser(prog="run_benchmark.py download",
                     description="Fetch the official Omniglot zips (md5-checked) and convert them.")
    parser.add_argument("--data-dir", default=None, help="where to put the data (default: "
                        "$OMNIGLOT_DIR, else data/omniglot)")
    args = parser.parse_args(argv)
    from benchmark.data import download_omniglot, load_omniglot, resolve_data_dir

    target = resolve_data_dir(args.data_dir)
    target.mkdir(parents=True, exist_ok=True)
    download_omniglot(target)
    data = load_omniglot(target, download=False)
    print(f"Omniglot ready in {target}: {data.background.n_characters} background and "
          f"{data.evaluation.n_characters} evaluation characters")
    return 0


def _report(argv: list[str]) -> int:
    parser = _Parser(prog="run_benchmark.py report",
                     description="Rebuild summary tables, paired comparisons and plots from saved "
                     "records; with several run folders (e.g. a CPU and a GPU run of the same "
                     "config), merge them into one report.")
    parser.add_argument("run_dirs", nargs="+", type=Path, help="run folders holding records.csv")
    parser.add_argument("--out", type=Path, default=None,
                        help="where to write the report (default: the run folder; required with "
                        "several runs)")
    args = parser.parse_args(argv)
    from benchmark.errors import ConfigError
    from benchmark.report import report_runs

    if len(args.run_dirs) > 1 and args.out is None:
        raise ConfigError("several run folders: say where the merged report goes with --out DIR")
    out_dir = args.out or args.run_dirs[0]
    if not out_dir.parent.is_dir():
        raise ConfigError(f"the parent folder of --out {out_dir} does not exist: create it first")
    if out_dir.exists() and not out_dir.is_dir():
        raise ConfigError(f"--out {out_dir} is a file, not a folder")
    summary = report_runs(args.run_dirs, out_dir, log=_log)
    print((out_dir / "summary.md").read_text(encoding="utf-8"))
    _log(f"wrote {len(summary)} summary rows to {out_dir}")
    return 0


def _freeze(argv: list[str]) -> int:
    from benchmark.regression_commands import freeze_command

    return freeze_command(argv)


def _update_baselines(argv: list[str]) -> int:
    from benchmark.regression_commands import update_baselines_command

    return update_baselines_command(argv)

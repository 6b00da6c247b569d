"""What each command of the command line does (benchmark/cli.py parses their options).

Each handler takes the parsed arguments and returns the exit code; expected errors are
BenchmarkErrors, which the command line prints as one `error:` line.
"""

from __future__ import annotations

import contextlib
import os
import shlex
import sys
import time
from pathlib import Path

from benchmark.config import apply_override, check_seed, config_from_dict, did_you_mean, load_config
from benchmark.errors import ConfigError
from benchmark.paths import (BASELINE_DIR, CHECKPOINT_DIR, DEFAULT_CONFIG, PROJECT_ROOT, RUNS_DIR, SMOKE_CONFIG,
                             project_file)
from benchmark.run_folder import RunFolder
from benchmark.terminal_summary import terminal_summary
from benchmark.text_table import text_table


def log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


# ---- run ---------------------------------------------------------------------------------------

def run_command(args) -> int:
    from benchmark import registry  # imports torch: not needed by report, download or freeze

    for plugin in args.plugin:
        registry.load_plugin(plugin)
    if args.list_methods:
        print(text_table(("method", "from", "what it does"), registry.describe_methods()))
        return 0
    seeds, data_dir = None, args.data_dir
    if args.resume is not None:
        out_dir, config, method_names, seeds, data_dir = _resumed_run(args)
    else:
        config = load_config(project_file(args.config) if args.config else DEFAULT_CONFIG, args.overrides)
        method_names = method_names_of(args.methods or "all", config)
        out_dir = args.out or RUNS_DIR / f"{time.strftime('%Y%m%d-%H%M%S')}-{config.name}"
    if args.seeds is not None:  # with --resume: the run's seeds, then these
        seeds = tuple(dict.fromkeys([*(seeds or ()), *_parse_seeds(args.seeds)]))
    check_methods(method_names, config, args.overrides)
    with output_folder(out_dir, parents=args.out is None and args.resume is None):
        return _run(args, config, method_names, seeds, data_dir, out_dir)


def _run(args, config, method_names, seeds, data_dir, out_dir: Path) -> int:
    from benchmark.executors import make_executor
    from benchmark.jobs import resolve_device
    from benchmark.report import report_runs
    from benchmark.runner import RunOptions, run_benchmark
    from benchmark.threads import set_threads

    executor = make_executor(args.executor, args.ray_address, args.threads, log=log)
    # In this process the device is checked before the data loads; a cluster's GPUs decide there.
    device = resolve_device(args.device or config.device) if args.executor == "local" else \
        args.device or config.device
    set_threads(args.threads)
    data, task_sets = load_data_and_tasks(config, data_dir, download=not args.no_download, progress=not args.quiet)
    options = RunOptions(device=device, retrain=args.retrain, progress=not args.quiet,
                         checkpoint_dir=CHECKPOINT_DIR, seeds=seeds, log=log, executor=executor)
    log(f"run folder: {out_dir}")
    try:
        outcome = run_benchmark(config, method_names, data, task_sets, out_dir, options)
        if RunFolder(out_dir).has_records():
            report = report_runs([out_dir], out_dir, log=log, stats=config.stats)
            print(terminal_summary(report.summary, report.paired, report.runs, out_dir))
    except KeyboardInterrupt:
        log(_interrupted_message(args, out_dir))
        return 130
    for label, reason in outcome.failures.items():
        log(f"FAILED {label}: {reason}")
    return outcome.exit_code


def _resumed_run(args):
    """(run folder, config, methods, seeds, data dir) of the run that --resume continues.

    The config is the resolved one saved in run.json, so the YAML file it came from may have
    changed or be gone; --set overrides apply on top of it (the runner refuses any that would
    change finished results).
    """
    folder = RunFolder(args.resume)
    if args.config is not None:
        raise ConfigError("--resume reuses the config saved in the run folder's run.json: drop --config")
    if args.out is not None and Path(args.out).resolve() != folder.path.resolve():
        raise ConfigError("--resume RUN_DIR continues the run in RUN_DIR: drop --out")
    if not folder.has_manifest():
        raise ConfigError(f"--resume {folder.path}: there is no run.json there; give a run folder "
                          f"written by run_benchmark.py")
    manifest = folder.read_manifest()
    raw = dict(manifest.config)
    for override in args.overrides:
        apply_override(raw, override)
    config = config_from_dict(raw, source=str(folder.manifest_path))
    if args.methods is not None:
        method_names = method_names_of(args.methods, config)
    else:
        method_names = list(manifest.methods_requested)
        if not method_names:
            raise ConfigError(f"{folder.manifest_path} names no methods: give them with --methods a,b")
    seeds = tuple(manifest.seeds or [config.seed])
    data_dir = args.data_dir
    recorded = manifest.data.root
    # Where the run found its data, unless told otherwise (the data's hashes are checked anyway).
    if data_dir is None and not os.environ.get("OMNIGLOT_DIR") and recorded and Path(recorded).is_dir():
        data_dir = recorded
    return folder.path, config, method_names, seeds, data_dir


def _interrupted_message(args, out_dir: Path) -> str:
    """What to type to continue: every option the run needs that run.json does not hold."""
    if not RunFolder(out_dir).has_manifest():
        return "\ninterrupted before any results were saved: run the same command again"
    command = ["python", "run_benchmark.py", "--resume", str(out_dir)]
    if args.resume is not None:  # options given to this resume are not in run.json either
        command += [f"--set={override}" for override in args.overrides]
        command += ["--methods", args.methods] if args.methods is not None else []
    for plugin in args.plugin:
        command += ["--plugin", plugin]
    command += ["--data-dir", args.data_dir] if args.data_dir is not None else []
    command += ["--device", args.device] if args.device is not None else []
    command += ["--executor", args.executor] if args.executor != "local" else []
    command += ["--ray-address", args.ray_address] if args.ray_address is not None else []
    command += ["--no-download"] * args.no_download + ["--quiet"] * args.quiet
    return (f"\ninterrupted: finished chunks are saved in {out_dir}; resume with:\n"
            f"  {shlex.join(command)}")


def _parse_seeds(spec: str) -> tuple[int, ...]:
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


@contextlib.contextmanager
def output_folder(out_dir: Path, parents: bool = False):
    """Create out_dir for a command that writes into it (one error line when it cannot be),
    and remove it again if the command leaves it empty (it failed before writing anything)."""
    if out_dir.exists() and not out_dir.is_dir():
        raise ConfigError(f"--out {out_dir} is a file, not a folder")
    if not parents and not out_dir.parent.is_dir():
        raise ConfigError(f"the parent folder of --out {out_dir} does not exist: create it first "
                          f"or choose another --out")
    created = not out_dir.exists()
    try:
        out_dir.mkdir(parents=parents, exist_ok=True)
    except OSError as error:
        raise ConfigError(f"cannot create the folder {out_dir} ({error.strerror or error}): choose another "
                          f"--out") from None
    try:
        yield out_dir
    finally:
        if created and out_dir.is_dir() and not any(out_dir.iterdir()):
            out_dir.rmdir()


# ---- shared by the commands that run methods ---------------------------------------------------

def method_names_of(spec: str, config) -> list[str]:
    """'all' (the config's methods) or the comma-separated names, in the order given."""
    if spec.strip() == "all":
        names = list(config.methods)
        if not names:
            raise ConfigError("the config lists no methods: name them with --methods a,b")
        return names
    names = [name.strip() for name in spec.split(",") if name.strip()]
    if not names:
        raise ConfigError("--methods is empty: give 'all' or names separated by commas")
    return list(dict.fromkeys(names))


def check_methods(method_names: list[str], config, overrides: list[str] = ()) -> None:
    """Fail on an unknown method or hyperparameter, or a `--set methods.NAME...` for a method
    this run does not run (a misspelt name), before loading data or training anything."""
    for override in overrides:
        parts = override.partition("=")[0].strip().split(".")
        if parts[0] == "methods" and len(parts) > 1 and parts[1] not in method_names:
            raise ConfigError(f"--set {override}: method {parts[1]!r} is not in this run"
                              f"{did_you_mean(parts[1], method_names)}")
    from benchmark import registry

    for name in method_names:
        registry.create_method(name, config.methods.get(name, {}))


def load_data_and_tasks(config, data_dir, download: bool, progress: bool, use_frozen: bool = True):
    """The Omniglot data and the config's task sets (episodes generated or loaded frozen)."""
    from benchmark.data import load_omniglot
    from tasks.sets import resolve_task_sets

    data = load_omniglot(data_dir, download=download, progress=progress)
    return data, resolve_task_sets(config, data, use_frozen=use_frozen, download=download, progress=progress)


def _shown(path: Path) -> str:
    """A path relative to the current directory when it is below it (shorter to read)."""
    try:
        return str(Path(path).resolve().relative_to(Path.cwd().resolve()))
    except ValueError:
        return str(path)


# ---- download, report ---------------------------------------------------------------------------

def download_command(args) -> int:
    from benchmark.data import NPZ_NAME, download_omniglot, load_omniglot, locate_data_dir, official_runs_zip

    target, source = locate_data_dir(args.data_dir)
    if (target / NPZ_NAME).is_file():
        data = load_omniglot(target, download=False, progress=False)  # refuses a damaged file
        official_runs_zip(target, download=True)  # the 20 official runs, if they are missing
        print(f"Omniglot already present in {target} ({source}): {data.background.n_characters} background "
              f"and {data.evaluation.n_characters} evaluation characters; nothing to download")
        return 0
    log(f"downloading the official Omniglot files into {target} ({source})")
    download_omniglot(target)
    data = load_omniglot(target, download=False)
    print(f"Omniglot ready in {target}: {data.background.n_characters} background and "
          f"{data.evaluation.n_characters} evaluation characters")
    return 0


def report_command(args) -> int:
    from benchmark.report import report_runs

    if len(args.run_dirs) > 1 and args.out is None:
        raise ConfigError("several run folders: say where the merged report goes with --out DIR")
    out_dir = args.out or args.run_dirs[0]
    with output_folder(out_dir):
        report = report_runs(args.run_dirs, out_dir, log=log)
    print(terminal_summary(report.summary, report.paired, report.runs, out_dir))
    return 1 if _say_if_incomplete(args.run_dirs) else 0


def _say_if_incomplete(run_dirs) -> bool:
    """Log, for each run that has not finished what it was asked for, what is missing and the
    command that resumes it; True if any has not."""
    incomplete = False
    for run_dir in run_dirs:
        folder = RunFolder(run_dir)
        missing = folder.read_manifest().missing() if folder.has_manifest() else []
        if missing:
            incomplete = True
            log(f"run {run_dir} is incomplete:")
            for line in missing:
                log(f"  {line}")
            log(f"resume it with: python run_benchmark.py --resume {run_dir}")
    return incomplete


# ---- freeze, update-baselines (benchmark/regression.py, README "Regression checks") ------------

def freeze_command(args) -> int:
    from tasks.sets import freeze, frozen_directory, stale_frozen_files

    config = load_config(project_file(args.config or SMOKE_CONFIG), args.overrides)
    directory = args.out or frozen_directory(config)
    if directory is None:
        raise ConfigError(f"config {args.config} names no frozen directory: add `frozen: "
                          f"tasks/frozen/{config.name}` to it, or pass --out DIR")
    _, task_sets = load_data_and_tasks(config, args.data_dir, download=not args.no_download, progress=False,
                                       use_frozen=False)
    written = freeze(task_sets, directory)
    for file in written:
        print(f"{file.status:<9}  {_shown(file.path)}  {file.episodes} episodes  ids sha256 {file.ids_sha256}")
    for path in stale_frozen_files(directory, written):
        print(f"not in the config, left alone: {_shown(path)}")
    return 0


def update_baselines_command(args) -> int:
    from benchmark import regression
    from benchmark.environment import git_commit

    config_path = args.config or str(SMOKE_CONFIG.relative_to(PROJECT_ROOT))
    config = load_config(project_file(config_path), args.overrides)
    method_names = method_names_of(args.methods or "all", config)
    check_methods(method_names, config, args.overrides)
    path = Path(args.baselines) if args.baselines else BASELINE_DIR / f"{config.name}.json"
    data, task_sets = load_data_and_tasks(config, args.data_dir, download=not args.no_download, progress=False)
    if args.check:
        baseline = regression.read_baseline(path)
        run = regression.run_smoke(config, method_names, data, task_sets, log=log)
        comparison = regression.compare(baseline, run, method_names, config, task_sets)
        print(comparison.report())
        return 0 if comparison.ok else 1
    old = regression.read_baseline(path) if path.exists() else None
    command = shlex.join(["python", "run_benchmark.py", "update-baselines", *_given_options(args)])
    entries, failures = regression.measure(config, method_names, data, task_sets, command, git_commit(), log=log)
    new = regression.updated_baseline(old, entries, config_path, task_sets, method_names,
                                      keep_others=(args.methods or "all").strip() != "all")
    regression.write_baseline(path, new)
    print("\n".join(regression.diff_lines(old, new)))
    print(f"wrote {_shown(path)}")
    for name, reason in failures.items():
        log(f"FAILED {name}: {reason} (its previous baseline, if any, is kept)")
    return 1 if failures else 0


def _given_options(args) -> list[str]:
    """The options update-baselines was given, for the golden file's record of its command."""
    given = ["--config", args.config] if args.config else []
    for override in args.overrides:
        given += ["--set", override]
    given += ["--methods", args.methods] if args.methods else []
    given += ["--baselines", args.baselines] if args.baselines else []
    return given + (["--data-dir", args.data_dir] if args.data_dir else []) + ["--no-download"] * args.no_download


# ---- ship-weights (benchmark/shipped_weights.py, README "Shipped weights") ------------------------

def ship_weights_command(args) -> int:
    """Fit the config's trained methods (the checkpoint cache serves weights made by today's
    training code) and copy their checkpoints into weights/; with --check, only verify it."""
    from benchmark.shipped_weights import WEIGHTS_DIR, ShippedWeights

    shipped = ShippedWeights(WEIGHTS_DIR, log=log)
    if args.check:
        entries = shipped.manifest()["weights"]
        problems = [problem for problem in map(shipped.problem, entries) if problem]
        print("\n".join(problems + [f"{len(entries)} shipped weight files, {len(problems)} unusable"]))
        return 1 if problems else 0
    import torch

    from benchmark import jobs, registry
    from benchmark.api import SharedComponents
    from benchmark.checkpoints import CheckpointStore
    from benchmark.environment import git_commit

    config = load_config(project_file(args.config) if args.config else DEFAULT_CONFIG, args.overrides)
    method_names = method_names_of(args.methods or "all", config)
    check_methods(method_names, config, args.overrides)
    data, task_sets = load_data_and_tasks(config, args.data_dir, download=not args.no_download, progress=False)
    device, cache = jobs.resolve_device(config.device), CheckpointStore(CHECKPOINT_DIR, log=log)
    # As a run fits them, but never from weights/ itself: from the cache, or trained.
    settings = jobs.FitSettings(CHECKPOINT_DIR, shipped_weights_dir=None, progress=not args.quiet, log=log)
    for name in method_names:
        for split in dict.fromkeys(task_set.training_split for task_set in task_sets):
            method = registry.create_method(name, config.methods.get(name, {}))
            if not method.capabilities.needs_training:
                break
            jobs.fit(method, config.seed, split, data, jobs.device_for(method, device), settings, SharedComponents())
            info = getattr(method, "training_info_", None) or {}
            if "checkpoint_key" not in info:
                log(f"{name}: does not train through benchmark.training.load_or_train; nothing to ship")
                break
            key = info["checkpoint_key"]
            trained = {"shipped_at_commit": git_commit(), "date": time.strftime("%Y-%m-%d"), "torch": torch.__version__,
                       "train_seconds": info.get("train_seconds"), "weights_were": info["weights"]}
            path = shipped.add(name, key, cache.path(name, key), config.name, trained)
            print(f"{name} ({split}): {info['weights']} weights -> {_shown(path)}")
    return 0


HANDLERS = {"run": run_command, "download": download_command, "report": report_command,
            "freeze": freeze_command, "update-baselines": update_baselines_command,
            "ship-weights": ship_weights_command}

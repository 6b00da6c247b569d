"""The command line: one argparse parser, a subcommand per command, every option declared once.

    python run_benchmark.py --methods all              # `run` is the default command
    python run_benchmark.py --resume RUN_DIR           # finish an interrupted run
    python run_benchmark.py download                   # fetch the official Omniglot files
    python run_benchmark.py report RUN_DIR [RUN_DIR]   # rebuild tables and plots from records
    python run_benchmark.py freeze                     # write configs/smoke.yaml's frozen episodes
    python run_benchmark.py update-baselines [--check] # rewrite (or check) the CI golden numbers

What each command does is in benchmark/commands.py; this module only parses and reports
expected errors as one `error:` line (exit 2, or 1 when a method failed).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from benchmark.errors import BenchmarkError, ConfigError
from benchmark.threads import prefer_passive_waiting


def _positive_int(text: str) -> int:
    if not text.strip().isdigit() or int(text) < 1:
        raise argparse.ArgumentTypeError(f"takes a whole number of at least 1, not {text!r}")
    return int(text)


# Every option, once: its flags, argparse settings, and its help (a dict where the meaning
# depends on the command).
OPTIONS = {
    "methods": (["--methods"], {"default": None, "metavar": "all|A,B"}, {
        "run": "'all' (the config's methods, the default) or a comma-separated list of names; with "
               "--resume, default: the methods the run was started with",
        "update-baselines": "'all' (the config's methods, the default) or a comma-separated list; the "
                            "other methods' baselines are kept",
        "ship-weights": "'all' (the config's trained methods, the default) or a comma-separated list"}),
    "config": (["--config"], {"default": None}, {
        "run": "YAML config (default: configs/default.yaml)",
        "freeze": "YAML config (default: configs/smoke.yaml)",
        "update-baselines": "YAML config (default: configs/smoke.yaml)",
        "ship-weights": "YAML config (default: configs/default.yaml)"}),
    "set": (["--set"], {"dest": "overrides", "action": "append", "default": [], "metavar": "KEY=VALUE"},
            "override a config field, e.g. --set task_sets.cross.episodes=100"),
    "out": (["--out"], {"default": None, "type": Path, "metavar": "DIR"}, {
        "run": "run folder (default: results/runs/TIME-CONFIG); an existing run folder is resumed",
        "report": "where to write the report (default: the run folder; required with several runs)",
        "freeze": "folder to write the frozen files into (default: the config's `frozen` folder)"}),
    "resume": (["--resume"], {"default": None, "metavar": "RUN_DIR", "type": Path},
               "finish an interrupted run: reuses the config, methods and seeds saved in RUN_DIR/run.json "
               "(--set, --methods, --device, --data-dir, --plugin and --executor still apply)"),
    "data-dir": (["--data-dir"], {"default": None, "metavar": "DIR"},
                 "the Omniglot folder (default: $OMNIGLOT_DIR, else data/omniglot)"),
    "no-download": (["--no-download"], {"action": "store_true"}, "never download missing data"),
    "device": (["--device"], {"choices": ["auto", "cpu", "cuda"], "default": None},
               "override the config's device"),
    "threads": (["--threads"], {"default": None, "type": _positive_int,
                                "metavar": "N"},
                "torch threads (default: the CPUs this process may use: its affinity, bounded by its "
                "cgroup's CPU quota); with --executor ray, the CPUs and torch threads of every job (default: "
                "the CPUs its method declares, 1 for the built-in ones)"),
    "executor": (["--executor"], {"choices": ["local", "ray"], "default": "local"},
                 "where the jobs run: 'local', in this process (the default), or 'ray', on a Ray cluster "
                 "(pip install -e '.[ray]'); the run folder is the same either way, and a run started with one "
                 "can be resumed with the other"),
    "ray-address": (["--ray-address"], {"default": None, "metavar": "ADDRESS"},
                    "the Ray cluster for --executor ray, e.g. 10.0.0.1:6379 (default: $RAY_ADDRESS, else a "
                    "Ray instance started on this machine, sized to the CPUs this process may use)"),
    "retrain": (["--retrain"], {"action": "store_true"}, "ignore cached checkpoints"),
    "seeds": (["--seeds"], {"default": None, "metavar": "S1,S2,..."},
              "train and evaluate each trained method once per seed, on the same episodes (default: the "
              "config's seed); untrained methods run once"),
    "plugin": (["--plugin"], {"action": "append", "default": [], "metavar": "FILE.py|MODULE"},
               "load methods from a plugin file or module (repeatable)"),
    "list-methods": (["--list-methods"], {"action": "store_true"}, "list the methods and exit"),
    "quiet": (["--quiet"], {"action": "store_true"}, "no progress bars"),
    "run_dirs": (["run_dirs"], {"nargs": "+", "type": Path, "metavar": "RUN_DIR"}, "run folders (with run.json and records/)"),
    "baselines": (["--baselines"], {"default": None, "metavar": "FILE"},
                  "golden file (default: results/baselines/CONFIG_NAME.json)"),
    "check": (["--check"], {"action": "store_true"}, {
        "update-baselines": "compare with the golden file, write nothing (exit 1 if a number moved)",
        "ship-weights": "verify weights/ (hashes, training code), write nothing (exit 1 if a file is unusable)"}),
}

# command -> (one line for the command list, description, its options)
COMMANDS = {
    "run": ("benchmark methods on a config's task sets (the default command)",
            "Benchmark one-shot learning methods on Omniglot: fit each method, score every task set, "
            "write records, tables and figures into a run folder. An existing run folder is resumed.",
            ["methods", "config", "set", "out", "resume", "data-dir", "no-download", "device", "threads", "executor",
             "ray-address", "retrain", "seeds", "plugin", "list-methods", "quiet"]),
    "download": ("fetch the official Omniglot files (md5-checked) and convert them",
                 "Fetch the official Omniglot zips (md5-checked) and convert them into omniglot.npz.",
                 ["data-dir"]),
    "report": ("rebuild tables and plots from saved run folders",
               "Rebuild summary tables, paired comparisons and plots from saved records; with several run "
               "folders (e.g. a CPU and a GPU run of the same config), merge them into one report.",
               ["run_dirs", "out"]),
    "freeze": ("write a config's episodes to frozen files",
               "Generate the task sets of a config and write them to frozen episode files (ids, "
               "parameters and hashes).",
               ["config", "set", "data-dir", "no-download", "out"]),
    "update-baselines": ("rewrite (or --check) the CI regression's golden numbers",
                         "Run a config's methods on its frozen episodes (CPU, deterministic) and rewrite its "
                         "golden numbers, printing what changed; with --check, compare with them instead.",
                         ["config", "set", "data-dir", "no-download", "methods", "baselines", "check"]),
    "ship-weights": ("fit a config's trained methods and ship their weights in weights/",
                     "Fit the config's trained methods (cached weights made by today's training code are "
                     "reused), copy their checkpoints into weights/ and record them in weights/MANIFEST.json "
                     "(sha256, training code); with --check, only verify weights/. Run it whenever a change to "
                     "training code makes the shipped weights stale (tests/test_shipped_weights.py says so).",
                     ["config", "set", "data-dir", "no-download", "methods", "check", "quiet"]),
}

# The commands that fit or score methods, and so keep torch's threads busy (the others compute
# little or nothing with torch).
RUNS_METHODS = {"run", "update-baselines", "ship-weights"}


class _Parser(argparse.ArgumentParser):
    """argparse, but usage errors raise (one line, exit code 2) instead of exiting."""

    def error(self, message):
        raise ConfigError(f"{message} (see --help)")


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="run_benchmark.py", description="Benchmark one-shot learning methods on Omniglot.",
                     epilog="`run` is the default: `run_benchmark.py --methods all` is `run_benchmark.py run "
                            "--methods all`. `run_benchmark.py COMMAND --help` shows a command's options.")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)
    for name, (summary, description, options) in COMMANDS.items():
        command = commands.add_parser(name, help=summary, description=description,
                                      prog=f"run_benchmark.py {name}")
        for option in options:
            flags, settings, help_text = OPTIONS[option]
            command.add_argument(*flags, **settings, help=help_text[name] if isinstance(help_text, dict) else help_text)
    return parser


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or (argv[0] not in COMMANDS and argv[0] not in ("-h", "--help")):
        argv.insert(0, "run")
    try:
        args = build_parser().parse_args(argv)
        if args.command in RUNS_METHODS:
            prefer_passive_waiting()  # before anything imports torch (benchmark/threads.py says why)
        from benchmark import commands

        return commands.HANDLERS[args.command](args)
    except BenchmarkError as error:
        print(f"error: {error}", file=sys.stderr)
        return error.exit_code
    except KeyboardInterrupt:
        print("\ninterrupted: finished work is saved; run the same command again to continue", file=sys.stderr)
        return 130

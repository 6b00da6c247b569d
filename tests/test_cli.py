"""The command line on the real data: a quick full run, and one clean line for bad input."""

import os
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

ROOT = Path(__file__).resolve().parent.parent
QUICK = ["--set", "task_sets.cross.episodes=20", "--set", "task_sets.within.episodes=20",
         "--set", "task_sets.cross.n_way=[2,20]", "--set", "task_sets.within.n_way=[5]", "--quiet"]


def cli(*args, env=None, cwd=ROOT):
    return subprocess.run([sys.executable, str(ROOT / "run_benchmark.py"), *args], cwd=cwd,
                          capture_output=True, text=True, timeout=300, env=env)


def test_quick_run_writes_every_file_and_report_rebuilds_them(omniglot_dir, tmp_path):
    out = tmp_path / "run"
    result = cli("--methods", "random,nearest_neighbor", "--out", str(out), "--data-dir",
                 str(omniglot_dir), *QUICK)
    assert result.returncode == 0, result.stderr
    for name in ("run.json", "summary.csv", "summary.md", "accuracy_vs_n.png",
                 "accuracy_vs_n.svg"):
        assert (out / name).stat().st_size > 0, name
    summary = pd.read_csv(out / "summary.csv")
    required = ["method", "task_set", "protocol", "n_way", "k_shot", "episodes", "queries",
                "accuracy", "ci_low", "ci_high"]
    assert set(required) <= set(summary.columns)
    assert set(summary.task_set) == {"cross", "within", "official"}
    official = summary[(summary.task_set == "official") & (summary.method == "nearest_neighbor")]
    assert official.queries.item() == 400 and official.episodes.item() == 20
    # The end of a run: aligned tables made for a terminal (no Markdown), the paired differences
    # with their intervals, each method's times, and the run folder's files.
    out_text = result.stdout
    assert "|" not in out_text and "**" not in out_text
    table = out_text.split("cross (cross, evaluation alphabets, 1-shot, 20 episodes per N)")[1].split("\n\n")[0]
    header, two, twenty = table.strip().splitlines()[1:4]
    assert header.split() == ["N", "chance", "random", "nearest_neighbor"]
    assert two.split()[:2] == ["2", "50.0"] and twenty.split()[:2] == ["20", "5.0"]
    assert header.index("chance") + len("chance") == two.index("50.0") + len("50.0")  # numbers right-aligned
    paired = out_text.split("paired differences")[1]
    assert "random − nearest_neighbor" in paired and "95% paired interval" in paired
    times = out_text.split("\ntimes\n")[1]
    assert {line.split()[0] for line in times.splitlines()[1:3]} == {"random", "nearest_neighbor"}
    assert f"in {out}:" in out_text and "  figures: accuracy_vs_n.png, accuracy_vs_n.svg" in out_text
    # 2 methods x 7 episode sets: cross 2 and 20-way, within 5-way, each 1- and 5-shot, and the official runs
    assert "  records: run.json, records/ (14 files), episodes/ (7 files)" in out_text
    assert "cross (cross, evaluation alphabets, 5-shot, 20 episodes per N)" in out_text
    assert "summary.md" in out_text.split("tables:")[1]

    before = (out / "summary.csv").read_text()
    for name in ("summary.csv", "summary.md", "accuracy_vs_n.png", "accuracy_vs_n.svg"):
        (out / name).unlink()
    rebuilt = cli("report", str(out))
    assert rebuilt.returncode == 0, rebuilt.stderr
    assert (out / "summary.csv").read_text() == before
    assert (out / "accuracy_vs_n.png").exists()


def test_list_methods():
    result = cli("--list-methods")
    assert result.returncode == 0
    names = [line.split()[0] for line in result.stdout.splitlines()]
    assert {"random", "nearest_neighbor"} <= set(names)


def test_help_lists_every_command_and_each_command_has_its_own_help(capsys):
    from benchmark.cli import COMMANDS, main

    result = cli("--help")
    assert result.returncode == 0
    listed = result.stdout.split("positional arguments:")[1].split("options:")[0]
    # Each command starts a line indented by four spaces; wrapped help lines are indented more.
    names = [line.split()[0] for line in listed.splitlines() if line.startswith("    ") and line[4] != " "]
    assert names == list(COMMANDS)
    for command in COMMANDS:
        with pytest.raises(SystemExit) as exit_:
            main([command, "--help"])
        assert exit_.value.code == 0
        assert f"usage: run_benchmark.py {command}" in capsys.readouterr().out
    # `run` is the default: its options work without naming it, and its help is the same.
    with pytest.raises(SystemExit):
        main(["--methods", "random", "--help"])
    assert "--resume RUN_DIR" in capsys.readouterr().out


def test_each_option_is_declared_once_and_every_declared_option_is_used():
    from benchmark.cli import COMMANDS, OPTIONS, build_parser

    used = {option for _, _, options in COMMANDS.values() for option in options}
    assert used == set(OPTIONS)
    parser = build_parser()
    run = parser._subparsers._group_actions[0].choices["run"]
    flags = [flag for action in run._actions for flag in action.option_strings]
    assert len(flags) == len(set(flags)) and "--set" in flags


def assert_clean_usage_error(result, *fragments):
    assert result.returncode == 2, (result.stdout, result.stderr)
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("error: ") and "Traceback" not in result.stderr
    for fragment in fragments:
        assert fragment in lines[0], lines[0]


@pytest.mark.parametrize("args,fragments", [
    (["--methods", "nearest_neighbour"], ["did you mean 'nearest_neighbor'"]),
    (["--set", "task_sets.within.n_way=[50]"], ["50-way 'within'", "at most 47"]),
    (["--set", "task_sets.cross.n_way=[700]"], ["at most 659"]),
    (["--set", "task_sets.cross.n_way=[1]"], ["n_way must be an integer >= 2"]),
    (["--set", "task_sets.cross.k_shot=10", "--set", "task_sets.cross.n_query=11"],
     ["k_shot + n_query = 21"]),
    (["--set", "task_sets.cross.episods=3"], ["did you mean 'episodes'"]),
    (["--set", "methods.random.sed=3"], ["did you mean 'seed'"]),
    (["--set", "methods.randon.seed=3"], ["method 'randon' is not in this run", "did you mean 'random'"]),
    (["--set", "methods.protonet.steps=3"], ["method 'protonet' is not in this run"]),
    (["--config", "configs/none.yaml"], ["not found"]),
    (["--out", "/no/such/parent/run"], ["parent folder", "does not exist"]),
    (["--out", "/proc/nope"], ["cannot create the folder /proc/nope"]),
    (["--frobnicate"], ["unrecognized arguments"]),
    (["--threads", "0"], ["--threads", "at least 1"]),
])
def test_bad_input_gets_one_line_and_exit_code_2(omniglot_dir, tmp_path, args, fragments):
    result = cli("--methods", "random", "--data-dir", str(omniglot_dir), "--out", str(tmp_path / "r"),
                 "--quiet", *args) if "--out" not in args else \
        cli("--methods", "random", "--data-dir", str(omniglot_dir), "--quiet", *args)
    assert_clean_usage_error(result, *fragments)


def test_missing_data_says_where_it_looked(tmp_path):
    empty = tmp_path / "empty"
    empty.mkdir()
    result = cli("--methods", "random", "--data-dir", str(empty), "--no-download", "--out",
                 str(tmp_path / "r"))
    assert_clean_usage_error(result, str(empty), "--data-dir", "OMNIGLOT_DIR")
    assert not (tmp_path / "r").exists()  # a run that wrote nothing leaves no folder behind


def test_report_into_an_impossible_folder_is_one_line(tmp_path):
    (tmp_path / "run").mkdir()
    (tmp_path / "run" / "run.json").write_text("not used")
    assert_clean_usage_error(cli("report", str(tmp_path / "run"), "--out", "/proc/x"),
                             "cannot create the folder /proc/x")


def test_corrupt_data_is_refused(tmp_path):
    bad = tmp_path / "bad"
    bad.mkdir()
    (bad / "omniglot.npz").write_bytes(b"PK\x03\x04 this is not a real archive")
    result = cli("--methods", "random", "--data-dir", str(bad), "--no-download", "--out", str(tmp_path / "r"))
    assert_clean_usage_error(result, "omniglot.npz")


def test_data_dir_comes_from_the_environment(omniglot_dir, tmp_path):
    env = dict(os.environ, OMNIGLOT_DIR=str(omniglot_dir))
    result = cli("--methods", "random", "--out", str(tmp_path / "r"), *QUICK, env=env)
    assert result.returncode == 0, result.stderr

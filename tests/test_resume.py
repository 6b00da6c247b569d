"""Runs that survive being killed or interrupted, refuse damaged records, and never interleave."""

import json
import os
import shlex
import signal
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest

from benchmark.cli import main
from benchmark.config import config_from_dict
from benchmark.errors import ConfigError
from benchmark import run_lock
from benchmark.errors import RunFolderError
from benchmark.files import staged_outputs, write_atomically
from benchmark.run_folder import RunFolder
from benchmark.run_lock import RunLock
from benchmark.runner import RunOptions, run_benchmark
from tasks.sets import resolve_task_sets
from tests.subprocesses import default_sigint
from tests.synthetic import synthetic_omniglot

ROOT = Path(__file__).resolve().parent.parent
DATA = synthetic_omniglot()
KEY = ["method", "seed", "task_set", "n_way", "k_shot", "episode", "query"]
needs_flock = pytest.mark.skipif(run_lock.fcntl is None, reason="run folders are locked with fcntl.flock")


def tiny_run(out_dir, methods=("random", "nearest_neighbor"), data=DATA, log=None):
    config = config_from_dict({
        "name": "tiny",
        "task_sets": {"cross": {"protocol": "cross", "n_way": [2, 3, 5], "episodes": 12, "seed": 1},
                      "within": {"protocol": "within", "n_way": [3], "episodes": 10, "seed": 2}},
        "methods": {name: {} for name in methods}})
    options = RunOptions(progress=False, checkpoint_dir=Path(out_dir).parent / "checkpoints",
                         log=log or (lambda message: None))
    return run_benchmark(config, list(methods), data, resolve_task_sets(config, data), Path(out_dir), options)


def read_records(run_dir, log=None):
    return RunFolder(run_dir).read_records(log)


def plain(records: pd.DataFrame) -> pd.DataFrame:
    """Records without the run id, names as plain strings (category orders follow the run's order)."""
    return records.drop(columns="run_id").astype({name: str for name in ("method", "task_set", "split", "protocol")})


def manifest_of(run_dir):
    return json.loads((Path(run_dir) / "run.json").read_text())


# ---------------------------------------------------------------- the lock

@needs_flock
def test_a_second_run_into_a_locked_folder_is_refused(tmp_path):
    out = tmp_path / "run"
    out.mkdir()
    with RunLock(out):
        with pytest.raises(RunFolderError, match=f"another run \\(pid {os.getpid()}\\) is writing into"):
            tiny_run(out)
        assert not (out / "records").exists()
    assert tiny_run(out).exit_code == 0
    assert not (out / ".lock").exists()  # released and removed


LOCK_HOLDER = """
import sys, time
from benchmark.run_lock import RunLock
lock = RunLock(sys.argv[1]).acquire()
print("locked", flush=True)
time.sleep(120)
"""


@needs_flock
def test_a_lock_held_by_a_killed_process_does_not_block(tmp_path):
    out = tmp_path / "run"
    out.mkdir()
    holder = subprocess.Popen([sys.executable, "-c", LOCK_HOLDER, str(out)], cwd=ROOT, stdout=subprocess.PIPE,
                              text=True)
    try:
        assert holder.stdout.readline().strip() == "locked"
        with pytest.raises(RunFolderError, match=f"pid {holder.pid}"):
            tiny_run(out, methods=("random",))
    finally:
        holder.kill()
        holder.wait()
    assert (out / ".lock").exists()  # the dead holder could not clean up ...
    assert tiny_run(out, methods=("random",)).exit_code == 0  # ... yet its lock is gone with it


# ---------------------------------------------------------------- integrity

def edit_one_byte(path, offset):
    content = bytearray(path.read_bytes())
    content[offset] ^= 0x01
    path.write_bytes(bytes(content))


def chunk_files(run_dir) -> dict[str, bytes]:
    return {path.name: path.read_bytes() for path in sorted((Path(run_dir) / "records").iterdir())}


def test_report_and_resume_refuse_edited_records_naming_the_file(tmp_path):
    out = tmp_path / "run"
    tiny_run(out)
    chunk = manifest_of(out)["chunks"][3]
    edit_one_byte(out / chunk["file"], len((out / chunk["file"]).read_bytes()) // 2)
    for attempt in (lambda: read_records(out), lambda: tiny_run(out)):
        with pytest.raises(RunFolderError, match="was edited") as error:
            attempt()
        assert str(out / chunk["file"]) in str(error.value)


def test_report_and_resume_refuse_missing_or_truncated_records(tmp_path):
    out = tmp_path / "run"
    tiny_run(out)
    first, second = (out / chunk["file"] for chunk in manifest_of(out)["chunks"][:2])
    first.write_bytes(first.read_bytes()[:-100])
    second.unlink()
    with pytest.raises(RunFolderError, match="was edited") as error:
        read_records(out)
    assert str(first) in str(error.value)
    first.unlink()
    for attempt in (lambda: read_records(out), lambda: tiny_run(out)):
        with pytest.raises(RunFolderError, match="is missing but run.json lists it") as error:
            attempt()
        assert str(first) in str(error.value)


def test_report_leaves_out_an_unfinished_chunk_and_says_so(tmp_path):
    out = tmp_path / "run"
    tiny_run(out)
    complete = read_records(out)
    (out / "records" / "random-s0-cross-7way-1shot.parquet").write_bytes(b"PAR1 cut short")  # never listed
    notes = []
    pd.testing.assert_frame_equal(read_records(out, log=notes.append), complete)
    assert "not listed in run.json" in notes[0]


def test_report_on_an_interrupted_run_says_what_is_missing_and_how_to_resume(tmp_path, capsys):
    out = tmp_path / "run"
    tiny_run(out)
    assert main(["report", str(out)]) == 0  # complete: nothing to say
    assert "incomplete" not in capsys.readouterr().err.lower()
    manifest = manifest_of(out)
    manifest["chunks"] = manifest["chunks"][:2]  # random's cross 2- and 3-way: stopped there
    manifest["methods"].pop("nearest_neighbor")  # it never started
    write_atomically(out / "run.json", json.dumps(manifest))
    assert main(["report", str(out)]) == 1
    err = capsys.readouterr().err
    assert f"run {out} is incomplete:" in err
    assert "random: 2 of 4 task sets missing (cross/5way/1shot, within/3way/1shot)" in err
    assert "nearest_neighbor: not started" in err
    assert f"resume it with: python run_benchmark.py --resume {out}" in err
    text = (out / "summary.md").read_text()
    assert "**Incomplete run**" in text and "- random: 2 of 4 task sets missing" in text


def test_a_folder_without_run_json_is_refused(tmp_path):
    out = tmp_path / "run"
    tiny_run(out)
    (out / "run.json").unlink()
    with pytest.raises(ConfigError, match="run.json not found"):
        read_records(out)


def test_resume_keeps_intact_chunks_and_recomputes_the_rest(tmp_path):
    tiny_run(tmp_path / "reference" / "run")
    out = tmp_path / "resumed" / "run"
    tiny_run(out)
    # Forget the last three chunks, as if the run had stopped before listing them; one of their
    # files is there, as a kill between writing a file and listing it would leave it.
    manifest = manifest_of(out)
    forgotten = manifest["chunks"][-3:]
    manifest["chunks"] = manifest["chunks"][:-3]
    write_atomically(out / "run.json", json.dumps(manifest))
    for chunk in forgotten[1:]:
        (out / chunk["file"]).unlink()
    (out / "records" / ".half-written.parquet.tmp").write_bytes(b"PAR1")  # an atomic write cut short
    messages = []
    tiny_run(out, log=messages.append)
    assert any("2 unfinished file(s) dropped" in m for m in messages)
    assert chunk_files(out) == chunk_files(tmp_path / "reference" / "run")  # byte for byte
    pd.testing.assert_frame_equal(plain(read_records(out)), plain(read_records(tmp_path / "reference" / "run")))


def test_the_episodes_of_each_task_set_are_kept_and_checked_against_run_json(tmp_path):
    out = tmp_path / "run"
    tiny_run(out)
    records = read_records(out)
    episodes = RunFolder(out).read_episodes("cross/5way/1shot")
    first = records[(records.task_set == "cross") & (records.n_way == 5)].iloc[0]
    assert episodes["support"].shape == (12, 5, 1) and episodes["query_label"][0, 0] == first.label
    edit_one_byte(out / "episodes" / "cross-5way-1shot.npz", 100)
    with pytest.raises(RunFolderError, match="cross-5way-1shot.npz"):
        RunFolder(out).read_episodes("cross/5way/1shot")


def test_resume_on_other_data_is_refused(tmp_path):
    out = tmp_path / "run"
    tiny_run(out, methods=("random",))
    other = synthetic_omniglot()
    other = type(other)(other.root, other.background, type(other.evaluation)(
        "evaluation", other.evaluation.images, other.evaluation.alphabet, other.evaluation.character, "f" * 64))
    with pytest.raises(ConfigError, match="other Omniglot data"):
        tiny_run(out, methods=("random",), data=other)


def test_staged_outputs_appear_whole_or_not_at_all(tmp_path):
    (tmp_path / "summary.csv").write_text("old")
    with pytest.raises(ZeroDivisionError):
        with staged_outputs(tmp_path) as staging:
            (staging / "summary.csv").write_text("half")
            1 / 0
    assert (tmp_path / "summary.csv").read_text() == "old"
    with staged_outputs(tmp_path) as staging:
        (staging / "summary.csv").write_text("new")
        (staging / "summary.md").write_text("new")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["summary.csv", "summary.md"]
    assert (tmp_path / "summary.csv").read_text() == "new"


# ---------------------------------------------------------------- the command line

@pytest.mark.parametrize("args,fragment", [
    (["--resume", "{tmp}/nothing"], "no run.json there"),
    (["--resume", "{tmp}/run", "--config", "configs/default.yaml"], "drop --config"),
    (["--resume", "{tmp}/run", "--out", "{tmp}/elsewhere"], "drop --out"),
    (["--resume", "{tmp}/run", "--set", "task_sets.cross.episodes=99"], "another config"),
])
def test_resume_mistakes_get_one_line(tmp_path, capsys, monkeypatch, args, fragment):
    import benchmark.commands as commands

    monkeypatch.setattr(commands, "load_data_and_tasks",
                        lambda config, *args, **kwargs: (DATA, resolve_task_sets(config, DATA)))
    tiny_run(tmp_path / "run", methods=("random",))
    manifest = manifest_of(tmp_path / "run")
    code = main([a.replace("{tmp}", str(tmp_path)) for a in args] + ["--quiet"])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and err[-1].startswith("error: ") and fragment in err[-1], err
    assert "Traceback" not in "\n".join(err)
    assert manifest_of(tmp_path / "run") == manifest  # the run folder is untouched


def test_resume_reuses_the_saved_config_methods_and_seeds(tmp_path, capsys, monkeypatch):
    import benchmark.commands as commands

    monkeypatch.setattr(commands, "load_data_and_tasks",
                        lambda config, *args, **kwargs: (DATA, resolve_task_sets(config, DATA)))
    tiny_run(tmp_path / "reference" / "run")
    out = tmp_path / "partial" / "run"
    tiny_run(out, methods=("nearest_neighbor", "random"))
    manifest = manifest_of(out)
    manifest["chunks"] = manifest["chunks"][:2]  # as if it had stopped early
    manifest["methods_requested"] = ["random", "nearest_neighbor"]  # the reference's order
    write_atomically(out / "run.json", json.dumps(manifest))
    assert main(["--resume", str(out), "--quiet"]) == 0
    assert "resuming" in capsys.readouterr().err
    # Only records are compared: the saved config (not configs/default.yaml) was used.
    a = plain(read_records(out)).sort_values(KEY, ignore_index=True)
    b = plain(read_records(tmp_path / "reference" / "run")).sort_values(KEY, ignore_index=True)
    pd.testing.assert_frame_equal(a, b)
    assert (out / "summary.md").exists() and not list(out.glob(".staging-*"))


# ---------------------------------------------------------------- real runs, really killed

EPISODES = 20
QUICK = ["--set", f"task_sets.cross.episodes={EPISODES}", "--set", f"task_sets.within.episodes={EPISODES}",
         "--set", "task_sets.cross.n_way=[2,3,4,5,6,8,10,12,16,20]", "--set", "task_sets.within.n_way=[5,10]",
         "--set", "task_sets.cross.k_shot=1", "--set", "task_sets.within.k_shot=[1,5]",
         "--set", "stats.resamples=100", "--quiet"]
CHUNKS = 2 * (10 + 2 * 2 + 1)  # two methods x (cross 1-shot + within 1- and 5-shot + official)


def start(args, **kwargs):
    return subprocess.Popen([sys.executable, str(ROOT / "run_benchmark.py"), *args], cwd=ROOT,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            preexec_fn=default_sigint, **kwargs)


def chunks_listed(run_dir) -> int:
    try:
        return len(manifest_of(run_dir)["chunks"])
    except (OSError, ValueError, KeyError):
        return 0


def wait_for_chunks(process, run_dir, at_least: int, timeout: float = 240) -> int:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        listed = chunks_listed(run_dir)
        if listed >= at_least or process.poll() is not None:
            return listed
        time.sleep(0.005)
    raise AssertionError(f"no {at_least} chunks in {run_dir} after {timeout} s")


def assert_complete_once(records: pd.DataFrame):
    assert not records.duplicated(KEY).any()
    sizes = records.groupby(["method", "task_set", "n_way", "k_shot"]).size()
    assert len(sizes) == CHUNKS
    for (method, task_set, n_way, _), rows in sizes.items():
        episodes = 20 if task_set == "official" else EPISODES
        assert rows == episodes * n_way, (method, task_set, n_way)


@pytest.mark.slow
def test_a_killed_run_resumes_to_the_same_records_as_an_uninterrupted_one(omniglot_dir, tmp_path):
    data = ["--data-dir", str(omniglot_dir)]
    methods = ["--methods", "random,nearest_neighbor"]
    # The same folder name in both places: run_id is the folder's name, so files can be equal.
    reference, killed = tmp_path / "reference" / "run", tmp_path / "killed" / "run"
    reference.parent.mkdir()
    killed.parent.mkdir()
    uninterrupted = start([*methods, *data, "--out", str(reference), *QUICK])
    victim = start([*methods, *data, "--out", str(killed), *QUICK])
    listed = wait_for_chunks(victim, killed, CHUNKS // 2 + 1)
    victim.send_signal(signal.SIGKILL)
    victim.communicate()
    assert victim.returncode == -signal.SIGKILL and listed < CHUNKS, "the run ended before it was killed"
    assert not (killed / "summary.csv").exists()

    resumed = subprocess.run([sys.executable, str(ROOT / "run_benchmark.py"), "--resume", str(killed), *data,
                              "--quiet"], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert resumed.returncode == 0, resumed.stderr
    assert "chunks already done" in resumed.stderr
    out, err = uninterrupted.communicate(timeout=300)
    assert uninterrupted.returncode == 0, err
    assert chunk_files(killed) == chunk_files(reference)
    assert (killed / "summary.csv").read_bytes() == (reference / "summary.csv").read_bytes()
    assert_complete_once(read_records(killed))
    assert not (killed / ".lock").exists()


GATE_PLUGIN = '''
"""A method that stops, on its 10-way task set, until the test interrupts it (while `block` exists)."""
import time
from pathlib import Path

import numpy as np

from benchmark.api import Method
from benchmark.registry import register_method

HERE = Path(__file__).parent


@register_method("gate")
class Gate(Method):
    def fit(self, background, context):
        self.fitted_ = True
        return self

    def predict(self, batch):
        if batch.n_way == 10 and (HERE / "block").exists():
            (HERE / "waiting").touch()
            time.sleep(120)
        # Random scores: constant ones would make every episode's accuracy identical.
        return np.random.default_rng(batch.fingerprint()).random(batch.score_shape)
'''


@pytest.mark.slow
def test_ctrl_c_stops_cleanly_and_prints_the_command_that_resumes(omniglot_dir, tmp_path):
    plugin = tmp_path / "gate.py"
    plugin.write_text(GATE_PLUGIN)
    (tmp_path / "block").touch()
    out = tmp_path / "run"
    run = start(["--methods", "random,gate", "--plugin", str(plugin), "--data-dir", str(omniglot_dir),
                 "--out", str(out), *QUICK])
    deadline = time.monotonic() + 240
    while not (tmp_path / "waiting").exists() and run.poll() is None and time.monotonic() < deadline:
        time.sleep(0.02)
    run.send_signal(signal.SIGINT)
    _, err = run.communicate(timeout=60)
    assert run.returncode == 130, err
    assert "Traceback" not in err
    lines = err.strip().splitlines()
    assert lines[-2].startswith("interrupted: finished chunks are saved in")
    command = shlex.split(lines[-1])
    assert command[:4] == ["python", "run_benchmark.py", "--resume", str(out)]
    assert ["--plugin", str(plugin)] == command[4:6]
    done = chunks_listed(out)
    assert done == CHUNKS // 2 + 6  # random, then the gate's cross 2- to 8-way; not its 10-way one
    assert not (out / ".lock").exists() and not (out / "summary.csv").exists()

    (tmp_path / "block").unlink()
    resumed = subprocess.run([sys.executable, *command[1:]], cwd=ROOT, capture_output=True, text=True,
                             timeout=300)
    assert resumed.returncode == 0, resumed.stderr
    assert f"resuming {out}: {done} chunks already done" in resumed.stderr
    assert_complete_once(read_records(out))

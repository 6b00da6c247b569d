"""perf/: every measurement script runs end to end in its --tiny mode, and uses the project only
through its public namespace (`import benchmark`).

The scripts run as the README says, `python perf/NAME.py ...` from the project root, in a
subprocess each, on synthetic data (`--synthetic`, so they run anywhere) and one thread. Two
of them also run on the real data when $OMNIGLOT_DIR is set (the official runs have no
synthetic counterpart). Nothing may be written into perf/, and the scripts' temporary folders
(under the test's own TMPDIR) must be gone when they exit.
"""

import ast
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

import benchmark

ROOT = Path(__file__).resolve().parent.parent
PERF = ROOT / "perf"
TIMEOUT_S = 120
MACHINE = {"machine"}

# script -> (its arguments after --tiny, the keys of its result that perf/README.md's tables read)
SCRIPTS = {
    "eval_engine": (["--threads", "1"], MACHINE | {
        "method", "loop", "episodes", "pairs", "harness_seconds", "harness_cpu_seconds", "harness_runs",
        "loop_seconds_sampled", "loop_seconds_extrapolated", "loop_cpu_seconds_extrapolated",
        "ratio_loop_over_harness", "cpu_ratio_loop_over_harness", "queries_compared", "argmax_mismatches",
        "max_score_difference", "loop_rows"}),
    "scaling": (["--threads", "1"], MACHINE | {"rows", "cost_model", "threads"}),
    "embed_batch": (["--threads", "1"], MACHINE | {"rows", "images", "threads", "harness_rule"}),
    "report_speed": ([], MACHINE | {"records", "records_mb", "episodes_mb", "report_seconds", "best_report_seconds",
                                    "load_before_report"}),
    "train_throughput": (["--threads", "1"], MACHINE | {"training", "inference_eval_mode", "threads"}),
    "protonet": (["--threads", "1", "--quiet"], MACHINE | {
        "fit_seconds", "fit_cpu_seconds", "wall_per_step", "cpu_per_step", "load_before", "load_after_fit",
        "accuracy", "predict_seconds", "validation_history"}),
    "siamese_cpu": (["--threads", "1", "--quiet"], MACHINE | {
        "fit_seconds", "fit_cpu_seconds", "train_seconds", "seconds_per_step", "best_validation_accuracy",
        "load_before", "load_after", "within_5way_5shot_mean_logit"}),
    "softmax_transfer": (["--threads", "1", "--quiet", "--sweep", '[{"finetune_steps": 0}]'], MACHINE | {
        "fit_seconds", "fit_cpu_seconds", "wall_per_step", "cpu_per_step", "load_before", "load_after",
        "sets", "sweep"}),
    "train_steps": (["--threads", "1"], MACHINE | {"methods", "steps", "threads", "load_before", "load_after"}),
    "busy_machine": ([], MACHINE | {"busy_processes", "wait_policy", "steps", "quiet", "busy", "ratios"}),
    "cluster_cost": ([], MACHINE | {"seeds", "jobs", "fits", "total_job_seconds", "critical_path_seconds",
                                    "longest_job", "workers_where_it_stops_scaling", "rows"}),
    "mhd": ([], MACHINE | {"pixel", "pixel_total_seconds", "pixel_pairs", "exact_official", "peak_rss_kb",
                           "load_before", "load_after"}),
    # The probe is not in the checkout (it is copied to .device/ on the GPU machine).
    "gpu_siamese": (["--stages", "throughput,train"], set()),
}
# Keys of rows inside the results that the README's tables read.
ROW_KEYS = {
    "cluster_cost": ("rows", {"workers", "wall_seconds", "lower_bound_seconds", "speedup", "busy_fraction"}),
    "eval_engine": ("loop_rows", {"set", "episodes", "sampled", "loop_seconds_per_episode", "load"}),
    "scaling": ("rows", {"method", "episodes", "n_way", "pairs", "images_embedded", "cold_seconds",
                         "warm_seconds", "warm_page_faults", "cold_load"}),
    "embed_batch": ("rows", {"method", "batch_size", "ms_per_image", "load"}),
    "train_throughput": ("training", {"mode", "batch_images", "seconds_per_step", "cpu_seconds_per_step",
                                      "images_per_second", "pairs_per_second", "load", "warmup_seconds"}),
}
GPU_STAGES = {
    "environment": {"device", "machine", "load"},
    "throughput": {"images_per_s", "koch_pairs_per_s", "all_pairs_per_s", "tflop_per_s", "fraction_of_bf16_peak"},
    "training": {"step", "validation_accuracy", "official"},
    "trained": {"steps", "train_seconds", "images_per_s"},
    "final": {"architecture", "train_seconds"},
    "done": {"wall_seconds"},
}
# Scripts that also run on the real data: the official runs are read only there. (One is
# enough for perf/common.py's task sets; each real-data run costs seconds of loading.)
REAL_DATA = {
    "eval_engine": ["--threads", "1", "--method", "nearest_neighbor"],
}


def perf_scripts() -> list[str]:
    return sorted(path.stem for path in PERF.glob("*.py") if path.stem != "common")


def run_script(name: str, arguments: list[str], tmp_path: Path, data: list[str]) -> list[dict]:
    """Run perf/NAME.py --tiny from the project root; the JSON lines it printed."""
    before = sorted(PERF.rglob("*"))
    scratch = tmp_path / "tmp"
    scratch.mkdir()
    env = dict(os.environ, TMPDIR=str(scratch), PYTHONDONTWRITEBYTECODE="1", OMP_NUM_THREADS="1",
               PYTHONWARNINGS="ignore::UserWarning")
    command = [sys.executable, f"perf/{name}.py", "--tiny", *data, *arguments]
    result = subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True, timeout=TIMEOUT_S)
    assert result.returncode == 0, f"{' '.join(command)} exited {result.returncode}:\n{result.stderr[-3000:]}"
    assert sorted(PERF.rglob("*")) == before, "the script wrote into perf/"
    left = [path.name for path in scratch.iterdir() if not path.name.startswith("torchinductor_")]  # torch's cache
    assert left == [], "the script left temporary files behind"
    return [json.loads(line) for line in result.stdout.splitlines() if line.startswith("{")]


def check_result(name: str, lines: list[dict]) -> None:
    if name == "gpu_siamese":
        check_gpu_lines(lines)
        return
    assert len(lines) == 1, f"expected one JSON line, got {len(lines)}"
    result = lines[0]
    _, keys = SCRIPTS[name]
    assert keys <= set(result), f"missing keys: {sorted(keys - set(result))}"
    assert {"cpu", "cores", "torch_threads", "commit"} <= set(result["machine"])
    if name in ROW_KEYS:
        field, row_keys = ROW_KEYS[name]
        assert result[field] and all(row_keys <= set(row) for row in result[field])


def check_gpu_lines(lines: list[dict]) -> None:
    """No stage failed, and each stage's lines hold the keys the README reads."""
    assert [line for line in lines if "failed" in line] == []
    for line in lines:
        assert GPU_STAGES.get(line["stage"], set()) <= set(line), line


@pytest.mark.parametrize("name", list(SCRIPTS))
def test_a_perf_script_runs_in_its_tiny_mode(name, tmp_path):
    lines = run_script(name, SCRIPTS[name][0], tmp_path, ["--synthetic"])
    check_result(name, lines)
    if name == "gpu_siamese":
        assert set(GPU_STAGES) <= {line["stage"] for line in lines}


@pytest.mark.parametrize("name", list(REAL_DATA))
def test_a_perf_script_reads_the_official_runs_of_the_real_data(name, tmp_path):
    data_dir = os.environ.get("OMNIGLOT_DIR")
    if not data_dir or not (Path(data_dir) / "all_runs.zip").is_file():
        pytest.skip("real Omniglot data with the official runs not configured: set OMNIGLOT_DIR "
                    "(e.g. OMNIGLOT_DIR=../shared/omniglot)")
    lines = run_script(name, REAL_DATA[name], tmp_path, ["--data-dir", data_dir])
    check_result(name, lines)
    assert "official" in lines[0]["task_sets"]


def test_every_perf_script_has_a_tiny_run():
    assert sorted(SCRIPTS) == perf_scripts()


# ---- the public API only ----------------------------------------------------------------

ALLOWED_MODULES = set(sys.stdlib_module_names) | {"numpy", "torch", "pandas", "benchmark", "common"}


def api_violations(source: str) -> list[str]:
    """What a perf script does that only the public API may do: sys.path, imports of project
    modules other than `benchmark` (and perf's own `common`), names not in benchmark's public
    namespace, and attributes (or getattr/setattr names) starting with one underscore."""
    found = []
    for node in ast.walk(ast.parse(source)):
        line = getattr(node, "lineno", "?")
        if isinstance(node, ast.Import):
            found += [f"{line}: import {a.name}" for a in node.names
                      if a.name.split(".")[0] not in ALLOWED_MODULES or a.name.startswith("benchmark.")]
        elif isinstance(node, ast.ImportFrom):
            module = node.module or ""
            if node.level or module.split(".")[0] not in ALLOWED_MODULES or module.startswith("benchmark."):
                found.append(f"{line}: from {'.' * node.level}{module} import")
            elif module == "benchmark":
                found += [f"{line}: from benchmark import {a.name}" for a in node.names
                          if a.name not in benchmark.__all__]
            found += [f"{line}: import of private {a.name}" for a in node.names if is_private(a.name)]
        elif isinstance(node, ast.Attribute):
            if is_private(node.attr):
                found.append(f"{line}: .{node.attr}")
            if isinstance(node.value, ast.Name) and node.value.id == "sys" and node.attr == "path":
                found.append(f"{line}: sys.path")
            if isinstance(node.value, ast.Name) and node.value.id == "benchmark" and \
                    node.attr not in (*benchmark.__all__, "__version__"):
                found.append(f"{line}: benchmark.{node.attr} is not public")
        elif isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and \
                node.func.id in ("getattr", "setattr", "hasattr", "delattr") and len(node.args) > 1:
            name = node.args[1]
            if isinstance(name, ast.Constant) and isinstance(name.value, str) and is_private(name.value):
                found.append(f"{line}: {node.func.id}(..., {name.value!r})")
    return found


def is_private(name: str) -> bool:
    return name.startswith("_") and not (name.startswith("__") and name.endswith("__"))


@pytest.mark.parametrize("path", sorted(PERF.glob("*.py")), ids=lambda path: path.name)
def test_a_perf_script_uses_the_public_api_only(path):
    assert api_violations(path.read_text(encoding="utf-8")) == []


@pytest.mark.parametrize("source, expected", [
    ("import sys\nsys.path.insert(0, '.')", ["2: sys.path"]),
    ("from methods._siamese_nets import SiameseNet", ["1: from methods._siamese_nets import"]),
    ("import tasks.episodes", ["1: import tasks.episodes"]),
    ("from benchmark.training import train", ["1: from benchmark.training import"]),
    ("import benchmark\nbenchmark.training", ["2: benchmark.training is not public"]),
    ("method._embedding_cache = None", ["1: ._embedding_cache"]),
    ("getattr(method, '_lr_factor')", ["1: getattr(..., '_lr_factor')"]),
    ("from common import _helper", ["1: import of private _helper"]),
    ("import benchmark\nbenchmark.create_method('random', {}).__class__", []),
])
def test_the_api_check_sees_private_use(source, expected):
    assert api_violations(source) == expected


# ---- the shell scripts and the README ----------------------------------------------------

PERF_PATH = re.compile(r"\bperf/[\w./-]+\.(?:py|sh|md|json|log)\b")


@pytest.mark.parametrize("name", ["run_cpu.sh", "gpu_siamese.sh", "README.md"])
def test_perf_paths_named_in_the_shell_scripts_and_readme_exist(name):
    text = (PERF / name).read_text(encoding="utf-8")
    named = sorted(set(PERF_PATH.findall(text)))
    assert named, f"{name} names no perf/ path"
    assert [path for path in named if not (ROOT / path).exists()] == []
    if name.endswith(".sh"):
        assert "benchmarks/" not in text


@pytest.mark.parametrize("name", ["run_cpu.sh", "gpu_siamese.sh"])
def test_a_shell_script_parses(name):
    result = subprocess.run(["bash", "-n", str(PERF / name)], capture_output=True, text=True, timeout=30)
    assert result.returncode == 0, result.stderr

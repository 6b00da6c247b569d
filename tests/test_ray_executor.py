"""`--executor ray`: the same run folder as the local executor, on a real Ray instance (a local
one, and a two-node cluster on 127.0.0.1 that loses a node mid-run). Skipped without Ray."""

import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
import torch

ray = pytest.importorskip("ray")

from benchmark import registry  # noqa: E402
from benchmark.api import Capabilities  # noqa: E402
from benchmark.config import config_from_dict, load_config  # noqa: E402
from benchmark.executors import make_executor  # noqa: E402
from benchmark.executors.ray_cluster import RayExecutor  # noqa: E402
from benchmark.paths import SMOKE_CONFIG  # noqa: E402
from benchmark.run_folder import RunFolder  # noqa: E402
from benchmark.runner import RunOptions, run_benchmark  # noqa: E402
from methods.nearest_neighbor import NearestNeighbor  # noqa: E402
from tasks.sets import resolve_task_sets  # noqa: E402
from tests.synthetic import synthetic_omniglot  # noqa: E402
from tests.subprocesses import default_sigint  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
DATA = synthetic_omniglot()
KEY = ["method", "seed", "task_set", "n_way", "k_shot", "episode", "query"]
# The methods below are defined here, a module Ray's workers cannot import: they travel by value.
ray.cloudpickle.register_pickle_by_value(sys.modules[__name__])


class SlowNeighbor(NearestNeighbor):
    """1-NN that takes a while on each task set, so that a run can be disturbed mid-way."""

    def predict(self, batch):
        time.sleep(0.4)
        return super().predict(batch)


class DiesOnce(NearestNeighbor):
    """1-NN whose worker process is killed (SIGKILL) the first time it predicts a 5-way set."""

    def __init__(self, marker: str = ""):
        super().__init__()
        self.marker = marker

    def predict(self, batch):
        if batch.n_way == 5 and not Path(self.marker).exists():
            Path(self.marker).write_text("killed once")
            os.kill(os.getpid(), signal.SIGKILL)
        return super().predict(batch)


class FailsOnFive(NearestNeighbor):
    def predict(self, batch):
        if batch.n_way == 5:
            raise RuntimeError("no 5-way today")
        return super().predict(batch)


class CountsThreads(NearestNeighbor):
    """1-NN that fails unless torch has `threads` threads where it predicts."""

    def __init__(self, threads: int = 1):
        super().__init__()
        self.threads = threads

    def predict(self, batch):
        if torch.get_num_threads() != self.threads:
            raise RuntimeError(f"predicted on {torch.get_num_threads()} threads")
        return super().predict(batch)


class Transposed(NearestNeighbor):
    def predict(self, batch):
        return super().predict(batch).transpose(0, 2, 1)  # (E, N, Q): right shape whenever Q == N


class Greedy(CountsThreads):
    capabilities = Capabilities(cpus=64)


def tiny_config(methods, **settings):
    return config_from_dict({
        "name": "tiny",
        "task_sets": {"cross": {"protocol": "cross", "n_way": [2, 3, 5], "episodes": 12, "seed": 1},
                      "within": {"protocol": "within", "n_way": [3], "episodes": 10, "seed": 2}},
        "methods": {name: settings.get(name, {}) for name in methods}})


def run(out_dir, methods, executor=None, config=None, data=DATA, seeds=None, log=None):
    config = config or tiny_config(methods)
    options = RunOptions(progress=False, checkpoint_dir=Path(out_dir).parent / "checkpoints", seeds=seeds,
                         log=log or (lambda message: None), executor=executor)
    return run_benchmark(config, list(methods), data, resolve_task_sets(config, data), Path(out_dir), options)


def records(run_dir):
    frame = RunFolder(run_dir).read_records().drop(columns="run_id")
    frame = frame.astype({name: str for name in ("method", "task_set", "split", "protocol")})
    return frame.sort_values(KEY).reset_index(drop=True)


def chunk_files(run_dir):
    return {chunk["file"]: chunk["sha256"] for chunk in RunFolder(run_dir).read_manifest().to_json()["chunks"]}


@pytest.fixture(scope="module")
def ray_for_the_module():
    yield
    if ray.is_initialized():
        ray.shutdown()


@pytest.fixture()
def local_ray(ray_for_the_module):
    """One local Ray instance shared by the module's tests (the executor uses it and leaves it
    running; the two-node test shuts it down, and the next test starts it again)."""
    if not ray.is_initialized():
        os.environ.setdefault("RAY_worker_niceness", "0")
        ray.init(num_cpus=2, include_dashboard=False, logging_level="ERROR", log_to_driver=False)


@pytest.fixture()
def register():
    def add(name, cls):
        registry.register_method(name)(type(name, (cls,), {"__module__": __name__}))
    return add


def test_ray_gives_the_local_executors_records_and_times(tmp_path, local_ray):
    methods = ("random", "nearest_neighbor")
    assert run(tmp_path / "local", methods).exit_code == 0
    assert run(tmp_path / "ray", methods, RayExecutor()).exit_code == 0
    # Byte-identical chunk files under the same names: the same records, hashed the same.
    assert chunk_files(tmp_path / "ray") == chunk_files(tmp_path / "local")
    manifest = RunFolder(tmp_path / "ray").read_manifest()
    assert manifest.environment.executor.startswith("ray local: 1 node(s), 2 CPUs")
    for folder in ("local", "ray"):
        timing = RunFolder(tmp_path / folder).read_manifest().methods["nearest_neighbor"].timing["0/background"]
        assert set(timing) == {"fit_seconds", "predict_seconds", "predict_seconds_per_task_set", "peak_rss_mb"}
        assert set(timing["predict_seconds_per_task_set"]) == set(manifest.task_sets)


def test_the_smoke_config_on_ray_equals_the_local_run_for_every_deterministic_method(
        tmp_path, local_ray, omniglot, monkeypatch):
    # The smoke config's five methods with short trainings (the trained ones learn for a few
    # steps only: equality, not accuracy, is the point), torch on 1 thread as Ray's 1-CPU jobs.
    config = load_config(SMOKE_CONFIG, ["methods.protonet.steps=12", "methods.protonet.validate_every=6",
                                        "methods.softmax_transfer.steps=12", "methods.softmax_transfer.validate_every=6",
                                        "methods.siamese.steps=12", "methods.siamese.validate_every=6"])
    methods = [name for name in config.methods if registry.get_method(name).capabilities.deterministic]
    assert len(methods) == 5
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        assert run(tmp_path / "local", methods, config=config, data=omniglot).exit_code == 0
    finally:
        torch.set_num_threads(threads)
    assert run(tmp_path / "ray", methods, RayExecutor(), config=config, data=omniglot).exit_code == 0
    assert chunk_files(tmp_path / "ray") == chunk_files(tmp_path / "local")
    # Checkpoints a Ray job trained landed in this machine's cache, and the next run loads them.
    cache = sorted(path.name.split("-")[0] for path in (tmp_path / "checkpoints").glob("*.pt"))
    assert cache == ["protonet", "siamese", "softmax_transfer"]
    assert run(tmp_path / "again", ["protonet"], RayExecutor(), config=config, data=omniglot).exit_code == 0
    timing = RunFolder(tmp_path / "again").read_manifest().methods["protonet"].timing["0/background"]
    assert timing["weights"] == "cached"


def test_a_worker_killed_mid_job_is_retried_and_each_record_written_once(tmp_path, local_ray, register):
    register("dies_once", DiesOnce)
    config = tiny_config(["dies_once"], dies_once={"marker": str(tmp_path / "killed")})
    assert run(tmp_path / "ray", ["dies_once"], RayExecutor(), config=config).exit_code == 0
    assert (tmp_path / "killed").exists()  # it did die once
    assert run(tmp_path / "local", ["nearest_neighbor"]).exit_code == 0
    got, expected = records(tmp_path / "ray"), records(tmp_path / "local")
    assert not got.duplicated(KEY).any()
    assert got.drop(columns="method").equals(expected.drop(columns="method"))


def test_a_method_that_fails_on_ray_fails_alone_as_on_the_local_executor(tmp_path, local_ray, register):
    register("fails_on_five", FailsOnFive)
    outcome = run(tmp_path / "ray", ["fails_on_five", "random"], RayExecutor())
    assert outcome.exit_code == 1
    assert outcome.failures == {"fails_on_five": "predict raised RuntimeError: no 5-way today"}
    manifest = RunFolder(tmp_path / "ray").read_manifest()
    assert manifest.failures == outcome.failures
    assert "5way" not in " ".join(chunk.file for chunk in manifest.chunks if chunk.method == "fails_on_five")
    assert {chunk.method for chunk in manifest.chunks} == {"fails_on_five", "random"}


def test_transposed_scores_fail_the_method_on_ray_before_any_record(tmp_path, local_ray, register):
    register("transposed", Transposed)
    outcome = run(tmp_path / "ray", ["transposed", "random"], RayExecutor())
    assert "transposed; it must return (episodes, queries, ways) (1, 3, 2)" in outcome.failures["transposed"]
    assert {chunk.method for chunk in RunFolder(tmp_path / "ray").read_manifest().chunks} == {"random"}


def test_a_run_resumes_across_executors(tmp_path, local_ray):
    both = ("random", "nearest_neighbor")
    assert run(tmp_path / "whole", both).exit_code == 0
    assert run(tmp_path / "local-then-ray", ["random"]).exit_code == 0
    assert run(tmp_path / "local-then-ray", both, RayExecutor()).exit_code == 0
    assert run(tmp_path / "ray-then-local", ["random"], RayExecutor()).exit_code == 0
    assert run(tmp_path / "ray-then-local", both).exit_code == 0
    for folder in ("local-then-ray", "ray-then-local"):
        assert records(tmp_path / folder).equals(records(tmp_path / "whole"))
        assert chunk_files(tmp_path / folder) == chunk_files(tmp_path / "whole")


def test_a_jobs_torch_threads_are_its_cpus_and_never_more_than_a_node_has(tmp_path, local_ray, register):
    register("counts_threads", CountsThreads)
    register("greedy", Greedy)
    one, two = tiny_config(["counts_threads"]), tiny_config(["counts_threads"], counts_threads={"threads": 2})
    assert run(tmp_path / "default", ["counts_threads"], RayExecutor(), config=one).failures == {}
    assert run(tmp_path / "threads", ["counts_threads"], RayExecutor(threads=2), config=two).failures == {}
    greedy = tiny_config(["greedy"], greedy={"threads": 2})  # 64 CPUs asked for: 2, the node's all
    assert run(tmp_path / "greedy", ["greedy"], RayExecutor(), config=greedy).failures == {}


def test_ray_refuses_cuda_when_the_cluster_has_no_gpu(tmp_path, local_ray):
    with pytest.raises(Exception, match="the Ray cluster has no GPU"):
        with RayExecutor() as executor:
            executor.resolve_device("cuda")
    with RayExecutor() as executor:
        assert executor.resolve_device("auto") == "cpu"


def test_a_two_node_cluster_that_loses_a_node_mid_run_finishes_on_the_head(tmp_path, register):
    from ray.cluster_utils import Cluster

    if ray.is_initialized():
        ray.shutdown()
    register("slow_neighbor", SlowNeighbor)
    os.environ.setdefault("RAY_worker_niceness", "0")
    cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": 1})
    worker = cluster.add_node(num_cpus=1)
    try:
        cluster.wait_for_nodes()
        ray.init(address=cluster.address, logging_level="ERROR", log_to_driver=False)
        lost, done_at_the_loss = threading.Event(), []

        def kill_the_worker_node_after_the_first_record():
            while not (tmp_path / "ray" / "run.json").exists() or not RunFolder(tmp_path / "ray").has_records():
                time.sleep(0.05)
            cluster.remove_node(worker)  # its raylet and workers die at once
            done_at_the_loss.append(len(RunFolder(tmp_path / "ray").read_manifest().chunks))
            lost.set()

        killer = threading.Thread(target=kill_the_worker_node_after_the_first_record, daemon=True)
        killer.start()
        outcome = run(tmp_path / "ray", ["slow_neighbor", "random"], RayExecutor(), seeds=(0,))
        killer.join(timeout=60)
        assert lost.is_set() and done_at_the_loss[0] < 14  # 7 task sets for each method: lost mid-run
        assert outcome.exit_code == 0, outcome.failures
        assert len([node for node in ray.nodes() if node["Alive"]]) == 1
    finally:
        ray.shutdown()
        cluster.shutdown()
    assert run(tmp_path / "local", ["nearest_neighbor", "random"]).exit_code == 0
    got, expected = records(tmp_path / "ray"), records(tmp_path / "local")
    assert not got.duplicated(KEY).any()
    assert got.replace({"method": {"slow_neighbor": "nearest_neighbor"}}).sort_values(KEY).reset_index(
        drop=True).equals(expected)


def ray_processes() -> set[int]:
    """The Ray workers and raylets running on this machine."""
    found = set()
    for folder in Path("/proc").glob("[0-9]*"):
        try:
            command = (folder / "cmdline").read_bytes().replace(b"\0", b" ")
        except OSError:
            continue
        if b"raylet" in command or b"default_worker.py" in command:
            found.add(int(folder.name))
    return found


def test_ctrl_c_on_the_driver_stops_the_jobs_and_leaves_a_folder_to_resume(tmp_path, omniglot_dir):
    plugin = tmp_path / "slow_plugin.py"
    plugin.write_text("import time\nfrom benchmark.registry import register_method\n"
                      "from methods.nearest_neighbor import NearestNeighbor\n\n"
                      "@register_method('slow_neighbor')\nclass SlowNeighbor(NearestNeighbor):\n"
                      "    def predict(self, batch):\n        time.sleep(1.0)\n        return super().predict(batch)\n")
    out = tmp_path / "run"
    command = [sys.executable, str(ROOT / "run_benchmark.py"), "--config", str(SMOKE_CONFIG), "--methods",
               "slow_neighbor,random", "--plugin", str(plugin), "--executor", "ray", "--out", str(out), "--quiet",
               "--data-dir", str(Path(omniglot_dir).resolve())]
    raylets = ray_processes()
    driver = subprocess.Popen(command, cwd=tmp_path, stderr=subprocess.PIPE, text=True,
                              env=dict(os.environ, RAY_ADDRESS=""), preexec_fn=default_sigint)
    deadline = time.time() + 120
    while not RunFolder(out).has_manifest() or not RunFolder(out).has_records():
        assert driver.poll() is None and time.time() < deadline, driver.stderr.read()
        time.sleep(0.1)
    driver.send_signal(signal.SIGINT)
    stderr = driver.communicate(timeout=60)[1]
    assert driver.returncode == 130, stderr
    deadline = time.time() + 20  # the Ray instance it started, and the jobs it ran there, are gone
    while ray_processes() - raylets and time.time() < deadline:
        time.sleep(0.2)
    assert not ray_processes() - raylets
    assert f"--resume {out}" in stderr and "--executor ray" in stderr
    done = len(RunFolder(out).read_manifest().chunks)
    assert 0 < done < 14  # 7 task sets for each of the two methods: it stopped mid-run
    resumed = subprocess.run([sys.executable, str(ROOT / "run_benchmark.py"), "--resume", str(out), "--plugin",
                              str(plugin), "--quiet", "--data-dir", str(Path(omniglot_dir).resolve())], cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert resumed.returncode == 0, resumed.stderr
    assert len(RunFolder(out).read_manifest().chunks) == 14


def test_without_ray_the_ray_executor_is_refused_in_one_line_and_the_local_path_never_imports_it(
        tmp_path, monkeypatch):
    script = ("import sys; sys.modules['ray'] = None  # as if Ray were not installed\n"
              "from benchmark.cli import main\n"
              f"code = main(['--config', {str(SMOKE_CONFIG)!r}, '--methods', 'random', '--out', {str(tmp_path / 'run')!r},"
              " '--quiet'])\n"
              "assert code == 0, code\n"
              f"print(main(['--methods', 'random', '--executor', 'ray', '--out', {str(tmp_path / 'ray-run')!r}, '--quiet']))\n")
    done = subprocess.run([sys.executable, "-c", script], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip().splitlines()[-1] == "2"
    assert "error: --executor ray needs Ray, an optional extra: pip install -e '.[ray]'" in done.stderr
    assert not (tmp_path / "ray-run").exists()


def test_an_unknown_executor_or_a_stray_ray_address_is_a_one_line_error():
    from benchmark.errors import ConfigError

    with pytest.raises(ConfigError, match="unknown executor 'dask'"):
        make_executor("dask")
    with pytest.raises(ConfigError, match="--ray-address needs --executor ray"):
        make_executor("local", "127.0.0.1:6379")

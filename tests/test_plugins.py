"""The three ways a method comes in (a `methods/` module, `--plugin FILE|MODULE`, an installed
package's entry point), where run.json says it came from, and a misbehaving plugin failing alone
on the command line."""

import hashlib
import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pandas as pd
import pytest

from benchmark import registry
from benchmark.config import config_from_dict
from benchmark.errors import ConfigError
from benchmark.run_folder import RunFolder
from benchmark.runner import RunOptions, run_benchmark
from tasks.sets import resolve_task_sets
from tests.synthetic import synthetic_omniglot

ROOT = Path(__file__).resolve().parent.parent
EXAMPLE = ROOT / "examples" / "cosine_pixels.py"
DATA = synthetic_omniglot()
TINY_CONFIG = """\
name: plugins
device: cpu
task_sets:
  cross: {protocol: cross, n_way: [2, 5], episodes: 10, seed: 1}
"""

# A method any plugin can be: 1-NN on pixels, as short as it gets.
METHOD_BODY = """
    capabilities = Capabilities()

    def __init__(self):
        pass

    def fit(self, background, context):
        self.reset_embeddings()
        return self

    def embed(self, images):
        return torch.from_numpy(images.reshape(len(images), -1).astype("float32"))

    def score(self, query, support):
        return -torch.cdist(query, support.flatten(1, 2)).reshape(*query.shape[:2], *support.shape[1:3]).amin(-1)
"""
IMPORTS = ("import torch\nfrom benchmark.api import Capabilities, EmbeddingMethod\n"
           "from benchmark.registry import register_method\n")


def plugin_source(name: str, class_name: str, register: bool = True) -> str:
    decorator = f'@register_method("{name}")\n' if register else ""
    return f'{IMPORTS}\n\n{decorator}class {class_name}(EmbeddingMethod):\n    """{name}."""\n{METHOD_BODY}'


def run_in_process(tmp_path, methods):
    config = config_from_dict({"name": "plugins", "task_sets": {
        "cross": {"protocol": "cross", "n_way": [2, 5], "episodes": 10, "seed": 1}}})
    options = RunOptions(progress=False, checkpoint_dir=tmp_path / "checkpoints", log=lambda m: None)
    outcome = run_benchmark(config, list(methods), DATA, resolve_task_sets(config, DATA),
                            tmp_path / "run", options)
    manifest = json.loads((tmp_path / "run" / "run.json").read_text())
    records = RunFolder(tmp_path / "run").read_records()
    return outcome, manifest, records


def cli(*args, env_path=(), cwd=ROOT):
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([*map(str, env_path), str(ROOT)])
    return subprocess.run([sys.executable, str(ROOT / "run_benchmark.py"), *args], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=300)


def error_lines(result) -> list[str]:
    return [line for line in result.stderr.splitlines() if line.strip()]


# ------------------------------------------------------------------ 1. a module in methods/

def test_builtin_methods_come_from_the_methods_package():
    names = registry.builtin_names()
    assert {"random", "nearest_neighbor"} <= set(names)
    assert all(registry.get_method(n).__module__ == f"methods.{n}" for n in names)  # one file a method
    assert {registry.source_of(n) for n in names} == {"built-in"}


# ------------------------------------------------------------------ 2. --plugin FILE or MODULE

def test_a_plugin_file_registers_its_method_and_run_json_names_the_file(tmp_path):
    assert registry.load_plugin(str(EXAMPLE)) == ["cosine_pixels"]
    digest = hashlib.sha256(EXAMPLE.read_bytes()).hexdigest()[:16]
    assert registry.source_of("cosine_pixels") == f"file {EXAMPLE} sha256:{digest}"
    assert registry.load_plugin(str(EXAMPLE)) == ["cosine_pixels"]  # loading it again is harmless
    outcome, manifest, records = run_in_process(tmp_path, ["cosine_pixels", "nearest_neighbor"])
    assert outcome.exit_code == 0
    assert manifest["methods"]["cosine_pixels"]["source"] == f"file {EXAMPLE} sha256:{digest}"
    assert manifest["methods"]["nearest_neighbor"]["source"] == "built-in"
    assert set(records.method) == {"cosine_pixels", "nearest_neighbor"}


def test_a_plugin_module_registers_its_method_and_run_json_names_the_module(tmp_path, monkeypatch):
    package = tmp_path / "site" / "tiny_plugin_package"
    package.mkdir(parents=True)
    (package / "__init__.py").write_text("")
    (package / "pixels.py").write_text(plugin_source("module_pixels", "ModulePixels"))
    monkeypatch.syspath_prepend(str(tmp_path / "site"))
    assert registry.load_plugin("tiny_plugin_package.pixels") == ["module_pixels"]
    assert registry.source_of("module_pixels") == "module tiny_plugin_package.pixels"
    outcome, manifest, _ = run_in_process(tmp_path, ["module_pixels"])
    assert outcome.exit_code == 0
    assert manifest["methods"]["module_pixels"]["source"] == "module tiny_plugin_package.pixels"
    # Named again (say by a second --plugin), an imported module still reports its methods.
    assert registry.load_plugin("tiny_plugin_package.pixels") == ["module_pixels"]


@pytest.mark.parametrize("source,message", [
    (None, "not found"),
    ("def broken(:\n", "failed while loading: SyntaxError"),
    ("import numpy\n", "registered no method"),
    ("raise RuntimeError('needs a GPU driver')\n", "failed while loading: RuntimeError: needs a GPU driver"),
    # A copy of a built-in that kept its name must not silently replace it.
    (plugin_source("nearest_neighbor", "NearestNeighbor"), "'nearest_neighbor' is already registered"),
])
def test_a_bad_plugin_file_is_one_clear_error(tmp_path, source, message):
    path = tmp_path / "bad_plugin.py"
    if source is not None:
        path.write_text(source)
    with pytest.raises(ConfigError, match=message):
        registry.load_plugin(str(path))
    assert registry.get_method("nearest_neighbor").__module__ == "methods.nearest_neighbor"


def test_an_unknown_plugin_module_is_one_clear_error():
    with pytest.raises(ConfigError, match="cannot be imported"):
        registry.load_plugin("no_such_plugin_package.methods")


# ------------------------------------------------------------------ 3. entry points of a package

def install_tiny_distribution(site: Path) -> None:
    """A real installed distribution, as pip leaves it: modules plus a .dist-info folder."""
    site.mkdir(parents=True)
    (site / "ep_good_plugin.py").write_text(plugin_source("ep_good", "GoodFromPackage"))
    (site / "ep_plain_plugin.py").write_text(plugin_source("ep_plain", "PlainFromPackage", register=False))
    (site / "ep_broken_plugin.py").write_text(
        "raise ImportError('ep_broken needs a package that is not installed')\n")
    info = site / "tiny_oneshot_plugins-1.2.3.dist-info"
    info.mkdir()
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: tiny-oneshot-plugins\nVersion: 1.2.3\n")
    (info / "entry_points.txt").write_text(textwrap.dedent("""\
        [oneshot_benchmark.methods]
        ep_good = ep_good_plugin:GoodFromPackage
        ep_plain = ep_plain_plugin:PlainFromPackage
        ep_broken = ep_broken_plugin:Broken
    """))


def test_entry_points_load_by_name_and_a_broken_one_breaks_only_runs_that_name_it(tmp_path, monkeypatch):
    install_tiny_distribution(tmp_path / "site")
    monkeypatch.syspath_prepend(str(tmp_path / "site"))
    assert {"ep_good", "ep_plain", "ep_broken"} <= set(registry.available_names())
    described = {name: (source, summary) for name, source, summary in registry.describe_methods()}
    assert described["ep_broken"] == ("package tiny-oneshot-plugins 1.2.3", "(loaded when used)")

    outcome, manifest, records = run_in_process(tmp_path, ["ep_good", "ep_plain", "nearest_neighbor"])
    assert outcome.exit_code == 0
    for name in ("ep_good", "ep_plain"):  # decorated or not, both come from the package
        assert manifest["methods"][name]["source"] == "package tiny-oneshot-plugins 1.2.3"
    assert set(records.method) == {"ep_good", "ep_plain", "nearest_neighbor"}
    assert "ep_broken_plugin" not in sys.modules  # never imported: it was not asked for

    with pytest.raises(ConfigError, match="method 'ep_broken' from package tiny-oneshot-plugins failed "
                                          "to load: ImportError: ep_broken needs a package"):
        registry.get_method("ep_broken")


def test_entry_points_on_the_command_line(omniglot_dir, tmp_path):
    site = tmp_path / "site"
    install_tiny_distribution(site)
    (tmp_path / "tiny.yaml").write_text(TINY_CONFIG)
    listed = cli("--list-methods", env_path=[site])
    assert listed.returncode == 0, listed.stderr
    rows = dict(line.split(None, 1) for line in listed.stdout.splitlines())
    assert rows["method"].split() == ["from", "what", "it", "does"]  # the header
    assert rows["ep_broken"] == "package tiny-oneshot-plugins 1.2.3  (loaded when used)"

    common = ["--config", str(tmp_path / "tiny.yaml"), "--data-dir", str(omniglot_dir), "--quiet"]
    good = cli("--methods", "ep_good,nearest_neighbor", "--out", str(tmp_path / "good"), *common,
               env_path=[site])
    assert good.returncode == 0, good.stderr
    manifest = json.loads((tmp_path / "good" / "run.json").read_text())
    assert manifest["methods"]["ep_good"]["source"] == "package tiny-oneshot-plugins 1.2.3"

    broken = cli("--methods", "ep_broken,nearest_neighbor", "--out", str(tmp_path / "broken"), *common,
                 env_path=[site])
    assert broken.returncode == 2
    assert error_lines(broken) == ["error: method 'ep_broken' from package tiny-oneshot-plugins failed to "
                                   "load: ImportError: ep_broken needs a package that is not installed"]


# ------------------------------------------------------------------ faults, on the command line

FAULTY_PLUGIN = IMPORTS.replace("EmbeddingMethod", "Method") + '''
import numpy as np


class Faulty(Method):
    """Misbehaves as its `fault` says."""

    capabilities = Capabilities()
    fault = ""

    def __init__(self):
        pass

    def fit(self, background, context):
        if self.fault == "fit":
            raise RuntimeError("fit exploded")
        self.fitted_ = True
        return self

    def predict(self, batch):
        if self.fault == "raise":
            raise ValueError("predict exploded")
        if self.fault == "shape":
            return np.zeros((batch.n_episodes, batch.n_way))
        scores = np.zeros(batch.score_shape)
        scores[0, 0, 0] = np.nan
        return scores


for fault in ("fit", "raise", "shape", "nan"):
    register_method(f"faulty_{fault}")(type(f"Faulty_{fault}", (Faulty,), {"fault": fault}))
'''


def test_misbehaving_plugins_fail_alone_with_one_line_each_and_exit_code_1(omniglot_dir, tmp_path):
    (tmp_path / "faulty.py").write_text(FAULTY_PLUGIN)
    (tmp_path / "tiny.yaml").write_text(TINY_CONFIG)
    out = tmp_path / "run"
    faulty = ["faulty_fit", "faulty_raise", "faulty_shape", "faulty_nan"]
    result = cli("--plugin", str(tmp_path / "faulty.py"), "--methods", ",".join([*faulty, "nearest_neighbor"]),
                 "--config", str(tmp_path / "tiny.yaml"), "--data-dir", str(omniglot_dir),
                 "--out", str(out), "--quiet")
    assert result.returncode == 1, result.stderr
    assert "Traceback" not in result.stderr
    failed = {line.split(":")[0].removeprefix("FAILED "): line for line in error_lines(result)
              if line.startswith("FAILED ")}
    assert set(failed) == set(faulty)
    assert "fit raised RuntimeError: fit exploded" in failed["faulty_fit"]
    assert "predict raised ValueError: predict exploded" in failed["faulty_raise"]
    # Caught by the probe after fit (one episode, 3 queries), before the first task set.
    assert "predict returned shape (1, 2) on 2-way 1-shot episodes, expected (1, 3, 2) (episodes, queries, ways), " \
           "on a probe episode of 3 queries scored after fit" in failed["faulty_shape"]
    assert "NaN" in failed["faulty_nan"]
    # The method that works finished and was written, with its summary.
    records = RunFolder(out).read_records()
    assert set(records.method) == {"nearest_neighbor"} and len(records) == 10 * 2 + 10 * 5
    summary = pd.read_csv(out / "summary.csv")
    assert set(summary.method) == {"nearest_neighbor"} and set(summary.n_way) == {2, 5}
    manifest = json.loads((out / "run.json").read_text())
    assert set(manifest["failures"]) == set(faulty)


def test_a_plugin_file_imports_helpers_beside_it_and_their_hashes_are_its_provenance(tmp_path, monkeypatch,
                                                                                       request):
    monkeypatch.setattr(sys, "path", list(sys.path))  # loading puts the plugin's folder first
    request.addfinalizer(lambda: [sys.modules.pop(name, None) for name in ("shared_scoring", "oneshot_plugin_helped")])
    folder = tmp_path / "my_plugins"
    folder.mkdir()
    (folder / "shared_scoring.py").write_text("SIZE = 7\n")
    (folder / "helped.py").write_text(
        f"{IMPORTS}from shared_scoring import SIZE\n\n"
        f'@register_method("helped")\nclass Helped(EmbeddingMethod):\n    """helped."""\n{METHOD_BODY}')
    assert registry.load_plugin(str(folder / "helped.py")) == ["helped"]
    source = registry.source_of("helped")
    digest = hashlib.sha256((folder / "shared_scoring.py").read_bytes()).hexdigest()[:16]
    assert source.startswith(f"file {folder / 'helped.py'} sha256:")
    assert source.endswith(f" with shared_scoring.py sha256:{digest}")
    assert sys.path[0] == str(folder.resolve())

"""The Vinyals et al. split: the shipped lists, rotated classes read from Lake's images, and a
run that fits on trainval and never shows `fit` a test class."""

import hashlib
import io
import json
import re
import tracemalloc
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from benchmark import registry
from benchmark.api import Capabilities, EmbeddingMethod
from benchmark.config import config_from_dict
from benchmark.errors import DataError
from benchmark.rotations import RotatedImages
from benchmark.runner import RunOptions, run_benchmark
from benchmark.training import split_background
from tasks.sets import data_split, resolve_task_sets
from tasks.vinyals import LIST_NAMES, LISTS_DIR, class_table, read_list, vinyals_split
from tests.synthetic import synthetic_omniglot

SHARED_LISTS = Path(__file__).resolve().parents[2] / "shared" / "omniglot" / "splits" / "vinyals"


def characters(classes) -> set[str]:
    return {name.rsplit("/", 1)[0] for name in classes}


def test_the_shipped_lists_have_the_sha256_their_readme_gives():
    readme = (LISTS_DIR / "README.md").read_text(encoding="utf-8")
    for name in LIST_NAMES:
        digest = hashlib.sha256((LISTS_DIR / f"{name}.txt").read_bytes()).hexdigest()
        assert re.search(rf"`{name}\.txt` \| {digest}", readme), name
    assert "MIT License" in (LISTS_DIR / "LICENSE").read_text(encoding="utf-8")


@pytest.mark.skipif(not SHARED_LISTS.is_dir(), reason="no shared copy of the Vinyals lists beside the project")
def test_the_shipped_lists_equal_the_shared_ones():
    for name in LIST_NAMES:
        shipped, shared = (LISTS_DIR / f"{name}.txt").read_bytes(), (SHARED_LISTS / f"{name}.txt").read_bytes()
        assert hashlib.sha256(shipped).hexdigest() == hashlib.sha256(shared).hexdigest(), name


def test_trainval_is_train_and_val_and_shares_no_character_with_test():
    trainval, train, val, test = (read_list(name) for name in ("trainval", "train", "val", "test"))
    assert (len(trainval), len(train), len(val), len(test)) == (4800, 4112, 688, 1692)
    assert sorted(train + val) == sorted(trainval) and not set(train) & set(val)
    assert (len(characters(trainval)), len(characters(test))) == (1200, 423)
    assert not characters(trainval) & characters(test)
    assert len(characters(trainval) | characters(test)) == 1623  # every Omniglot character, once
    for classes in (trainval, test):  # each character in its 4 rotations
        rotations = {}
        for name in classes:
            character, rotation = name.rsplit("/", 1)
            rotations.setdefault(character, set()).add(rotation)
        assert all(found == {"rot000", "rot090", "rot180", "rot270"} for found in rotations.values())


def test_every_class_resolves_to_a_character_of_the_data(omniglot):
    trainval, test = vinyals_split(omniglot, "vinyals_trainval"), vinyals_split(omniglot, "vinyals_test")
    assert (trainval.n_characters, test.n_characters) == (4800, 1692)
    assert list(trainval.class_names) == read_list("trainval") and list(test.class_names) == read_list("test")
    lake = {f"{a}/{c}" for split in (omniglot.background, omniglot.evaluation)
            for a, c in zip(split.alphabet, split.character)}
    assert characters(trainval.class_names) | characters(test.class_names) == lake


def test_a_rotated_class_holds_the_rotations_of_its_characters_drawings(omniglot):
    test = vinyals_split(omniglot, "vinyals_test")
    source = omniglot.evaluation
    character = np.flatnonzero((source.alphabet == "Gurmukhi") & (source.character == "character42"))[0]
    for quarter_turns in range(4):  # classes 0-3 are Gurmukhi/character42 at 0, 90, 180, 270 degrees
        drawings = test.images[quarter_turns]
        assert all(np.array_equal(drawings[d], np.rot90(source.images[character, d], quarter_turns)) for d in range(20))
        flat = test.flat_images[np.arange(20) + 20 * quarter_turns]
        assert np.array_equal(flat, drawings)
    # Counter-clockwise, as PIL's Image.rotate(90) (the lists' convention).
    drawing = source.images[character, 3]
    by_pil = np.asarray(Image.open(io.BytesIO(_png(drawing))).rotate(90)) > 0
    assert np.array_equal(test.images[1][3].astype(bool), by_pil)


def _png(mask: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray((mask * 255).astype(np.uint8)).save(buffer, format="PNG")
    return buffer.getvalue()


def test_rotated_classes_cost_no_images_of_their_own(omniglot):
    tracemalloc.start()
    trainval = vinyals_split(omniglot, "vinyals_trainval")
    test = vinyals_split(omniglot, "vinyals_test")
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    # Stored, the 6492 classes' images would take 716 MB (uint8); their tables take under 1 MB.
    assert peak < 5_000_000, peak
    assert isinstance(trainval.flat_images, RotatedImages) and len(test.flat_images) == 1692 * 20
    assert np.asarray(test.flat_images[:3]).shape == (3, 105, 105)


def test_rotated_images_refuse_what_they_cannot_index(omniglot):
    images = vinyals_split(omniglot, "vinyals_test").flat_images
    for key in [(0, 1), np.array([True, False]), np.array([1.5]), len(images), -len(images) - 1]:
        with pytest.raises(IndexError):
            images[key]
    assert np.array_equal(images[-1], images[len(images) - 1])


def test_methods_that_validate_hold_out_the_val_list(omniglot):
    train, validation = split_background(vinyals_split(omniglot, "vinyals_trainval"), validation_alphabets=3)
    assert sorted(train.class_names) == sorted(read_list("train"))
    assert sorted(validation.class_names) == sorted(read_list("val"))
    assert split_background(vinyals_split(omniglot, "vinyals_trainval"), 0)[1] is None


def test_a_list_naming_a_character_the_data_lacks_is_refused_in_one_line(tmp_path):
    data = synthetic_omniglot()
    with pytest.raises(DataError, match=r"^the Vinyals split names Angelic/character01, which"):
        class_table(["Angelic/character01/rot090"], (data.background, data.evaluation))
    (tmp_path / "test.txt").write_text("not a class line\n")
    with pytest.raises(DataError, match="not Alphabet/characterNN/rotDDD"):
        read_list("test", tmp_path)


class ClassSpy(EmbeddingMethod):
    """Records the classes of every split it is fitted on; embeds pooled pixels."""

    capabilities = Capabilities(needs_training=True, deterministic=True)
    fitted_on: list = []

    def fit(self, training_split, context):
        names = getattr(training_split, "class_names", None)
        if names is None:
            names = [f"{a}/{c}" for a, c in zip(training_split.alphabet, training_split.character)]
        ClassSpy.fitted_on.append((training_split.name, set(names), context.training_split))
        self.reset_embeddings()
        return self

    def embed(self, images):
        import torch
        return torch.nn.functional.avg_pool2d(torch.as_tensor(np.asarray(images), dtype=torch.float32)[:, None], 15).flatten(1)

    def score(self, query, support):
        import torch
        return -torch.cdist(query, support.mean(2))


def test_a_run_fits_once_per_training_split_and_never_on_a_test_class(omniglot, tmp_path):
    registry.register_method("class_spy")(ClassSpy)
    ClassSpy.fitted_on = []
    config = config_from_dict({"name": "t", "task_sets": {
        "vinyals": {"protocol": "vinyals", "n_way": [5], "k_shot": [1, 5], "n_query": 3, "episodes": 4},
        "cross": {"protocol": "cross", "n_way": [5], "episodes": 4},
        "vinyals_train": {"protocol": "vinyals", "split": "vinyals_trainval", "n_way": [5], "episodes": 4}}})
    task_sets = resolve_task_sets(config, omniglot)
    outcome = run_benchmark(config, ["class_spy"], omniglot, task_sets, tmp_path / "run",
                            RunOptions(progress=False, checkpoint_dir=tmp_path / "ckpt", log=lambda m: None))
    assert outcome.failures == {}
    # Fitted twice, in the order the task sets first need each split, with the context saying which.
    assert [(name, split) for name, _, split in ClassSpy.fitted_on] == [
        ("vinyals_trainval", "vinyals_trainval"), ("background", "background")]
    test_classes = set(read_list("test"))
    vinyals_classes, lake_classes = ClassSpy.fitted_on[0][1], ClassSpy.fitted_on[1][1]
    assert vinyals_classes == set(read_list("trainval")) and not vinyals_classes & test_classes
    evaluation = {f"{a}/{c}" for a, c in zip(omniglot.evaluation.alphabet, omniglot.evaluation.character)}
    assert not lake_classes & evaluation
    manifest = json.loads((tmp_path / "run" / "run.json").read_text())
    assert set(manifest["methods"]["class_spy"]["timing"]) == {"0/vinyals_trainval", "0/background"}
    keys = {(chunk["task_set"], chunk["n_way"], chunk["k_shot"]) for chunk in manifest["chunks"]}
    assert keys == {("vinyals", 5, 1), ("vinyals", 5, 5), ("cross", 5, 1), ("vinyals_train", 5, 1)}


def test_vinyals_episodes_are_drawn_from_test_classes_with_k_distinct_drawings(omniglot):
    config = config_from_dict({"name": "t", "task_sets": {
        "vinyals": {"protocol": "vinyals", "n_way": [20], "k_shot": [5], "n_query": 15, "episodes": 30}}})
    (task_set,) = resolve_task_sets(config, omniglot)
    assert task_set.split == "vinyals_test" and task_set.training_split == "vinyals_trainval"
    episodes, test = task_set.episodes, data_split(omniglot, "vinyals_test")
    assert episodes.support.shape == (30, 20, 5) and episodes.query.shape == (30, 300)
    assert episodes.support.max() < test.n_characters * 20
    for e in range(30):
        support, query = episodes.support[e], episodes.query[e]
        assert len(set(support.ravel()) | set(query)) == support.size + query.size  # no drawing twice
        assert np.all(support // 20 == support[:, :1] // 20)  # k drawings of one class
    batch = task_set.batch(omniglot)
    assert batch.images_key == test.sha256 and len(batch.images) == 1692 * 20

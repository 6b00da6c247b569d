"""tasks.official: Lake et al.'s 20 runs mapped onto evaluation image ids."""

import io
import zipfile

import numpy as np
import pytest
from PIL import Image

from benchmark.data import make_split, official_runs_zip
from benchmark.errors import DataError
from tasks.official import load_official_runs


@pytest.fixture(scope="module")
def runs(omniglot, omniglot_dir):
    path = omniglot_dir / "all_runs.zip"
    if not path.is_file():
        pytest.skip(f"all_runs.zip not in {omniglot_dir}")
    return load_official_runs(official_runs_zip(omniglot_dir, download=False), omniglot.evaluation)


def test_shapes_and_ranges(runs, omniglot):
    assert runs["support"].shape == (20, 20, 1) and runs["query"].shape == (20, 20)
    assert runs["query_label"].shape == (20, 20)
    assert all(array.dtype == np.int64 for array in runs.values())
    n_images = omniglot.evaluation.n_characters * 20
    assert runs["support"].min() >= 0 and runs["support"].max() < n_images
    assert runs["query"].min() >= 0 and runs["query"].max() < n_images
    # Each run is a permutation of its 20 classes, one query per class.
    assert all(sorted(row) == list(range(20)) for row in runs["query_label"].tolist())


def test_first_line_of_run01(runs):
    # run01/class_labels.txt begins "run01/test/item01.png run01/training/class08.png".
    assert runs["query_label"][0, 0] == 7


def test_each_query_is_labelled_with_its_own_character(runs):
    support_character = runs["support"][:, :, 0] // 20
    true_support = np.take_along_axis(support_character, runs["query_label"], axis=1)
    assert np.array_equal(true_support, runs["query"] // 20)
    # Within a run every class is a different character, and supports are not queries.
    assert all(len(set(row)) == 20 for row in support_character.tolist())
    assert not np.isin(runs["query"], runs["support"]).any()


def test_pixel_nearest_neighbour_accuracy_is_sane(runs, omniglot):
    # 1-NN on raw pixels scores about 20% on these runs (Koch et al. 2015 report 21.7%);
    # scrambled labels would give chance, 5%.
    images = omniglot.evaluation.flat_images.reshape(-1, 105 * 105)
    support = images[runs["support"][:, :, 0]].astype(np.float32)  # (runs, 20, pixels)
    query = images[runs["query"]].astype(np.float32)                # (runs, 20, pixels)
    # |q - s|^2 = |q|^2 - 2 q.s + |s|^2, exact here: pixels are 0/1 and sums stay small.
    distance = ((query ** 2).sum(-1)[:, :, None] - 2 * query @ support.transpose(0, 2, 1)
                + (support ** 2).sum(-1)[:, None, :])
    accuracy = (distance.argmin(-1) == runs["query_label"]).mean()
    assert 0.12 <= accuracy <= 0.35


# ---------------------------------------------------------------- synthetic runs

def png(mask):
    out = io.BytesIO()
    Image.fromarray(~mask.astype(bool)).save(out, format="PNG")
    return out.getvalue()


def synthetic_runs(tmp_path, drop=None, foreign=None):
    """An evaluation split of 20 characters and a one-run-per-run all_runs.zip built from it."""
    rng = np.random.default_rng(0)
    images = (rng.random((20, 20, 105, 105)) < 0.05).astype(np.uint8)
    characters = np.array([f"character{i:02d}" for i in range(1, 21)])
    split = make_split("evaluation", images, np.array(["A"] * 20), characters)
    path = tmp_path / "all_runs.zip"
    with zipfile.ZipFile(path, "w") as archive:
        for r in range(1, 21):
            run = f"run{r:02d}"
            order = rng.permutation(20)  # query item i+1 shows character order[i]
            labels = [f"{run}/test/item{i + 1:02d}.png {run}/training/class{order[i] + 1:02d}.png"
                      for i in range(20)]
            archive.writestr(f"{run}/class_labels.txt", "\n".join(labels) + "\n")
            for j in range(20):
                archive.writestr(f"{run}/training/class{j + 1:02d}.png", png(images[j, 0]))
            for i in range(20):
                name = f"{run}/test/item{i + 1:02d}.png"
                if name == drop:
                    continue
                mask = rng.random((105, 105)) < 0.05 if name == foreign else images[order[i], 1 + r % 19]
                archive.writestr(name, png(mask))
    return path, split


def test_synthetic_runs_map_to_ids(tmp_path):
    path, split = synthetic_runs(tmp_path)
    runs = load_official_runs(path, split)
    assert np.array_equal(runs["support"][:, :, 0], np.tile(np.arange(20) * 20, (20, 1)))
    assert np.array_equal(runs["query"] // 20, runs["query_label"])


def test_unknown_image_names_run_and_file(tmp_path):
    path, split = synthetic_runs(tmp_path, foreign="run03/test/item05.png")
    with pytest.raises(DataError, match="run03/test/item05.png is not an image of the evaluation split"):
        load_official_runs(path, split)


def test_missing_image_names_run_and_file(tmp_path):
    path, split = synthetic_runs(tmp_path, drop="run02/test/item11.png")
    with pytest.raises(DataError, match="run02/test/item11.png"):
        load_official_runs(path, split)


def test_malformed_zip_is_a_data_error(tmp_path):
    _, split = synthetic_runs(tmp_path)
    (tmp_path / "bad.zip").write_bytes(b"garbage")
    with pytest.raises(DataError, match="bad.zip"):
        load_official_runs(tmp_path / "bad.zip", split)

"""Lake et al.'s Modified Hausdorff Distance 1-NN: both centrings against direct computations,
the contract, and the official runs (155 of 400 wrong with Lake's exact centring)."""

import numpy as np
import pytest
from scipy.spatial.distance import cdist

from benchmark.api import EpisodeBatch, FitContext
from benchmark.checks import check_method
from benchmark.data import official_runs_zip
from benchmark.errors import ConfigError
from methods.mhd import ModifiedHausdorff, PixelTable
from tasks import episodes as ep
from tasks.official import load_official_runs
from tests.synthetic import synthetic_omniglot

DATA = synthetic_omniglot()


def lake_points(image, rounded=False):
    """Lake's LoadImgAsPoints: the ink's (row, column) minus their mean (or the mean rounded)."""
    points = np.argwhere(image).astype(float)
    mean = points.mean(axis=0)
    return points - (np.rint(mean) if rounded else mean)


def lake_mhd(a, b):
    """Lake's ModHausdorffDistance (demo_classification.py), with scipy's cdist."""
    distances = cdist(a, b)
    return max(distances.min(axis=1).mean(), distances.min(axis=0).mean())


def batch(n_way=5, k_shot=1, count=3, seed=0):
    split = DATA.evaluation
    tasks = ep.generate(split.alphabet, split.sha256, "cross", n_way, k_shot, 2, count, seed)
    return EpisodeBatch(split.flat_images, tasks.support, tasks.query, split.sha256), tasks


def direct_scores(batch, rounded):
    images = batch.images
    out = np.empty(batch.score_shape)
    for e in range(batch.n_episodes):
        for q, query in enumerate(batch.query[e]):
            for j in range(batch.n_way):
                out[e, q, j] = -min(lake_mhd(lake_points(images[query], rounded), lake_points(images[s], rounded))
                                    for s in batch.support[e, j])
    return out


@pytest.mark.parametrize("centring,rounded", [("exact", False), ("pixel", True)])
def test_scores_are_the_negative_distance_to_the_nearest_support_drawing(centring, rounded):
    episodes, _ = batch(n_way=3, k_shot=2, count=2)
    scores = ModifiedHausdorff(centring=centring).fit(None, FitContext()).predict(episodes)
    # exact: float64 throughout; pixel: float32 sums of the distance transform
    np.testing.assert_allclose(scores, direct_scores(episodes, rounded), rtol=1e-5 if rounded else 1e-6)


def test_the_pixel_table_is_symmetric_and_zero_on_its_diagonal():
    images = DATA.evaluation.flat_images[:30]
    table = PixelTable(images).table.numpy()
    np.testing.assert_array_equal(table, table.T)
    np.testing.assert_array_equal(np.diag(table), 0)
    i, j = 3, 17
    assert table[i, j] == pytest.approx(lake_mhd(lake_points(images[i], True), lake_points(images[j], True)),
                                        rel=1e-5)


def test_meets_the_contract_with_each_centring():
    assert set(check_method(ModifiedHausdorff, {"centring": "pixel"}).values()) == {"passed"}
    outcome = check_method(ModifiedHausdorff, {"centring": "exact"},
                           rules=["deterministic", "relabel_equivariant", "inductive", "above_chance"])
    assert set(outcome.values()) == {"passed"}


def test_an_unknown_centring_is_one_config_error():
    with pytest.raises(ConfigError, match="mhd: centring must be one of exact, pixel, got 'mean'"):
        ModifiedHausdorff(centring="mean").fit(None, FitContext())


def test_lake_s_official_runs_give_his_155_errors_of_400(omniglot, omniglot_dir):
    evaluation = omniglot.evaluation
    runs = load_official_runs(official_runs_zip(omniglot_dir, download=False), evaluation)
    episodes = EpisodeBatch(evaluation.flat_images, runs["support"], runs["query"], evaluation.sha256)
    scores = ModifiedHausdorff(centring="exact").fit(None, FitContext()).predict(episodes)
    assert int((scores.argmax(-1) != runs["query_label"]).sum()) == 155  # Lake et al. 2015: 38.8% error

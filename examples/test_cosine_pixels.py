"""The example plugin's own tests: the method contract, plus what is specific to it.

pytest puts this folder on sys.path, so the plugin imports by its file name.
"""

import numpy as np
import pytest

from benchmark.api import EpisodeBatch, FitContext
from benchmark.checks import check_method, parametrize_with_checks
from benchmark.errors import ConfigError
from benchmark.synthetic import synthetic_splits
from cosine_pixels import CosinePixels


@parametrize_with_checks([CosinePixels])  # one test per rule of the method contract
def test_cosine_pixels_meets_the_method_contract(method_class, check):
    check(method_class)


def test_cosine_pixels_meets_it_at_another_size_too():
    check_method(CosinePixels, {"size": 7})  # every rule at once, with other hyperparameters


def test_scores_are_cosines_and_a_support_image_matches_itself():
    background, evaluation = synthetic_splits()
    method = CosinePixels().fit(background, FitContext(progress=False))
    support = np.array([[[0], [20], [40]]])  # one 3-way 1-shot episode: characters 0, 1, 2
    query = np.array([[20, 41]])  # the support image of class 1, another drawing of class 2
    scores = method.predict(EpisodeBatch(evaluation.flat_images, support, query, evaluation.sha256))
    assert scores.shape == (1, 2, 3)
    assert np.all(scores <= 1 + 1e-6) and np.all(scores >= 0)  # ink densities are never negative
    assert scores[0, 0, 1] == pytest.approx(1.0)
    assert scores[0].argmax(-1).tolist() == [1, 2]


def test_a_size_out_of_range_is_a_config_error():
    background, _ = synthetic_splits()
    with pytest.raises(ConfigError, match="size must be between 1 and 105"):
        CosinePixels(size=0).fit(background, FitContext(progress=False))

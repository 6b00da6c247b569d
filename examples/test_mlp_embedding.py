"""The trained example plugin's tests: the method contract, plus what is specific to training.

pytest puts this folder on sys.path, so the plugin imports by its file name.
"""

import numpy as np

from benchmark import CheckpointStore, FitContext, check_method, parametrize_with_checks, synthetic_omniglot
from mlp_embedding import MLPEmbedding


@parametrize_with_checks([MLPEmbedding])  # one test per rule of the method contract
def test_mlp_embedding_meets_the_method_contract(method_class, check):
    check(method_class)


def test_it_meets_the_contract_with_validation_too():
    check_method(MLPEmbedding, {"steps": 20, "validation_alphabets": 1, "validate_every": 10})


def test_training_lowers_the_loss_and_the_weights_are_cached(tmp_path):
    data = synthetic_omniglot()
    context = FitContext(progress=False, checkpoints=CheckpointStore(tmp_path, log=lambda m: None),
                         log=lambda m: None)
    first = MLPEmbedding(steps=60, validation_alphabets=0).fit(data.background, context)
    assert first.training_info_["steps"] == 60 and "from_checkpoint" not in first.training_info_
    again = MLPEmbedding(steps=60, validation_alphabets=0).fit(data.background, context)
    assert "from_checkpoint" in again.training_info_  # same settings and seed: loaded, not trained
    for a, b in zip(first.network_.parameters(), again.network_.parameters()):
        assert np.array_equal(a.detach().numpy(), b.detach().numpy())
    untrained = MLPEmbedding(steps=1, learning_rate=0.0, validation_alphabets=0).fit(data.background, context)
    assert first.training_info_["final_loss"] < untrained.training_info_["final_loss"] / 2

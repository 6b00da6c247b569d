"""Fine-tuned softmax transfer: per-episode fine-tuning on tiny synthetic data."""

import numpy as np
import pytest
import torch

import methods.softmax_transfer as softmax_transfer
from benchmark.api import EpisodeBatch, FitContext
from benchmark.checkpoints import CheckpointStore
from benchmark.checks import check_method
from benchmark.errors import ConfigError
from benchmark.nets import conv_block
from methods._episode_finetune import FineTuneSettings, LastBlock, classify, fine_tune_heads
from methods.softmax_transfer import SoftmaxTransfer
from tasks import episodes as ep
from tests.synthetic import synthetic_omniglot

DATA = synthetic_omniglot()
TINY = {"channels": 8, "steps": 15, "batch_size": 16, "validation_alphabets": 1, "validate_every": 5,
        "finetune_steps": 10}


def fitted(seed=0, **params):
    quiet = FitContext(seed=seed, progress=False, log=lambda message: None)
    return SoftmaxTransfer(**{**TINY, **params}).fit(DATA.background, quiet)


@pytest.fixture(scope="module", params=["head", "head+last"])
def method(request):
    return fitted(adapt=request.param)


def batch_for(n_way=5, k_shot=1, n_query=2, count=6, seed=0):
    split = DATA.evaluation
    tasks = ep.generate(split.alphabet, split.sha256, "cross", n_way, k_shot, n_query, count, seed)
    return EpisodeBatch(split.flat_images, tasks.support, tasks.query, split.sha256), tasks


def separable_episodes(episodes=3, n_way=4, k_shot=2, dim=12, seed=0):
    """Support and query features clustered around one random direction per class."""
    generator = torch.Generator().manual_seed(seed)
    centres = torch.randn(episodes, n_way, 1, dim, generator=generator) * 3
    support = centres + 0.1 * torch.randn(episodes, n_way, k_shot, dim, generator=generator)
    query = centres + 0.1 * torch.randn(episodes, n_way, 3, dim, generator=generator)
    query = query.reshape(episodes, -1, dim)
    labels = torch.arange(n_way).repeat_interleave(3).expand(episodes, -1)
    return support, query, labels


def random_last_block(seed=0, channels=6, size=3):
    """A conv block in eval mode with non-trivial batch-norm statistics, and its folded form."""
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        block = conv_block(channels, channels)
        block[1].running_mean.normal_()
        block[1].running_var.uniform_(0.5, 2.0)
        block[1].weight.data.uniform_(0.5, 1.5)
        block[1].bias.data.normal_()
    return block.eval(), LastBlock.from_block(block, (channels, size, size))


def test_fine_tuning_sees_only_the_supports(method, monkeypatch):
    seen = []
    real = softmax_transfer.fine_tune_heads

    def recording(*args, **kwargs):
        seen.append((args, kwargs))
        return real(*args, **kwargs)

    monkeypatch.setattr(softmax_transfer, "fine_tune_heads", recording)
    batch, _ = batch_for()
    method.predict(batch)
    (support, settings, last), kwargs = seen[0]
    assert len(seen) == 1 and not kwargs  # one program for all episodes of the batch
    assert isinstance(settings, FineTuneSettings) and (last is None) == (method.adapt == "head")
    expected = method.embed(batch.images[batch.support.reshape(-1)])
    assert torch.allclose(support.reshape(-1, support.shape[-1]), expected, atol=1e-5)


def test_scores_of_a_query_do_not_depend_on_the_other_queries(method):
    batch, _ = batch_for()
    scores = method.predict(batch)
    others = batch.query.copy()
    others[:, 1:] = np.random.default_rng(0).integers(0, len(batch.images), size=others[:, 1:].shape)
    changed = method.predict(EpisodeBatch(batch.images, batch.support, others, batch.images_key))
    assert np.allclose(changed[:, 0], scores[:, 0], atol=1e-5)
    assert not np.allclose(changed[:, 1:], scores[:, 1:])


def test_relabelling_the_supports_relabels_the_predictions(method):
    batch, _ = batch_for(n_way=5, k_shot=2)
    order = np.array([2, 4, 0, 1, 3])
    relabelled = EpisodeBatch(batch.images, batch.support[:, order].copy(), batch.query, batch.images_key)
    scores, permuted = method.predict(batch), method.predict(relabelled)
    assert np.allclose(permuted, scores[:, :, order], atol=1e-4)


def test_fine_tuning_from_zero_reaches_all_correct_on_separable_episodes():
    support, query, labels = separable_episodes()
    untrained = fine_tune_heads(support, FineTuneSettings(steps=0, prototype_init=False))
    assert (classify(query, untrained).argmax(-1) == labels).float().mean() < 0.5  # all ties: class 0
    heads = fine_tune_heads(support, FineTuneSettings(steps=10, learning_rate=0.1, prototype_init=False))
    assert torch.equal(classify(query, heads).argmax(-1), labels)
    on_supports = classify(support.reshape(support.shape[0], -1, support.shape[-1]), heads).argmax(-1)
    assert torch.equal(on_supports, torch.arange(4).repeat_interleave(2).expand(3, -1))


@pytest.mark.parametrize("adapt_last", [False, True])
def test_batched_fine_tuning_equals_each_episode_alone(adapt_last):
    block, last = random_last_block() if adapt_last else (None, None)
    dim = 6 * 3 * 3 if adapt_last else 12
    support, query, _ = separable_episodes(episodes=4, n_way=3, k_shot=2, dim=dim, seed=1)
    settings = FineTuneSettings(steps=15, learning_rate=0.05, weight_decay=0.01)
    together = fine_tune_heads(support, settings, last)
    scores = classify(query, together, last)
    for e in range(4):
        alone = fine_tune_heads(support[e:e + 1], settings, last)
        assert torch.allclose(alone.weight[0], together.weight[e], atol=1e-5)
        assert torch.allclose(classify(query[e:e + 1], alone, last)[0], scores[e], atol=1e-4)
        if adapt_last:
            assert torch.allclose(alone.last_weight[0], together.last_weight[e], atol=1e-5)
            assert not torch.allclose(together.last_weight[e], last.weight)  # the layer was tuned


def test_folded_last_block_computes_the_block():
    block, last = random_last_block(channels=6, size=5)
    inputs = torch.randn(7, 6, 5, 5)
    expected = block(inputs).flatten(1)
    columns = last.columns(inputs.reshape(1, 7, -1))
    folded = last.apply(columns, last.weight[None], last.bias[None])[0]
    assert torch.allclose(folded, expected, atol=1e-5)


def test_same_seed_same_scores_and_another_seed_other_scores():
    batch, _ = batch_for()
    torch.manual_seed(123)  # the global generator must not matter
    first = fitted(seed=3).predict(batch)
    torch.manual_seed(456)
    assert np.array_equal(fitted(seed=3).predict(batch), first)
    assert not np.allclose(fitted(seed=4).predict(batch), first)


def test_fine_tuning_settings_reuse_the_trained_checkpoint(tmp_path):
    messages = []
    context = FitContext(progress=False, checkpoints=CheckpointStore(tmp_path), log=messages.append)
    trained = SoftmaxTransfer(**TINY).fit(DATA.background, context)
    assert "from_checkpoint" not in trained.training_info_
    retuned = SoftmaxTransfer(**TINY | {"finetune_steps": 3, "adapt": "head+last"})
    retuned.fit(DATA.background, context)
    assert "from_checkpoint" in retuned.training_info_
    for a, b in zip(trained.trunk_.state_dict().values(), retuned.trunk_.state_dict().values()):
        assert torch.equal(a, b)
    other = SoftmaxTransfer(**{**TINY, "steps": 16}).fit(DATA.background, context)
    assert "from_checkpoint" not in other.training_info_  # a training setting: trained again


def test_meets_the_method_contract():
    check_method(SoftmaxTransfer)


@pytest.mark.parametrize("params", [{"adapt": "everything"}, {"steps": 0}, {"image_size": 8},
                                    {"finetune_steps": -1}])
def test_bad_hyperparameters_are_one_clear_error(params):
    with pytest.raises(ConfigError, match="softmax_transfer: "):
        fitted(**params)


def test_training_learns_the_background_characters_and_keeps_the_best_validated_weights():
    info = fitted(steps=40, learning_rate=0.01).training_info_
    assert info["steps"] == 40 and info["best_step"] in range(5, 41, 5)
    # A classifier that ignores the image cannot get below log(classes) (uniform labels).
    assert info["final_loss"] < 0.9 * np.log(info["train_characters"])

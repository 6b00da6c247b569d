"""Random guessing and pixel 1-NN, on synthetic data and against direct computations."""

import numpy as np
import pytest
import torch

from benchmark.api import Capabilities, EmbeddingMethod, EpisodeBatch, FitContext
from benchmark.errors import MethodError
from benchmark.registry import get_method
from methods import nearest_neighbor
from tasks import episodes as ep
from tests.synthetic import synthetic_omniglot

DATA = synthetic_omniglot()


def batch_for(episodes, split=DATA.evaluation):
    return EpisodeBatch(split.flat_images, episodes.support, episodes.query, split.sha256)


def episodes(n_way=5, k_shot=1, n_query=2, count=40, seed=0, protocol="cross"):
    split = DATA.evaluation
    return ep.generate(split.alphabet, split.sha256, protocol, n_way, k_shot, n_query, count, seed)


def fitted(name, **params):
    return get_method(name)(**params).fit(DATA.background, FitContext(seed=0, progress=False))


def accuracy(scores, episode_set):
    return float(np.mean(scores.argmax(-1) == episode_set.query_label))


def test_random_is_seeded_and_order_independent():
    a, b = episodes(seed=0), episodes(seed=1)
    first = fitted("random")
    scores_a = first.predict(batch_for(a))
    second = fitted("random")
    second.predict(batch_for(b))
    assert np.array_equal(second.predict(batch_for(a)), scores_a)
    assert not np.array_equal(fitted("random", seed=7).predict(batch_for(a)), scores_a)


def test_random_scores_one_in_n():
    e = episodes(n_way=10, n_query=1, count=2000)
    assert abs(accuracy(fitted("random").predict(batch_for(e)), e) - 0.1) < 0.02


@pytest.mark.parametrize("name", ["random", "nearest_neighbor"])
def test_predict_before_fit_raises(name):
    with pytest.raises(MethodError, match="before fit"):
        get_method(name)().predict(batch_for(episodes()))


def direct_nearest_neighbor(images, support, query):
    """Reference 1-NN written the obvious way: a loop over queries and supports."""
    flat = images.reshape(len(images), -1).astype(np.int64)
    e, n, k = support.shape
    scores = np.zeros((e, query.shape[1], n))
    for i in range(e):
        for j, q in enumerate(query[i]):
            distances = ((flat[support[i]] - flat[q]) ** 2).sum(-1)  # (n, k)
            scores[i, j] = -distances.min(-1)
    return scores


@pytest.fixture
def per_episode_path(monkeypatch):
    """1-NN without its Gram table: the per-episode path that EmbeddingMethod provides."""
    monkeypatch.setattr(nearest_neighbor, "GRAM_MAX_IMAGES", 0)


@pytest.mark.parametrize("path", ["gram", "per_episode"])
@pytest.mark.parametrize("k_shot", [1, 3])
def test_nearest_neighbor_matches_a_direct_computation(k_shot, path, monkeypatch):
    if path == "per_episode":
        monkeypatch.setattr(nearest_neighbor, "GRAM_MAX_IMAGES", 0)
    e = episodes(n_way=6, k_shot=k_shot, n_query=2, count=15)
    scores = fitted("nearest_neighbor").predict(batch_for(e))
    reference = direct_nearest_neighbor(DATA.evaluation.flat_images, e.support, e.query)
    assert np.array_equal(scores.argmax(-1), reference.argmax(-1))
    # Scores differ from -distance only by the query's own squared norm.
    query_norms = DATA.evaluation.flat_images[e.query].reshape(*e.query.shape, -1).sum(-1)
    assert np.array_equal(scores - query_norms[..., None], reference)


def test_both_paths_of_nearest_neighbor_give_identical_scores(monkeypatch):
    e = episodes(n_way=7, k_shot=2, n_query=3, count=40)
    gram = fitted("nearest_neighbor").predict(batch_for(e))
    monkeypatch.setattr(nearest_neighbor, "GRAM_MAX_IMAGES", 0)
    assert np.array_equal(fitted("nearest_neighbor").predict(batch_for(e)), gram)


def test_gram_table_is_exact_with_and_without_the_int8_product(monkeypatch):
    pixels = torch.from_numpy((np.random.default_rng(0).random((300, 11025)) < 0.5).astype(np.int8))
    exact = pixels.long() @ pixels.long().T
    monkeypatch.setattr(nearest_neighbor, "GRAM_ROWS_PER_BLOCK", 128)  # several blocks
    assert torch.equal(nearest_neighbor.int_gram(pixels).long(), exact)
    monkeypatch.delattr(torch, "_int_mm")  # a torch without the int8 product
    assert torch.equal(nearest_neighbor.int_gram(pixels).long(), exact)


def test_nearest_neighbor_makes_one_table_per_pool_and_a_new_one_after_fit():
    method = fitted("nearest_neighbor")
    method.predict(batch_for(episodes(seed=0)))
    table = method.gram_[1]
    method.predict(batch_for(episodes(seed=1)))
    assert method.gram_[1] is table
    method.fit(DATA.background, FitContext(progress=False))
    assert method.gram_ is None


def test_nearest_neighbor_separates_synthetic_characters():
    e = episodes(n_way=10, count=50)
    assert accuracy(fitted("nearest_neighbor").predict(batch_for(e)), e) > 0.95


def embed_call_sizes(method, monkeypatch) -> list[int]:
    """The number of images of each later call of `method.embed`, appended as they happen."""
    sizes = []
    original = method.embed
    monkeypatch.setattr(method, "embed", lambda images: sizes.append(len(images)) or original(images))
    return sizes


def test_embedding_cache_reuses_features_and_chunks_give_the_same_scores(monkeypatch, per_episode_path):
    method = fitted("nearest_neighbor")
    calls = embed_call_sizes(method, monkeypatch)
    e = episodes(n_way=5, count=30)
    first = method.predict(batch_for(e))
    again = method.predict(batch_for(e))
    assert np.array_equal(first, again) and sum(calls) == len(np.unique(np.r_[e.support.ravel(), e.query.ravel()]))
    monkeypatch.setattr(type(method), "score_chunk_bytes", 1)  # one episode per chunk
    assert np.array_equal(method.predict(batch_for(e)), first)


def test_refit_forgets_cached_embeddings(per_episode_path):
    method = fitted("nearest_neighbor")
    method.predict(batch_for(episodes()))
    cache = method.embeddings_
    assert cache.table is not None
    method.fit(DATA.background, FitContext(progress=False))
    assert method.embeddings_ is not cache and method.embeddings_.table is None


def test_batch_is_read_only_so_methods_cannot_mutate_inputs():
    e = episodes()
    batch = batch_for(e)
    with pytest.raises(ValueError):
        batch.support[0, 0, 0] = 1
    with pytest.raises(ValueError):
        batch.images[0, 0, 0] = 1


class PerEpisodeHead(EmbeddingMethod):
    """Fits a prototype per episode by gradient descent inside score: it needs gradients there."""

    capabilities = Capabilities()

    def __init__(self):
        pass

    def fit(self, training_split, context):
        self.reset_embeddings()
        return self

    def embed(self, images):
        return torch.from_numpy(images.reshape(len(images), -1).astype("float32")) / 100

    def score(self, query, support):
        centres = support.mean(2).clone().requires_grad_()
        optimiser = torch.optim.SGD([centres], lr=0.1)
        for _ in range(3):  # pull each centre towards its own supports
            loss = (centres[:, :, None] - support).square().sum()
            optimiser.zero_grad()
            loss.backward()
            optimiser.step()
        return -torch.cdist(query, centres.detach())


def test_score_runs_without_gradients_unless_the_method_asks_for_them():
    e = episodes()
    with pytest.raises(RuntimeError, match="grad"):
        PerEpisodeHead().fit(DATA.background, FitContext(progress=False)).predict(batch_for(e))
    tuned = type("Tuned", (PerEpisodeHead,), {"score_needs_grad": True})
    scores = tuned().fit(DATA.background, FitContext(progress=False)).predict(batch_for(e))
    assert accuracy(scores, e) > 0.9


def test_images_are_embedded_64_a_call_on_a_cpu(monkeypatch, per_episode_path):
    method = fitted("nearest_neighbor")
    sizes = embed_call_sizes(method, monkeypatch)
    e = episodes(n_way=5, count=40)
    method.predict(batch_for(e))
    assert sum(sizes) == len(np.unique(np.r_[e.support.ravel(), e.query.ravel()])) > 64
    assert set(sizes[:-1]) == {EmbeddingMethod.embed_batch_sizes["cpu"]} == {64}

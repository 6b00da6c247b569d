"""The Siamese method: architecture, symmetry, training, checkpoints, data isolation, k-shot."""

import copy
import hashlib
import math

import numpy as np
import pytest
import torch

from benchmark.api import EpisodeBatch, FitContext
from benchmark.checkpoints import CheckpointStore
from benchmark.config import config_from_dict
from benchmark.errors import ConfigError
from benchmark.runner import RunOptions, run_benchmark
from benchmark.training import learning_rate_factor, split_tensor, train
from methods import _siamese_training as training
from methods import siamese as siamese_module
from methods._siamese_nets import KOCH_PARAMETERS, SiameseNet, count_parameters
from methods.siamese import Siamese
from tasks import episodes as ep
from tasks.sets import TaskSet
from tests.synthetic import synthetic_omniglot

DATA = synthetic_omniglot()
TINY = dict(architecture="compact", image_size=32, channels=16, steps=20, batch_images=16,
            learning_rate=1e-2, warmup_steps=0, validate_every=10, validation_alphabets=1,
            validation_episodes=20)


@pytest.fixture(autouse=True)
def one_thread():
    """Tiny networks run faster on one thread, and a loaded machine cannot stall its other threads."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def quiet_context(**kwargs) -> FitContext:
    return FitContext(**{"seed": 0, "progress": False, "log": lambda message: None, **kwargs})


def fit_tiny(seed=0, **params) -> Siamese:
    torch.manual_seed(seed)  # as the runner does
    return Siamese(**{**TINY, **params}).fit(DATA.background, quiet_context(seed=seed))


def settings_for(**params) -> training.TrainSettings:
    method = Siamese(**params)
    return method.settings(method.resolved_params("cpu"))


def evaluation_batch(n_way=5, k_shot=1, seed=0) -> tuple[EpisodeBatch, object]:
    split = DATA.evaluation
    episodes = ep.generate(split.alphabet, split.sha256, "cross", n_way, k_shot, 2, 30, seed)
    return EpisodeBatch(split.flat_images, episodes.support, episodes.query, split.sha256), episodes


def test_koch_architecture_has_the_papers_parameter_count():
    net = SiameseNet("koch", 105)
    assert count_parameters(net) == KOCH_PARAMETERS == 38_951_745
    assert net(torch.zeros(2, 1, 105, 105)).shape == (2, 4096)


def test_auto_architecture_is_koch_on_a_gpu_and_compact_on_a_cpu():
    method = Siamese()
    assert method.resolved_architecture("cuda") == "koch"
    assert method.resolved_architecture("cuda:0") == "koch"
    assert method.resolved_architecture("cpu") == "compact"
    assert Siamese(architecture="koch").resolved_architecture("cpu") == "koch"


@pytest.mark.parametrize("architecture,size", [("compact", 28), ("koch", 105)])
def test_swapping_the_two_inputs_gives_the_same_score(architecture, size):
    torch.manual_seed(0)
    net = SiameseNet(architecture, size, channels=8).eval()
    images = torch.rand(6, 1, size, size)
    with torch.no_grad():
        features = net(images)
        forward = net.pair_logits(features[:3], features[3:])
        backward = net.pair_logits(features[3:], features[:3])
    assert torch.equal(forward, backward)
    assert not torch.allclose(forward, forward[0])  # the scores do depend on the pair


def test_method_scores_are_symmetric_between_query_and_support():
    method = fit_tiny()
    a, b = torch.randn(2, 4, method.network_.head.in_features).unbind(0)
    # query a against one-shot supports b, and b against supports a: transposed score matrices
    ab = method.score(a[None], b[None, :, None])[0]
    ba = method.score(b[None], a[None, :, None])[0]
    assert torch.equal(ab, ba.T)


def test_a_few_training_steps_lower_the_loss():
    torch.manual_seed(0)
    net = SiameseNet("compact", 28, channels=8)
    data = split_tensor(DATA.background, 28)
    settings = settings_for(steps=40, batch_images=16)
    fixed = training.sample_batch(data, settings, torch.Generator().manual_seed(1))

    def loss_on_fixed_batch(model):
        model = copy.deepcopy(model).train()  # batch statistics, as in training
        with torch.no_grad():
            return training.pair_loss(model, model(fixed[0]), fixed[1], "all").item()

    before = loss_on_fixed_batch(net)
    trainer = training.PairTrainer(net, data, settings, torch.Generator().manual_seed(0))
    info = train("siamese", net, trainer.optimizer, trainer.loss, trainer.schedule(), FitContext(progress=False))
    assert info["steps"] == 40
    assert loss_on_fixed_batch(net) < 0.9 * before


def test_koch_pairing_batches_are_half_same_half_different_characters():
    data = torch.arange(10 * 20, dtype=torch.float32).reshape(10, 20, 1, 1, 1)
    settings = settings_for(pairing="koch", batch_images=40)
    images, same = training.sample_batch(data, settings, torch.Generator().manual_seed(0))
    ids = images.reshape(-1).long()
    first, second = ids[:20], ids[20:]
    assert same.sum() == 10
    assert torch.equal(first // 20 == second // 20, same.bool())
    assert (first != second).all()  # a same pair shows two different drawings


def test_all_pairs_batches_hold_distinct_drawings_of_distinct_characters():
    data = torch.arange(10 * 20, dtype=torch.float32).reshape(10, 20, 1, 1, 1)
    settings = settings_for(batch_images=12, drawings_per_character=3)
    images, labels = training.sample_batch(data, settings, torch.Generator().manual_seed(0))
    ids = images.reshape(-1).long()
    assert len(set(ids.tolist())) == 12 and len(set((ids // 20).tolist())) == 4
    assert torch.equal(labels, torch.arange(4).repeat_interleave(3))
    assert all(len(set((ids[labels == c] // 20).tolist())) == 1 for c in range(4))


def test_checkpoint_round_trip_gives_identical_predictions(tmp_path):
    store = CheckpointStore(tmp_path, log=lambda message: None)
    batch, _ = evaluation_batch()
    torch.manual_seed(0)
    trained = Siamese(**TINY).fit(DATA.background, quiet_context(checkpoints=store))
    assert "from_checkpoint" not in trained.training_info_ and list(tmp_path.iterdir())
    torch.manual_seed(123)  # a different initialisation would show if the weights were not loaded
    loaded = Siamese(**TINY).fit(DATA.background, quiet_context(checkpoints=store))
    assert "from_checkpoint" in loaded.training_info_
    assert np.array_equal(trained.predict(batch), loaded.predict(batch))
    retrained = Siamese(**{**TINY, "steps": 10}).fit(DATA.background, quiet_context(checkpoints=store))
    assert "from_checkpoint" not in retrained.training_info_  # other hyperparameters, other key


def test_same_seed_same_predictions_on_cpu_and_other_seed_differs():
    batch, _ = evaluation_batch()
    first = fit_tiny(seed=0).predict(batch)
    torch.manual_seed(99)  # fit must not depend on torch's global generator
    again = Siamese(**TINY).fit(DATA.background, quiet_context(seed=0)).predict(batch)
    assert np.array_equal(first, again)
    assert not np.array_equal(first, fit_tiny(seed=1).predict(batch))


@pytest.mark.parametrize("aggregation", ["mean", "max", "mean_logit"])
def test_k_shot_aggregation_shape_and_value(aggregation):
    method = fit_tiny(shot_aggregation=aggregation)
    batch, episodes = evaluation_batch(n_way=4, k_shot=3)
    assert method.predict(batch).shape == (30, 8, 4)
    d = method.network_.head.in_features
    query, support = torch.randn(2, 5, d), torch.randn(2, 4, 3, d)
    scores = method.score(query, support)
    assert scores.shape == (2, 5, 4)
    with torch.no_grad():
        logits = method.network_.pair_logits(query[:, :, None, None], support[:, None])  # (2, 5, 4, 3)
    expected = {"mean": torch.sigmoid(logits).mean(-1).log(), "max": logits.amax(-1),
                "mean_logit": logits.mean(-1)}[aggregation]
    assert torch.allclose(scores, expected, atol=1e-5)


def test_training_learns_the_synthetic_characters():
    batch, episodes = evaluation_batch(n_way=5)
    method = fit_tiny()
    accuracy = np.mean(method.predict(batch).argmax(-1) == episodes.query_label)
    assert accuracy > 0.6  # chance is 0.2
    assert method.training_info_["best_validation_accuracy"] is not None


def test_bad_hyperparameters_are_config_errors():
    for params in ({"architecture": "resnet"}, {"pairing": "triplets"}, {"steps": 0},
                   {"drawings_per_character": 1}, {"shot_aggregation": "median"},
                   {"architecture": "compact", "image_size": 8}):
        with pytest.raises(ConfigError):
            Siamese(**{**TINY, **params}).fit(DATA.background, quiet_context())


def image_digests(images) -> set[str]:
    images = images.detach().cpu().numpy() if isinstance(images, torch.Tensor) else np.asarray(images)
    return {hashlib.sha256(np.ascontiguousarray(image).tobytes()).hexdigest() for image in images}


def test_fit_never_receives_evaluation_images(tmp_path, monkeypatch):
    """Through the runner: every image that reaches training or validation is a background image."""
    seen = {"train": set(), "fit_embed": set(), "predict_embed": set()}
    phase = {"in_fit": False}
    real_split_tensor, real_embed, real_fit = siamese_module.split_tensor, Siamese.embed, Siamese.fit

    def recording_split_tensor(split, size, device="cpu"):
        seen["train"] |= image_digests(split.flat_images)
        return real_split_tensor(split, size, device)

    def recording_embed(self, images):
        seen["fit_embed" if phase["in_fit"] else "predict_embed"] |= image_digests(images)
        return real_embed(self, images)

    def recording_fit(self, background, context):
        phase["in_fit"] = True
        try:
            return real_fit(self, background, context)
        finally:
            phase["in_fit"] = False

    monkeypatch.setattr(siamese_module, "split_tensor", recording_split_tensor)
    monkeypatch.setattr(Siamese, "embed", recording_embed)
    monkeypatch.setattr(Siamese, "fit", recording_fit)
    config = config_from_dict({"name": "t", "seed": 0, "methods": {"siamese": TINY}})
    split = DATA.evaluation
    episodes = ep.generate(split.alphabet, split.sha256, "cross", 5, 1, 1, 10, 0)
    outcome = run_benchmark(config, ["siamese"], DATA, [TaskSet("cross", "evaluation", episodes)],
                            tmp_path / "run", RunOptions(progress=False, checkpoint_dir=tmp_path / "ckpt",
                                                         log=lambda message: None))
    assert outcome.failures == {}
    background, evaluation = image_digests(DATA.background.flat_images), image_digests(split.flat_images)
    assert not background & evaluation  # the synthetic splits share no image
    assert seen["train"] and seen["fit_embed"] and seen["predict_embed"]  # the spies saw the calls
    assert seen["train"] <= background and seen["fit_embed"] <= background
    assert not seen["fit_embed"] & seen["train"]  # validation alphabets are held out of training
    assert seen["predict_embed"] <= evaluation


def test_score_chunks_give_the_same_result_as_one_pass(monkeypatch):
    method = fit_tiny()
    d = method.network_.head.in_features
    query, support = torch.randn(3, 40, d), torch.randn(3, 40, 1, d)
    whole = method.score(query, support)
    monkeypatch.setattr(siamese_module, "SCORE_CHUNK_BYTES", 1024)
    assert torch.equal(method.score(query, support), whole)
    assert not math.isnan(whole.sum().item())


def test_unset_hyperparameters_take_the_architectures_preset():
    on_cpu = Siamese().resolved_params("cpu")
    on_gpu = Siamese().resolved_params("cuda")
    assert on_cpu["architecture"] == "compact" and on_gpu["architecture"] == "koch"
    assert {k: on_cpu[k] for k in siamese_module.PRESETS["compact"]} == siamese_module.PRESETS["compact"]
    assert {k: on_gpu[k] for k in siamese_module.PRESETS["koch"]} == siamese_module.PRESETS["koch"]
    chosen = Siamese(learning_rate=0.5, steps=7).resolved_params("cuda")
    assert chosen["learning_rate"] == 0.5 and chosen["steps"] == 7 and chosen["image_size"] == 105
    assert Siamese().get_params()["learning_rate"] is None  # resolving never changes the hyperparameters


def test_optimizer_groups_carry_per_layer_rates_and_l2():
    net = SiameseNet("koch", 105)
    settings = settings_for(architecture="koch", recipe="sgd", learning_rate=0.1, l2_conv=1e-4, l2_dense=1e-3,
                            layer_learning_rates=(1, 2, 3, 4, 5, 6))
    optimizer = training.make_optimizer(net, settings)
    assert isinstance(optimizer, torch.optim.SGD)
    weights = [g for g in optimizer.param_groups if g["weight_decay"] > 0]
    assert [g["lr"] for g in weights] == pytest.approx([0.1, 0.2, 0.3, 0.4, 0.5, 0.6])
    assert [g["weight_decay"] for g in weights] == pytest.approx([2e-4] * 4 + [2e-3] * 2)  # 2 x l2: its gradient
    assert sum(p.numel() for g in optimizer.param_groups for p in g["params"]) == KOCH_PARAMETERS
    with pytest.raises(ValueError, match="layer_learning_rates"):
        training.make_optimizer(net, settings_for(architecture="koch", layer_learning_rates=(1, 2)))


def test_schedules_warm_up_decay_and_ramp_momentum():
    data = torch.zeros((10, 20, 1, 28, 28))  # 200 images: an epoch of 10 steps at 20 a batch
    cosine = settings_for(steps=100, warmup_steps=10, lr_schedule="cosine", batch_images=20)
    net = SiameseNet("compact", 28, channels=4)
    schedule = training.PairTrainer(net, data, cosine, torch.Generator()).schedule()
    # The warm-up multiplies a decay that runs over the whole budget.
    assert learning_rate_factor(0, schedule) == pytest.approx(0.1)
    assert learning_rate_factor(50, schedule) == pytest.approx(0.5)
    assert learning_rate_factor(100, schedule) == pytest.approx(0.0)
    koch = settings_for(steps=1000, warmup_steps=0, lr_schedule="exponential", recipe="sgd", momentum=0.9,
                        batch_images=20)
    trainer = training.PairTrainer(net, data, koch, torch.Generator())
    assert learning_rate_factor(20, trainer.schedule()) == pytest.approx(0.99 ** 2)  # 1% less an epoch
    trainer.loss(0)
    assert trainer.optimizer.param_groups[0]["momentum"] == pytest.approx(0.5)
    trainer.loss(10 * training.MOMENTUM_RAMP_EPOCHS)
    assert trainer.optimizer.param_groups[0]["momentum"] == pytest.approx(0.9)

def test_all_pairs_loss_gradients_are_the_same_on_every_run_with_two_threads():
    # The backward of features[first] on a CPU adds the repeated rows' gradients in whatever
    # order its threads finish (two same-seed fits of the compact net on 2 threads differed in
    # 26 of 30 tensors); pair_loss gathers with index_select, whose backward has a fixed order.
    class Head:
        weights = torch.linspace(-1, 1, 256)

        def pair_logits(self, first, second):
            return ((first - second).abs() * self.weights).sum(-1)

    torch.set_num_threads(2)
    generator = torch.Generator().manual_seed(0)
    features, targets = torch.randn(64, 256, generator=generator), torch.arange(64) % 8
    gradients = []
    for _ in range(6):
        leaf = features.clone().requires_grad_(True)
        training.pair_loss(Head(), leaf, targets, "all").backward()
        gradients.append(leaf.grad)
    assert all(torch.equal(gradients[0], gradient) for gradient in gradients[1:])

"""The method contract (benchmark/checks.py): every built-in passes it, and each rule catches
a method that breaks it."""

import warnings
from pathlib import Path

import numpy as np
import pytest
import torch

import builtins
import io
import os
import socket

from benchmark import registry
from benchmark.api import Capabilities, Method
from benchmark.checks import RULES, CheckFailure, check_method, parametrize_with_checks
from benchmark.synthetic import synthetic_splits

BUILTINS = [registry.get_method(name) for name in registry.builtin_names()]


# No exemption by name here: a method that cannot meet a rule says so in its own CHECK_SKIP.
@parametrize_with_checks(BUILTINS)
def test_every_builtin_method_meets_each_rule_of_the_contract(method_class, check):
    check(method_class)


def test_random_opts_out_of_the_rules_a_chance_baseline_cannot_meet_on_its_class():
    outcome = check_method(registry.get_method("random"))
    skipped = sorted(rule for rule, result in outcome.items() if result.startswith("skipped: "))
    assert skipped == ["above_chance", "inductive", "relabel_equivariant"]
    assert outcome["above_chance"] == "skipped: a chance baseline"


# ------------------------------------------------------------------ a method that passes

class Prototype(Method):
    """Negative L2 distance between 15x15 ink densities and each class's mean."""

    capabilities = Capabilities(needs_training=False, deterministic=True)

    def __init__(self, pool: int = 7, noise: float = 0.0):
        self.pool = pool
        self.noise = noise

    def fit(self, background, context):
        self.seed_ = context.seed
        return self

    def features(self, images):
        n = len(images)
        pooled = images.reshape(n, 105 // self.pool, self.pool, 105 // self.pool, self.pool)
        return pooled.mean(axis=(2, 4)).reshape(n, -1)

    def predict(self, batch):
        self.check_is_fitted("seed_")
        features = self.features(batch.images[np.unique(batch.support)].astype(np.float64))
        table = dict(zip(np.unique(batch.support).tolist(), features))
        prototypes = np.array([[np.mean([table[i] for i in cls], axis=0) for cls in episode]
                               for episode in batch.support])  # (E, N, d)
        queries = self.features(batch.images[batch.query.reshape(-1)].astype(np.float64))
        queries = queries.reshape(batch.n_episodes, batch.n_queries, -1)
        scores = -((queries[:, :, None, :] - prototypes[:, None, :, :]) ** 2).sum(-1)
        if self.noise:  # seeded by the batch, so the same batch gets the same noise
            scores += self.noise * np.random.default_rng([self.seed_, batch.fingerprint()]).random(scores.shape)
        return scores


def test_a_correct_method_passes_every_rule():
    assert check_method(Prototype) == {rule: "passed" for rule in RULES}


# ------------------------------------------------------------------ one broken method per rule

class NotAMethod:
    pass


class CapabilitiesAsDict(Prototype):
    capabilities = {"deterministic": True}


class OpensAFileInInit(Prototype):
    def __init__(self, pool: int = 7, noise: float = 0.0):
        super().__init__(pool, noise)
        with open(Path(__file__).resolve().parent.parent / "pyproject.toml", "rb"):
            pass


class BuildsStateInInit(Prototype):
    def __init__(self, pool: int = 7, noise: float = 0.0):
        super().__init__(pool, noise)
        self.network = torch.nn.Linear(3, 3)


class RenamesItsArgument(Prototype):
    def __init__(self, pool: int = 7, noise: float = 0.0):
        self.pool_size = pool
        self.pool = pool
        self.amount = noise


class ConvertsItsArgument(Prototype):
    def __init__(self, pool: int = 7, noise: float = 0.0):
        super().__init__(pool * 1.0 + 0.5, noise)


class PredictsWithoutFit(Prototype):
    def predict(self, batch):
        self.seed_ = 0
        return super().predict(batch)


class FitReturnsNothing(Prototype):
    def fit(self, background, context):
        super().fit(background, context)


class FitChangesAHyperparameter(Prototype):
    def fit(self, background, context):
        self.noise = 0.5
        return super().fit(background, context)


class WrongShapeFor20Way(Prototype):
    def predict(self, batch):
        scores = super().predict(batch)
        return scores[:, :, :10] if batch.n_way == 20 else scores


class NaNFor5Shot(Prototype):
    def predict(self, batch):
        scores = super().predict(batch)
        if batch.k_shot == 5:
            scores[0, 0, 0] = np.nan
        return scores


class WritesIntoTheBackground(Prototype):
    def fit(self, background, context):
        with warnings.catch_warnings():  # torch warns that the array is read-only, and writes anyway
            warnings.simplefilter("ignore")
            torch.from_numpy(background.images)[0, 0, 0, 0] += 1
        return super().fit(background, context)


class WritesIntoTheSupportIds(Prototype):
    def predict(self, batch):
        scores = super().predict(batch)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            torch.from_numpy(batch.support)[0, 0, 0] = 0
        return scores


class GlobalRandomness(Prototype):
    def predict(self, batch):
        return super().predict(batch) + np.random.random(batch.score_shape)


class UnseededFit(Prototype):
    def fit(self, background, context):
        super().fit(background, context)
        self.seed_ = int(np.random.default_rng().integers(1 << 30))
        self.noise_ = 1e-3
        return self

    def predict(self, batch):
        scores = super().predict(batch)
        return scores + self.noise_ * np.random.default_rng([self.seed_, 1]).random(scores.shape)


class PrefersTheLastPosition(Prototype):
    def predict(self, batch):
        return super().predict(batch) + 0.01 * np.arange(batch.n_way)


class ConstantScores(Prototype):
    def predict(self, batch):
        self.check_is_fitted("seed_")
        return np.zeros(batch.score_shape)  # ties go to the first class: accuracy 1/N


class CentresOnTheOtherQueries(Prototype):
    """Transductive: each class's scores are centred on their mean over the episode's queries."""

    def predict(self, batch):
        scores = super().predict(batch)
        return scores - scores.mean(axis=1, keepdims=True)


class DeclaredTransductive(CentresOnTheOtherQueries):
    capabilities = Capabilities(needs_training=False, deterministic=True, transductive=True)


BROKEN = [
    (NotAMethod, "method_class", "not a subclass"),
    (CapabilitiesAsDict, "method_class", "Capabilities"),
    (OpensAFileInInit, "init_stores_params", "used the file"),
    (BuildsStateInInit, "init_stores_params", "set network"),
    (RenamesItsArgument, "init_stores_params", "'noise' is not stored"),
    (ConvertsItsArgument, "init_stores_params", "self.pool is 7.5"),
    (PredictsWithoutFit, "predict_before_fit_raises", "check_is_fitted"),
    (FitReturnsNothing, "fit_returns_self", "return self"),
    (FitChangesAHyperparameter, "fit_keeps_params", "noise"),
    (WrongShapeFor20Way, "scores_shape_and_finite", "20-way"),
    (NaNFor5Shot, "scores_shape_and_finite", "NaN"),
    (WritesIntoTheBackground, "inputs_not_mutated", "training images"),
    (WritesIntoTheSupportIds, "inputs_not_mutated", "support or query ids"),
    (GlobalRandomness, "deterministic", "two predict calls"),
    (UnseededFit, "deterministic", "two instances"),
    (PrefersTheLastPosition, "relabel_equivariant", "reordering the support classes"),
    (CentresOnTheOtherQueries, "inductive", "declare Capabilities(transductive=True)"),
    (ConstantScores, "above_chance", "accuracy 0.20"),
]


@pytest.mark.parametrize("cls,rule,detail", BROKEN, ids=[c.__name__ for c, _, _ in BROKEN])
def test_check_method_names_the_rule_a_method_breaks(cls, rule, detail):
    with pytest.raises(CheckFailure) as failure:
        check_method(cls)
    assert failure.value.rule == rule
    assert failure.value.method == cls.__qualname__
    message = str(failure.value)
    assert f"method {cls.__qualname__!r}" in message and f"rule {rule!r}" in message
    assert detail in message, message
    assert isinstance(failure.value, AssertionError)  # pytest shows it as a plain failed assert


def test_a_transductive_method_passes_once_it_declares_itself():
    outcome = check_method(DeclaredTransductive)
    assert outcome["inductive"] == "skipped: capabilities say transductive=True"
    assert {result for rule, result in outcome.items() if rule != "inductive"} == {"passed"}


def test_the_inductive_rule_compares_each_query_alone_too():
    class AloneDiffers(Prototype):  # the same scores shuffled, different ones when a query is alone
        def predict(self, batch):
            return super().predict(batch) + (batch.n_queries == 1)

    with pytest.raises(CheckFailure, match="differently alone"):
        check_method(AloneDiffers, rules=["inductive"])


def test_every_rule_has_a_method_that_breaks_it():
    assert {rule for _, rule, _ in BROKEN} == set(RULES)


# ------------------------------------------------------------------ how a method tunes the check

class SlowUnlessTold(Prototype):
    """Refuses big step budgets, as a trained method's default would be too slow to check."""

    capabilities = Capabilities(needs_training=True, deterministic=True)
    CHECK_PARAMS = {"steps": 3}

    def __init__(self, pool: int = 7, noise: float = 0.0, steps: int = 10_000):
        super().__init__(pool, noise)
        self.steps = steps

    def fit(self, background, context):
        if self.steps > 10:
            raise RuntimeError(f"{self.steps} steps: too slow for a test")
        return super().fit(background, context)


def test_check_params_give_small_hyperparameters_and_params_override_them():
    assert set(check_method(SlowUnlessTold).values()) == {"passed"}
    with pytest.raises(CheckFailure, match="fit raised RuntimeError: 50 steps"):
        check_method(SlowUnlessTold, {"steps": 50})
    with pytest.raises(CheckFailure, match=r"params \['stepz'\] are not constructor arguments"):
        check_method(SlowUnlessTold, {"stepz": 3})


class PositionalFavourite(PrefersTheLastPosition):
    CHECK_SKIP = {"relabel_equivariant": "the position bias is deliberate in this test"}


def test_rules_can_be_skipped_with_a_reason_on_the_class_or_by_the_caller():
    outcome = check_method(PositionalFavourite)
    assert outcome["relabel_equivariant"] == "skipped: the position bias is deliberate in this test"
    outcome = check_method(PrefersTheLastPosition, skip={"relabel_equivariant": "known"})
    assert outcome["relabel_equivariant"] == "skipped: known"
    with pytest.raises(ValueError, match="unknown contract rule"):
        check_method(Prototype, skip=["relabel"])


class NoisyByDesign(GlobalRandomness):
    capabilities = Capabilities(deterministic=False)


def test_determinism_is_only_required_of_methods_that_claim_it():
    assert check_method(NoisyByDesign)["deterministic"] == "skipped: capabilities say deterministic=False"


def test_rules_can_be_run_one_at_a_time_for_parametrized_tests():
    assert check_method(ConstantScores, rules=["relabel_equivariant"]) == {"relabel_equivariant": "passed"}
    with pytest.raises(CheckFailure, match="above_chance"):
        check_method(ConstantScores, rules=["above_chance"])


def test_each_rule_is_its_own_test_item_and_skips_carry_their_reason(pytester):
    pytester.makepyfile(test_contract="""
        import numpy as np
        from benchmark.api import Capabilities, Method
        from benchmark.checks import parametrize_with_checks

        class Chance(Method):
            capabilities = Capabilities()
            CHECK_SKIP = {"above_chance": "a chance baseline", "relabel_equivariant": "random",
                          "inductive": "random"}

            def __init__(self):
                pass

            def fit(self, background, context):
                self.rng_ = 0
                return self

            def predict(self, batch):
                self.check_is_fitted("rng_")
                return np.random.default_rng([self.rng_, batch.fingerprint()]).random(batch.score_shape)

        @parametrize_with_checks([Chance])
        def test_contract(method_class, check):
            check(method_class)
    """)
    result = pytester.runpytest("-v", "-rs", "-p", "no:cacheprovider")
    result.assert_outcomes(passed=len(RULES) - 3, skipped=3)
    result.stdout.fnmatch_lines(["*test_contract[[]Chance-method_class[]] PASSED*",
                                 "*test_contract[[]Chance-deterministic[]] PASSED*",
                                 "SKIPPED*a chance baseline*"])


def test_every_broken_rule_fails_its_own_item_only():
    outcome = {rule: "passed" for rule in RULES}
    for rule in RULES:
        try:
            check_method(PrefersTheLastPosition, rules=[rule])
        except CheckFailure as failure:
            outcome[rule] = failure.rule
    assert outcome == {**{rule: "passed" for rule in RULES}, "relabel_equivariant": "relabel_equivariant"}


def test_watching_the_constructor_leaves_no_hook_installed():
    before = (builtins.open, io.open, os.open, socket.socket.connect)
    with pytest.raises(CheckFailure, match="used the file"):
        check_method(OpensAFileInInit, rules=["init_stores_params"])
    assert (builtins.open, io.open, os.open, socket.socket.connect) == before


def test_the_check_leaves_torch_global_generator_alone():
    torch.manual_seed(123)
    expected = torch.rand(3)
    torch.manual_seed(123)
    check_method(Prototype, rules=["deterministic"])
    assert torch.equal(torch.rand(3), expected)


def test_synthetic_splits_are_trivially_separable_but_not_identical():
    background, evaluation = synthetic_splits()
    assert background.images.shape == evaluation.images.shape == (24, 20, 105, 105)
    assert len(background.alphabets()) == 6 and len(evaluation.alphabets()) == 3
    for split in (background, evaluation):
        ink = split.flat_images.reshape(split.n_characters * 20, -1).astype(np.float64)
        # Pixels that differ between two 0/1 images: |a| + |b| - 2 a.b, for every pair.
        differ = ink.sum(1)[:, None] + ink.sum(1)[None, :] - 2 * ink @ ink.T
        character = np.repeat(np.arange(split.n_characters), 20)
        same = character[:, None] == character[None, :]
        distinct = ~np.eye(len(ink), dtype=bool)
        assert differ[same & distinct].min() > 0
        assert differ[same & distinct].max() < differ[~same].min()


@pytest.mark.parametrize("cpus", [0, -1, 1.5, True])
def test_a_job_needs_a_whole_number_of_cpus(cpus):
    class Greedy(ConstantScores):
        capabilities = Capabilities(cpus=cpus)

    with pytest.raises(CheckFailure, match="capabilities.cpus must be a whole number"):
        check_method(Greedy, rules=["method_class"])

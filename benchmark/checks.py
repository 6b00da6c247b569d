"""The method contract as executable checks, in the spirit of scikit-learn's `check_estimator`
and `parametrize_with_checks`.

    from benchmark.checks import check_method, parametrize_with_checks

    @parametrize_with_checks([MyMethod])          # one pytest item per (method, rule)
    def test_my_method_meets_the_contract(method_class, check):
        check(method_class)

    def test_all_rules_at_once():
        check_method(MyMethod)                    # stops at the first broken rule

Each rule is a free function of `RULES`, run on its own fresh instance and its own tiny
synthetic Omniglot-like data (benchmark/synthetic.py: distinct blocky blobs, so every
sensible method separates them); a broken rule raises `CheckFailure` (an AssertionError)
naming the method and the rule. The rules:

- `method_class`: a concrete `benchmark.api.Method` subclass whose `capabilities` is a
  `Capabilities` (`cpus` a whole number of at least 1) and whose constructor takes named
  arguments only.
- `init_stores_params`: the constructor stores its arguments under their own names and does
  nothing else: no other public attribute, no fitted (`_`-suffixed) state, no file opened or
  network used; `cls(**m.get_params())` gives the same parameters back.
- `predict_before_fit_raises`: an unfitted method refuses to score.
- `fit_returns_self` and `fit_keeps_params`: `fit` returns the method itself and leaves its
  hyperparameters as they were (run.json records them after fitting).
- `scores_shape_and_finite`: scores of shape (episodes, queries, N), numeric and finite, for
  N in {2, 5, 20} and k in {1, 5} (`benchmark.api.checked_scores`, as the runner checks them).
- `inputs_not_mutated`: the training split and the batch arrays are unchanged after `fit`
  and `predict` (read-only flags do not stop in-place writes through torch).
- `deterministic` (when `capabilities.deterministic`): the same seed gives the same scores,
  whether `predict` is called twice or a second instance is fitted. Like the runner, the
  check seeds torch's global generator with the seed before each `fit`.
- `relabel_equivariant`: permuting the support classes of every episode permutes the score
  columns the same way (up to float rounding): a method may not prefer a position. For a
  method that is not deterministic, 90% of its predictions must follow the permutation.
- `inductive` (unless `capabilities.transductive`): each query scores the same (up to float
  rounding) alone in its episode, with the episode's other queries, and with them shuffled.
- `above_chance`: on trivially separable 5-way 1-shot episodes, at least `ABOVE_CHANCE`
  accuracy (chance is 0.2). Every method is presumed to claim better than chance, trained
  or not; only a chance baseline (like `random`) opts out, by skipping the rule.

Methods tune the check on the class, so every test that checks them agrees:
- `CHECK_PARAMS = {"steps": 5}`: small hyperparameters for the check (merged under the
  `params` argument), so a trained method fits in seconds. The check never uses a
  checkpoint cache: it trains for real.
- `CHECK_SKIP = {"relabel_equivariant": "why"}`: rules that do not apply, each with its reason.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Iterable, Mapping
from typing import Any

import numpy as np

from benchmark.api import Capabilities, EpisodeBatch, Method, hyperparameters
from benchmark.check_subject import CHECK_SEED, CheckFailure, Subject
from benchmark.io_watch import watched_io

__all__ = ["RULES", "CheckFailure", "check_method", "check_rule", "parametrize_with_checks", "skip_reason"]

SHAPES = [(n_way, k_shot) for n_way in (2, 5, 20) for k_shot in (1, 5)]
# Half right on 5-way episodes (300 queries): a guesser gets there with p ~ 5e-31, while sign
# flips and misaligned labels, the bugs this rule is for, land at or below chance (0.2).
ABOVE_CHANCE = 0.5
RELABEL_AGREEMENT = 0.9  # methods that are not deterministic: share of predictions that must follow


# ---- the rules ------------------------------------------------------------------------------

RULES: dict[str, Callable[[Subject], None]] = {}


def _rule(function: Callable[[Subject], None]) -> Callable[[Subject], None]:
    RULES[function.__name__] = function
    return function


@_rule
def method_class(subject: Subject) -> None:
    rule, cls = "method_class", subject.cls
    if not (isinstance(cls, type) and issubclass(cls, Method)):
        subject.fail(rule, "not a subclass of benchmark.api.Method")
    if inspect.isabstract(cls):
        subject.fail(rule, f"abstract methods not implemented: {', '.join(sorted(cls.__abstractmethods__))}")
    if not isinstance(cls.capabilities, Capabilities):
        subject.fail(rule, "`capabilities` must be a benchmark.api.Capabilities(...)")
    cpus = cls.capabilities.cpus
    if not isinstance(cpus, int) or isinstance(cpus, bool) or cpus < 1:
        subject.fail(rule, f"capabilities.cpus must be a whole number of at least 1, not {cpus!r}")
    own = inspect.signature(cls.__init__).parameters
    if any(p.kind is p.VAR_POSITIONAL for p in own.values()):
        subject.fail(rule, "the constructor takes *args: hyperparameters must be named")
    unknown = sorted(set(subject.params) - set(hyperparameters(cls)))
    if unknown:
        subject.fail(rule, f"the check's params {unknown} are not constructor arguments (check CHECK_PARAMS)")


@_rule
def init_stores_params(subject: Subject) -> None:
    rule = "init_stores_params"
    with watched_io() as io_events:
        method = subject.new(rule)
    if io_events:
        subject.fail(rule, f"the constructor used {io_events[0]}: load files and weights in fit, not __init__")
    named = hyperparameters(subject.cls)
    for name, parameter in named.items():
        if not hasattr(method, name):
            subject.fail(rule, f"constructor argument {name!r} is not stored as self.{name}")
        expected = subject.params[name] if name in subject.params else parameter.default
        if expected is not parameter.empty and not _equal(getattr(method, name), expected):
            subject.fail(rule, f"self.{name} is {getattr(method, name)!r} but the argument was {expected!r}: "
                               f"store arguments unchanged (validate them in fit)")
    extra = sorted(k for k in vars(method) if not k.startswith("_") and k not in named)
    if extra:
        subject.fail(rule, f"the constructor set {', '.join(extra)}, which are not its arguments: "
                           f"build models and state in fit, named with a trailing underscore")
    try:
        params = method.get_params()
        again = subject.cls(**params).get_params()
    except Exception as error:
        subject.fail(rule, f"get_params does not round-trip: {type(error).__name__}: {error}")
    if set(params) != set(again) or not all(_equal(params[k], again[k]) for k in params):
        subject.fail(rule, f"cls(**get_params()) gives {again}, not {params}")


@_rule
def predict_before_fit_raises(subject: Subject) -> None:
    method = subject.new("predict_before_fit_raises")
    batch, _ = subject.batch(5, 1)
    try:
        method.predict(batch)
    except Exception:
        return
    subject.fail("predict_before_fit_raises", "predict returned scores before fit: start predict with "
                                              "self.check_is_fitted(...) naming what fit sets")


@_rule
def fit_returns_self(subject: Subject) -> None:
    subject.fitted("fit_returns_self")


@_rule
def fit_keeps_params(subject: Subject) -> None:
    rule = "fit_keeps_params"
    before = subject.new(rule).get_params()
    after = subject.fitted(rule).get_params()
    changed = sorted(k for k in before if k not in after or not _equal(before[k], after[k]))
    if changed:
        subject.fail(rule, f"fit changed the hyperparameter(s) {', '.join(changed)}: keep what fit derives in "
                           f"attributes ending in _")


@_rule
def scores_shape_and_finite(subject: Subject) -> None:
    method = subject.fitted("scores_shape_and_finite")
    for n_way, k_shot in SHAPES:
        subject.predict(method, subject.batch(n_way, k_shot)[0], "scores_shape_and_finite")


@_rule
def inputs_not_mutated(subject: Subject) -> None:
    rule = "inputs_not_mutated"
    digests = subject.data_digests()
    method = subject.fitted(rule)
    batch, _ = subject.batch(5, 5)
    ids = (batch.support.copy(), batch.query.copy())
    subject.predict(method, batch, rule)
    changed = [name for name, digest in subject.data_digests().items() if digest != digests[name]]
    if changed:
        subject.fail(rule, f"the {changed[0]} changed during fit or predict: never write into the inputs")
    if not (np.array_equal(ids[0], batch.support) and np.array_equal(ids[1], batch.query)):
        subject.fail(rule, "predict changed the support or query ids of its batch")


@_rule
def deterministic(subject: Subject) -> None:
    rule = "deterministic"
    batch, _ = subject.batch(5, 1)
    method = subject.fitted(rule)
    first = subject.predict(method, batch, rule)
    again = subject.predict(method, batch, rule)
    if not np.array_equal(first, again):
        subject.fail(rule, f"two predict calls on the same batch differ (max difference "
                           f"{np.abs(first - again).max():.3g}): seed per-batch randomness from the batch "
                           f"(EpisodeBatch.fingerprint), or declare Capabilities(deterministic=False)")
    other = subject.predict(subject.fitted(rule), batch, rule)
    if not np.array_equal(first, other):
        subject.fail(rule, f"two instances fitted with the same seed score differently (max difference "
                           f"{np.abs(first - other).max():.3g}): draw randomness from context.seed, not "
                           f"global state, or declare Capabilities(deterministic=False)")


@_rule
def relabel_equivariant(subject: Subject) -> None:
    rule = "relabel_equivariant"
    method = subject.fitted(rule)
    batch, _ = subject.batch(5, 1, episodes=4)
    order = np.array([3, 0, 4, 1, 2])  # support class j of the relabelled batch is class order[j]
    relabelled = EpisodeBatch(batch.images, batch.support[:, order].copy(), batch.query, batch.images_key)
    scores = subject.predict(method, batch, rule)
    permuted = subject.predict(method, relabelled, rule)
    if subject.cls.capabilities.deterministic:
        if not _close(permuted, scores[:, :, order]):
            subject.fail(rule, "reordering the support classes changed the scores beyond reordering their "
                               "columns: score each class from its own supports, not its position")
    else:  # two calls differ anyway: compare what they predict
        agree = float((order[permuted.argmax(-1)] == scores.argmax(-1)).mean())
        if agree < RELABEL_AGREEMENT:
            subject.fail(rule, f"after reordering the support classes only {agree:.0%} of the predictions "
                               f"follow them (at least {RELABEL_AGREEMENT:.0%} required)")


@_rule
def inductive(subject: Subject) -> None:
    rule = "inductive"
    method = subject.fitted(rule)
    batch, _ = subject.batch(5, 1, episodes=2, n_query=2)  # 10 queries an episode
    scores = subject.predict(method, batch, rule)
    order = np.random.default_rng(CHECK_SEED).permutation(batch.n_queries)
    shuffled = subject.predict(method, _with_queries(batch, batch.query[:, order]), rule)
    alone = np.concatenate([subject.predict(method, _with_queries(batch, batch.query[:, [j]]), rule)
                            for j in range(batch.n_queries)], axis=1)
    for others, how in ((shuffled, "with the other queries shuffled"), (alone[:, order], "alone")):
        if subject.cls.capabilities.deterministic:
            same = _close(others, scores[:, order])
        else:  # two calls differ anyway: compare what they predict
            same = float((others.argmax(-1) == scores[:, order].argmax(-1)).mean()) >= RELABEL_AGREEMENT
        if not same:
            subject.fail(rule, f"a query scores differently {how} than with its episode's other queries: "
                               f"score each query on its own, or declare Capabilities(transductive=True)")


def _close(scores: np.ndarray, expected: np.ndarray) -> bool:
    """Equal up to float rounding: 1e-4 relative, 1e-5 of the largest score absolute."""
    scale = max(1.0, float(np.abs(expected).max()))
    return np.allclose(scores, expected, rtol=1e-4, atol=1e-5 * scale)


def _with_queries(batch: EpisodeBatch, query: np.ndarray) -> EpisodeBatch:
    return EpisodeBatch(batch.images, batch.support, np.ascontiguousarray(query), batch.images_key)


@_rule
def above_chance(subject: Subject) -> None:
    rule = "above_chance"
    batch, tasks = subject.batch(5, 1, episodes=20, n_query=3)
    scores = subject.predict(subject.fitted(rule), batch, rule)
    accuracy = float((scores.argmax(-1) == tasks.query_label).mean())
    if accuracy < ABOVE_CHANCE:
        subject.fail(rule, f"accuracy {accuracy:.2f} on trivially separable 5-way 1-shot episodes (chance "
                           f"0.20, required {ABOVE_CHANCE}); a chance baseline should skip this rule with "
                           f"CHECK_SKIP, a trained one may need larger CHECK_PARAMS")


# ---- running them ---------------------------------------------------------------------------

def skip_reason(cls: type, rule: str, skip: Mapping[str, str] = {}) -> str | None:
    """Why `rule` does not apply to `cls` (its CHECK_SKIP, the caller's `skip`, its
    capabilities), or None when it does. `method_class` always applies."""
    if rule not in RULES:
        raise ValueError(f"unknown contract rule {rule!r}: the rules are {', '.join(RULES)}")
    if rule == "method_class":
        return None
    reason = {**dict(getattr(cls, "CHECK_SKIP", {}) or {}), **dict(skip)}.get(rule)
    capabilities = getattr(cls, "capabilities", None)
    if reason is None and rule == "deterministic" and not getattr(capabilities, "deterministic", True):
        reason = "capabilities say deterministic=False"
    if reason is None and rule == "inductive" and getattr(capabilities, "transductive", False):
        reason = "capabilities say transductive=True"
    return reason


def check_rule(cls: type, rule: str, params: Mapping[str, Any] | None = None, device: str = "cpu") -> None:
    """Run one rule on `cls` (whatever its skips say); raise CheckFailure if it is broken.

    `params` are merged over the class's CHECK_PARAMS. A class that is not a method fails
    every rule with what `method_class` says.
    """
    subject = Subject(cls, {**dict(getattr(cls, "CHECK_PARAMS", {}) or {}), **dict(params or {})}, device)
    method_class(subject)  # the other rules cannot run on something that is not a method
    RULES[rule](subject)


def check_method(cls: type, params: Mapping[str, Any] | None = None, *, rules: Iterable[str] | None = None,
                 skip: Mapping[str, str] | Iterable[str] | None = None, device: str = "cpu") -> dict[str, str]:
    """Run the rules (all of `RULES` by default) on `cls`, stopping at the first broken one.

    params: hyperparameters for the check, merged over the class's `CHECK_PARAMS`.
    skip: rules not to run, as {rule: reason} or names, added to the class's `CHECK_SKIP`.
    Returns {rule: "passed" or "skipped: reason"} for every rule asked for.
    """
    skip = _as_reasons(skip)
    wanted = list(RULES if rules is None else rules)
    for rule in [*wanted, *skip]:
        skip_reason(cls, rule)  # unknown rule names are errors, whatever else happens
    outcome = {}
    for rule in wanted:
        reason = skip_reason(cls, rule, skip)
        if reason:
            outcome[rule] = f"skipped: {reason}"
        else:
            check_rule(cls, rule, params, device)
            outcome[rule] = "passed"
    return outcome


def parametrize_with_checks(classes: Iterable[type], params: Mapping[str, Any] | None = None):
    """A pytest decorator: one test item per (method class, rule), named `Class-rule`.

    The test receives `method_class` and `check`; `check(method_class)` runs the rule, or skips
    the item with the rule's skip reason.
    """
    import pytest  # a test dependency, only needed by the projects' tests

    cases = []
    for cls in classes:
        label = getattr(cls, "name", "") or getattr(cls, "__name__", repr(cls))
        for rule in RULES:
            cases.append(pytest.param(cls, _rule_runner(rule, params, pytest), id=f"{label}-{rule}"))
    return pytest.mark.parametrize(("method_class", "check"), cases)


def _rule_runner(rule: str, params, pytest):
    def check(cls: type) -> None:
        reason = skip_reason(cls, rule)
        if reason:
            pytest.skip(reason)
        check_rule(cls, rule, params)

    check.__name__ = f"check_{rule}"
    return check


def _as_reasons(skip) -> dict[str, str]:
    """`check_method`'s skip as {rule: reason}: a mapping as it is, a name or names with a stock reason."""
    if isinstance(skip, Mapping):
        return dict(skip)
    return {rule: "skipped by the caller" for rule in ([skip] if isinstance(skip, str) else skip or ())}


def _equal(a, b) -> bool:
    if a is b:
        return True
    try:
        return bool(a == b)
    except Exception:  # arrays and tensors compare elementwise
        try:
            return type(a) is type(b) and np.array_equal(np.asarray(a), np.asarray(b))
        except Exception:
            return False

"""The method contract as executable checks, in the spirit of scikit-learn's `check_estimator`.

    from benchmark.checks import check_method

    def test_my_method_meets_the_contract():
        check_method(MyMethod)                   # or check_method(MyMethod, {"steps": 5})

`check_method` fits and predicts on tiny synthetic Omniglot-like data (benchmark/check_data.py:
characters are distinct blocky blobs, so every sensible method separates them), and raises
`CheckFailure` (an AssertionError) naming the method and the first rule it breaks. The rules,
in the order they run (`RULES`):

- `method_class`: a concrete `benchmark.api.Method` subclass whose `capabilities` is a
  `Capabilities` and whose constructor takes named arguments only.
- `init_stores_params`: the constructor stores its arguments under their own names and does
  nothing else: no other public attribute, no fitted (`_`-suffixed) state, no file opened or
  network used; `cls(**m.get_params())` gives the same parameters back.
- `predict_before_fit_raises`: an unfitted method refuses to score.
- `fit_returns_self` and `fit_keeps_params`: `fit` returns the method itself and leaves its
  hyperparameters as they were (run.json records them after fitting).
- `scores_shape_and_finite`: scores of shape (episodes, queries, N), numeric and finite, for
  N in {2, 5, 20} and k in {1, 5}.
- `inputs_not_mutated`: the background split and the batch arrays are unchanged after
  `fit` and `predict` (read-only flags do not stop in-place writes through torch).
- `deterministic` (when `capabilities.deterministic`): the same seed gives the same scores,
  whether `predict` is called twice or a second instance is fitted. Like the runner, the
  check seeds torch's global generator with the seed before each `fit`.
- `relabel_equivariant`: permuting the support classes of every episode permutes the score
  columns the same way (up to float rounding): a method may not prefer a position. For a
  method that is not deterministic, 90% of its predictions must follow the permutation.
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

import hashlib
import inspect
import os
import sys
import threading
from collections.abc import Iterable, Mapping
from typing import Any

import numpy as np
import torch

from benchmark.api import Capabilities, EpisodeBatch, FitContext, Method
from benchmark.synthetic import synthetic_splits  # also imported from here by tests and examples
from tasks.episodes import generate

RULES = ("method_class", "init_stores_params", "predict_before_fit_raises", "fit_returns_self",
         "fit_keeps_params", "scores_shape_and_finite", "inputs_not_mutated", "deterministic",
         "relabel_equivariant", "above_chance")
SHAPES = [(n_way, k_shot) for n_way in (2, 5, 20) for k_shot in (1, 5)]
# Half right on 5-way episodes (300 queries): a guesser gets there with p ~ 5e-31, while sign
# flips and misaligned labels, the bugs this rule is for, land at or below chance (0.2).
ABOVE_CHANCE = 0.5
RELABEL_AGREEMENT = 0.9  # methods that are not deterministic: share of predictions that must follow
CHECK_SEED = 0


class CheckFailure(AssertionError):
    """A method broke a rule of the contract; `rule` and `method` say which and who."""

    def __init__(self, method: str, rule: str, detail: str):
        super().__init__(f"method {method!r} breaks the contract rule {rule!r}: {detail}")
        self.method = method
        self.rule = rule


def check_method(cls: type, params: Mapping[str, Any] | None = None, *,
                 rules: Iterable[str] | None = None, skip: Mapping[str, str] | Iterable[str] | None = None,
                 device: str = "cpu") -> dict[str, str]:
    """Run the contract on a method class; raise CheckFailure at the first broken rule.

    params: hyperparameters for the check, merged over the class's `CHECK_PARAMS`.
    rules: run only these rules (default: all of `RULES`).
    skip: rules not to run, as {rule: reason} or names, added to the class's `CHECK_SKIP`.
    Returns {rule: "passed" or "skipped: reason"} for every rule asked for.
    """
    skipped = {**dict(getattr(cls, "CHECK_SKIP", {}) or {}), **_as_reasons(skip)}
    wanted = list(RULES if rules is None else rules)
    unknown = sorted((set(wanted) | set(skipped)) - set(RULES))
    if unknown:
        raise ValueError(f"unknown contract rule(s) {', '.join(unknown)}: the rules are {', '.join(RULES)}")
    checker = _Checker(cls, {**dict(getattr(cls, "CHECK_PARAMS", {}) or {}), **dict(params or {})}, device)
    outcome = {}
    checker.method_class()  # the other rules cannot run on something that is not a method
    for rule in RULES:
        if rule not in wanted:
            continue
        if rule == "method_class":  # ran above, whatever the skips say
            outcome[rule] = "passed"
            continue
        reason = skipped.get(rule) or checker.not_applicable(rule)
        if reason:
            outcome[rule] = f"skipped: {reason}"
            continue
        getattr(checker, rule)()
        outcome[rule] = "passed"
    return outcome


def _as_reasons(skip) -> dict[str, str]:
    if skip is None:
        return {}
    if isinstance(skip, Mapping):
        return dict(skip)
    if isinstance(skip, str):
        skip = [skip]
    return {rule: "skipped by the caller" for rule in skip}


class _Checker:
    def __init__(self, cls: type, params: dict, device: str):
        self.cls = cls
        self.params = params
        self.label = getattr(cls, "name", "") or getattr(cls, "__qualname__", repr(cls))
        self.context = FitContext(device=device, seed=CHECK_SEED, progress=False, checkpoints=None,
                                  retrain=True, log=lambda message: None)
        self.background, self.evaluation = synthetic_splits()
        self.digests = self._data_digests()
        self.mutations: list[str] = []
        self._fitted = None

    def fail(self, rule: str, detail: str):
        raise CheckFailure(self.label, rule, detail)

    def not_applicable(self, rule: str) -> str | None:
        if rule == "deterministic" and not self.cls.capabilities.deterministic:
            return "capabilities say deterministic=False"
        return None

    # ------------------------------------------------------------------ helpers
    def new(self, rule: str):
        try:
            return self.cls(**self.params)
        except Exception as error:
            self.fail(rule, f"the constructor raised {type(error).__name__}: {error}")

    def fit(self, method, rule: str):
        # Like the runner: torch's global generator seeded before fit (plugins often use it
        # for layer initialisation); fork_rng leaves the caller's generator as it was.
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(self.context.seed)
            try:
                return method.fit(self.background, self.context)
            except Exception as error:
                self.fail(rule, f"fit raised {type(error).__name__}: {error}")

    def fitted(self):
        """One fitted instance shared by the rules that only need predictions."""
        if self._fitted is None:
            method = self.new("fit_returns_self")
            if self.fit(method, "fit_returns_self") is not method:
                self.fail("fit_returns_self", "fit must end with `return self`")
            self._fitted = method
        return self._fitted

    def batch(self, n_way: int, k_shot: int, episodes: int = 2, n_query: int = 2):
        split = self.evaluation
        tasks = generate(split.alphabet, split.sha256, "cross", n_way, k_shot, n_query, episodes,
                         seed=1000 * n_way + k_shot)
        return EpisodeBatch(split.flat_images, tasks.support.copy(), tasks.query.copy(), split.sha256), tasks

    def predict(self, method, batch: EpisodeBatch, rule: str) -> np.ndarray:
        before = (batch.support.copy(), batch.query.copy())
        where = f"{batch.n_way}-way {batch.k_shot}-shot"
        try:
            scores = method.predict(batch)
        except Exception as error:
            self.fail(rule, f"predict raised {type(error).__name__} on {where} episodes: {error}")
        if not (np.array_equal(before[0], batch.support) and np.array_equal(before[1], batch.query)):
            self.mutations.append(f"predict changed the support or query ids of a {where} batch")
        if isinstance(scores, torch.Tensor):
            scores = scores.detach().cpu().numpy()
        scores = np.asarray(scores)
        if scores.shape != batch.score_shape:
            self.fail(rule, f"predict returned shape {scores.shape} on {where} episodes, expected "
                            f"{batch.score_shape} (episodes, queries, N)")
        if not np.issubdtype(scores.dtype, np.number) or not np.isfinite(scores).all():
            self.fail(rule, f"predict returned NaN, infinite or non-numeric scores on {where} episodes")
        return scores

    def _data_digests(self) -> dict[str, str]:
        arrays = {"background images": self.background.images, "background alphabets": self.background.alphabet,
                  "background characters": self.background.character, "evaluation images": self.evaluation.images}
        return {name: hashlib.sha256(np.ascontiguousarray(a).tobytes()).hexdigest() for name, a in arrays.items()}

    # ------------------------------------------------------------------ the rules
    def method_class(self):
        rule = "method_class"
        if not (isinstance(self.cls, type) and issubclass(self.cls, Method)):
            self.fail(rule, "not a subclass of benchmark.api.Method")
        if inspect.isabstract(self.cls):
            missing = ", ".join(sorted(self.cls.__abstractmethods__))
            self.fail(rule, f"abstract methods not implemented: {missing}")
        if not isinstance(self.cls.capabilities, Capabilities):
            self.fail(rule, "`capabilities` must be a benchmark.api.Capabilities(...)")
        parameters = _init_parameters(self.cls)
        if any(p.kind is p.VAR_POSITIONAL for p in parameters.values()):
            self.fail(rule, "the constructor takes *args: hyperparameters must be named")
        takes_any = any(p.kind is p.VAR_KEYWORD for p in parameters.values())
        unknown = sorted(set(self.params) - set(parameters))
        if unknown and not takes_any:
            self.fail(rule, f"the check's params {unknown} are not constructor arguments "
                            f"(check CHECK_PARAMS)")

    def init_stores_params(self):
        rule = "init_stores_params"
        with _watch_io() as io_events:
            method = self.new(rule)
        if io_events:
            self.fail(rule, f"the constructor used {io_events[0]}: load files and weights in fit, not __init__")
        named = {n: p for n, p in _init_parameters(self.cls).items()
                 if p.kind not in (p.VAR_POSITIONAL, p.VAR_KEYWORD)}
        for name, parameter in named.items():
            if not hasattr(method, name):
                self.fail(rule, f"constructor argument {name!r} is not stored as self.{name}")
            expected = self.params[name] if name in self.params else parameter.default
            if expected is not parameter.empty and not _equal(getattr(method, name), expected):
                self.fail(rule, f"self.{name} is {getattr(method, name)!r} but the argument was "
                                f"{expected!r}: store arguments unchanged (validate them in fit)")
        extra = sorted(k for k in vars(method) if not k.startswith("_") and k not in named)
        if extra:
            self.fail(rule, f"the constructor set {', '.join(extra)}, which are not its arguments: "
                            f"build models and state in fit, named with a trailing underscore")
        try:
            params = method.get_params()
            again = self.cls(**params).get_params()
        except Exception as error:
            self.fail(rule, f"get_params does not round-trip: {type(error).__name__}: {error}")
        if set(params) != set(again) or not all(_equal(params[k], again[k]) for k in params):
            self.fail(rule, f"cls(**get_params()) gives {again}, not {params}")

    def predict_before_fit_raises(self):
        rule = "predict_before_fit_raises"
        method = self.new(rule)
        batch, _ = self.batch(5, 1)
        try:
            method.predict(batch)
        except Exception:
            return
        self.fail(rule, "predict returned scores before fit: call self.check_is_fitted() first")

    def fit_returns_self(self):
        self.fitted()

    def fit_keeps_params(self):
        rule = "fit_keeps_params"
        before = self.new(rule).get_params()
        after = self.fitted().get_params()
        changed = sorted(k for k in before if k not in after or not _equal(before[k], after[k]))
        if changed:
            self.fail(rule, f"fit changed the hyperparameter(s) {', '.join(changed)}: keep what fit "
                            f"derives in attributes ending in _")

    def scores_shape_and_finite(self):
        for n_way, k_shot in SHAPES:
            batch, _ = self.batch(n_way, k_shot)
            self.predict(self.fitted(), batch, "scores_shape_and_finite")

    def inputs_not_mutated(self):
        rule = "inputs_not_mutated"
        batch, _ = self.batch(5, 5)
        self.predict(self.fitted(), batch, rule)
        changed = [name for name, digest in self._data_digests().items() if digest != self.digests[name]]
        if changed:
            self.fail(rule, f"the {changed[0]} changed during fit or predict: never write into the inputs")
        if self.mutations:
            self.fail(rule, self.mutations[0])

    def deterministic(self):
        rule = "deterministic"
        batch, _ = self.batch(5, 1)
        first = self.predict(self.fitted(), batch, rule)
        again = self.predict(self.fitted(), batch, rule)
        if not np.array_equal(first, again):
            self.fail(rule, f"two predict calls on the same batch differ (max difference "
                            f"{np.abs(first - again).max():.3g}): seed per-batch randomness from the "
                            f"batch (EpisodeBatch.fingerprint), or declare Capabilities(deterministic=False)")
        second = self.new(rule)
        self.fit(second, rule)
        other = self.predict(second, batch, rule)
        if not np.array_equal(first, other):
            self.fail(rule, f"two instances fitted with the same seed score differently (max difference "
                            f"{np.abs(first - other).max():.3g}): draw randomness from context.seed, not "
                            f"global state, or declare Capabilities(deterministic=False)")

    def relabel_equivariant(self):
        rule = "relabel_equivariant"
        batch, _ = self.batch(5, 1, episodes=4)
        order = np.array([3, 0, 4, 1, 2])  # support class j of the relabelled batch is class order[j]
        relabelled = EpisodeBatch(batch.images, batch.support[:, order].copy(), batch.query, batch.images_key)
        scores = self.predict(self.fitted(), batch, rule)
        permuted = self.predict(self.fitted(), relabelled, rule)
        if self.cls.capabilities.deterministic:
            scale = max(1.0, float(np.abs(scores).max()))
            if not np.allclose(permuted, scores[:, :, order], rtol=1e-4, atol=1e-5 * scale):
                self.fail(rule, "reordering the support classes changed the scores beyond reordering "
                                "their columns: score each class from its own supports, not its position")
        else:  # two calls differ anyway: compare what they predict
            agree = float((order[permuted.argmax(-1)] == scores.argmax(-1)).mean())
            if agree < RELABEL_AGREEMENT:
                self.fail(rule, f"after reordering the support classes only {agree:.0%} of the "
                                f"predictions follow them (at least {RELABEL_AGREEMENT:.0%} required)")

    def above_chance(self):
        rule = "above_chance"
        batch, tasks = self.batch(5, 1, episodes=20, n_query=3)
        scores = self.predict(self.fitted(), batch, rule)
        accuracy = float((scores.argmax(-1) == tasks.query_label).mean())
        if accuracy < ABOVE_CHANCE:
            self.fail(rule, f"accuracy {accuracy:.2f} on trivially separable 5-way 1-shot episodes "
                            f"(chance 0.20, required {ABOVE_CHANCE}); a chance baseline should skip "
                            f"this rule with CHECK_SKIP, a trained one may need larger CHECK_PARAMS")


def _init_parameters(cls) -> dict[str, inspect.Parameter]:
    parameters = inspect.signature(cls.__init__).parameters
    return {name: p for name, p in parameters.items() if name != "self"}


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


# ---------------------------------------------------------------- catching I/O in __init__

_watch = {"thread": None, "events": None}
_hook_installed = False
_MODULE_SUFFIXES = (".py", ".pyc", ".so", ".pyd", ".pth")


def _audit(event: str, args) -> None:
    # Called for every audited event of the process once installed: keep it trivially cheap.
    if _watch["events"] is None or threading.get_ident() != _watch["thread"]:
        return
    try:
        if event == "open":
            path = os.fsdecode(args[0]) if isinstance(args[0], (str, bytes, os.PathLike)) else None
            # Imports done lazily inside __init__ are fine; reading data or weights is not.
            if path and not path.endswith(_MODULE_SUFFIXES) and "__pycache__" not in path \
                    and not path.startswith(("/proc/", "/sys/", "/dev/")):
                _watch["events"].append(f"the file {path}")
        elif event == "socket.connect":
            _watch["events"].append(f"the network ({args[1]})")
    except Exception:
        pass


class _watch_io:
    """Collect files opened and connections made by this thread inside the block."""

    def __enter__(self) -> list[str]:
        global _hook_installed
        if not _hook_installed:  # audit hooks cannot be removed: one, installed on first use
            sys.addaudithook(_audit)
            _hook_installed = True
        events: list[str] = []
        _watch.update(thread=threading.get_ident(), events=events)
        return events

    def __exit__(self, *exc_info) -> None:
        _watch.update(thread=None, events=None)

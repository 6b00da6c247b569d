"""The registry: built-ins, lookup with suggestions, duplicate names."""

import pytest

from benchmark import registry
from benchmark.api import Method
from benchmark.errors import ConfigError


def test_builtins_are_registered_with_a_summary():
    rows = dict(registry.describe_methods())
    assert {"random", "nearest_neighbor"} <= set(rows)
    assert all(rows[name] for name in ("random", "nearest_neighbor"))
    assert registry.source_of("random") == "built-in"


def test_unknown_name_suggests_the_closest():
    with pytest.raises(ConfigError, match="did you mean 'nearest_neighbor'"):
        registry.get_method("nearest_neighbour")


def test_duplicate_name_is_refused():
    with pytest.raises(ValueError, match="already registered"):
        @registry.register_method("random")
        class Other(Method):
            def fit(self, background, context):
                return self

            def predict(self, batch):
                return None


def test_only_method_subclasses_register():
    with pytest.raises(TypeError, match="subclass of benchmark.api.Method"):
        registry.register_method("not_a_method")(object)
    with pytest.raises(ValueError, match="identifier"):
        registry.register_method("has space")

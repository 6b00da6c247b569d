"""The registry: built-ins, lookup with suggestions, duplicate names."""

import pytest

from benchmark import registry
from benchmark.api import Method
from benchmark.errors import ConfigError


def test_builtins_are_registered_with_where_they_come_from_and_a_summary():
    rows = {name: (source, summary) for name, source, summary in registry.describe_methods()}
    assert {"random", "nearest_neighbor"} <= set(rows)
    assert all(rows[name][0] == "built-in" and rows[name][1] for name in ("random", "nearest_neighbor"))
    assert registry.source_of("random") == "built-in"


def test_an_example_plugin_asked_for_by_name_says_how_to_load_it():
    with pytest.raises(ConfigError, match="it is an example plugin, load it with --plugin examples/cosine_pixels.py"):
        registry.get_method("cosine_pixels")
    registry.load_plugin(str(registry.EXAMPLES_DIR / "cosine_pixels.py"))
    assert registry.get_method("cosine_pixels").name == "cosine_pixels"
    assert registry.source_of("cosine_pixels").startswith("file ")


def test_registrations_inside_isolated_are_undone(isolated_registry):
    with registry.METHODS.isolated():
        registry.register_method("made_up_for_a_test")(type("MadeUp", (registry.Method,), {}))
        assert "made_up_for_a_test" in registry.available_names()
    assert "made_up_for_a_test" not in registry.available_names()


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

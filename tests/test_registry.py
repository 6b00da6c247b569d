"""The registry: built-ins, lookup with suggestions, duplicate names."""

import pytest

from benchmark import registry
from benchmark.api import Method, hyperparameters
from benchmark.errors import ConfigError
from benchmark.registry import check_hyperparameters


def test_builtins_are_registered_with_where_they_come_from_and_a_summary():
    rows = {name: (source, summary) for name, source, summary in registry.describe_methods()}
    assert {"random", "nearest_neighbor"} <= set(rows)
    assert all(rows[name][0] == "built-in" and rows[name][1] for name in ("random", "nearest_neighbor"))
    assert registry.source_of("random") == "built-in"


def test_an_example_plugin_asked_for_by_name_says_how_to_load_it():
    fresh = registry.Registry()  # the examples' own tests may have registered it in this process
    with pytest.raises(ConfigError, match="it is an example plugin, load it with --plugin examples/cosine_pixels.py"):
        fresh.get("cosine_pixels")
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


class Example:
    def __init__(self, steps: int = 10, lr: float = 0.1, name="x", flag: bool = False):
        pass


def test_hyperparameters_are_checked_against_the_constructor():
    assert check_hyperparameters("example", Example, {"steps": 3, "lr": 1, "name": "y"}) == \
        {"steps": 3, "lr": 1.0, "name": "y"}
    with pytest.raises(ConfigError, match="did you mean 'steps'"):
        check_hyperparameters("example", Example, {"step": 3})
    with pytest.raises(ConfigError, match="methods.example.steps must be an integer"):
        check_hyperparameters("example", Example, {"steps": "many"})
    with pytest.raises(ConfigError, match="methods.example.flag must be true or false"):
        check_hyperparameters("example", Example, {"flag": 1})


class Base(Method):
    def __init__(self, size: int = 21, scale: float = 1.0):
        self.size = size
        self.scale = scale


class Child(Base):
    """Adds one hyperparameter and inherits the others through **kwargs."""

    def __init__(self, temperature: float = 0.5, size: int = 7, **kwargs):
        super().__init__(size=size, **kwargs)
        self.temperature = temperature

    def fit(self, training_split, context):
        return self

    def predict(self, batch):
        return None


class Closed(Child):
    """Names its arguments without **kwargs: its parents' are not its hyperparameters."""

    def __init__(self, temperature: float = 0.5):
        super().__init__(temperature=temperature)


def test_hyperparameters_are_inherited_through_kwargs():
    assert list(hyperparameters(Child)) == ["temperature", "size", "scale"]
    assert hyperparameters(Child)["size"].default == 7  # the nearest class's declaration wins
    child = Child(scale=2, temperature=0.1)
    assert child.get_params() == {"temperature": 0.1, "size": 7, "scale": 2}
    assert check_hyperparameters("child", Child, {"scale": 3, "size": 5}) == {"scale": 3.0, "size": 5}
    with pytest.raises(ConfigError, match="methods.child.scale must be a number"):
        check_hyperparameters("child", Child, {"scale": "big"})
    assert list(hyperparameters(Closed)) == ["temperature"]
    with pytest.raises(ConfigError, match="has no hyperparameter 'scale'"):
        check_hyperparameters("closed", Closed, {"scale": 3})

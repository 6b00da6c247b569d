"""The method registry: built-in methods, `--plugin` files or modules, and entry points.

One decorator registers a class under a name. Built-ins live one a file in `methods/`.
Third-party packages declare the entry-point group `oneshot_benchmark.methods`
(`name = "package.module:Class"`); they are imported only when their name is asked for, so
a broken plugin cannot break a run that does not use it.
"""

from __future__ import annotations

import importlib
import importlib.metadata
import importlib.util
import pkgutil
import sys
from pathlib import Path

from benchmark.api import Method
from benchmark.config import did_you_mean
from benchmark.errors import ConfigError

ENTRY_POINT_GROUP = "oneshot_benchmark.methods"

_methods: dict[str, type[Method]] = {}
_sources: dict[str, str] = {}
_loading_source = "built-in"
_builtins_loaded = False


def register_method(name: str):
    """Class decorator: `@register_method("my_method")` makes the class runnable by that name."""
    if not isinstance(name, str) or not name.isidentifier():
        raise ValueError(f"method name {name!r} must be a Python identifier")

    def decorate(cls):
        if not (isinstance(cls, type) and issubclass(cls, Method)):
            raise TypeError(f"@register_method({name!r}) must decorate a subclass of benchmark.api.Method")
        existing = _methods.get(name)
        if existing is not None and existing.__qualname__ != cls.__qualname__:
            raise ValueError(f"method name {name!r} is already registered by "
                             f"{existing.__module__}.{existing.__qualname__}")
        cls.name = name
        _methods[name] = cls
        _sources.setdefault(name, _loading_source)
        return cls

    return decorate


def load_builtin_methods() -> None:
    """Import every module of the `methods` package once (each registers itself)."""
    global _builtins_loaded
    if _builtins_loaded:
        return
    import methods

    for module in pkgutil.iter_modules(methods.__path__):
        if not module.name.startswith("_"):
            importlib.import_module(f"methods.{module.name}")
    _builtins_loaded = True


def load_plugin(spec: str) -> list[str]:
    """Load a plugin from a `.py` file or an importable module; return the names it registered."""
    global _loading_source
    before = set(_methods)
    path = Path(spec)
    previous, _loading_source = _loading_source, f"file {spec}" if spec.endswith(".py") else f"module {spec}"
    try:
        if spec.endswith(".py"):
            if not path.is_file():
                raise ConfigError(f"plugin file {spec} not found: check the path given to --plugin")
            module_name = f"oneshot_plugin_{path.stem}"
            loader_spec = importlib.util.spec_from_file_location(module_name, path)
            module = importlib.util.module_from_spec(loader_spec)
            sys.modules[module_name] = module
            loader_spec.loader.exec_module(module)
        else:
            importlib.import_module(spec)
    except ConfigError:
        raise
    except ModuleNotFoundError as error:
        raise ConfigError(f"plugin {spec!r} cannot be imported ({error}): give a .py file or an "
                          f"importable module to --plugin") from None
    except Exception as error:
        raise ConfigError(f"plugin {spec!r} failed while loading: {type(error).__name__}: {error}") from None
    finally:
        _loading_source = previous
    added = sorted(set(_methods) - before)
    if not added:
        raise ConfigError(f"plugin {spec!r} registered no method: decorate a Method subclass "
                          f"with @register_method(\"name\")")
    return added


def _entry_points() -> dict:
    return {ep.name: ep for ep in importlib.metadata.entry_points(group=ENTRY_POINT_GROUP)}


def get_method(name: str) -> type[Method]:
    """The class registered under `name`, loading its entry point if it comes from a package."""
    load_builtin_methods()
    if name in _methods:
        return _methods[name]
    entry_point = _entry_points().get(name)
    if entry_point is not None:
        return _load_entry_point(name, entry_point)
    raise ConfigError(f"unknown method {name!r}{did_you_mean(name, available_names())}"
                      f" (see --list-methods)")


def _load_entry_point(name: str, entry_point) -> type[Method]:
    global _loading_source
    package = entry_point.dist.name if entry_point.dist else entry_point.value
    version = entry_point.dist.version if entry_point.dist else "unknown"
    previous, _loading_source = _loading_source, f"package {package} {version}"
    try:
        cls = entry_point.load()
    except Exception as error:
        raise ConfigError(f"method {name!r} from package {package} failed to load: "
                          f"{type(error).__name__}: {error}") from None
    finally:
        _loading_source = previous
    if not (isinstance(cls, type) and issubclass(cls, Method)):
        raise ConfigError(f"entry point {name!r} of package {package} is not a Method subclass")
    if name not in _methods:  # a class that did not use the decorator
        cls.name = name
        _methods[name] = cls
    _sources[name] = f"package {package} {version}"
    return _methods[name]


def available_names() -> list[str]:
    """Registered names plus entry-point names (the latter without importing them)."""
    load_builtin_methods()
    return sorted(set(_methods) | set(_entry_points()))


def source_of(name: str) -> str:
    """Where a method came from: built-in, a plugin file or module, or a package and version."""
    return _sources.get(name, "unknown")


def describe_methods() -> list[tuple[str, str]]:
    """(name, one-line summary) for every method; entry points are described without loading."""
    rows = []
    entry_points = _entry_points()
    for name in available_names():
        if name in _methods:
            rows.append((name, _methods[name].summary()))
        else:
            rows.append((name, f"(from package {entry_points[name].value}, loaded when used)"))
    return rows

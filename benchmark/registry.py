"""The method registry: built-in methods, `--plugin` files or modules, and entry points.

One decorator registers a class under a name. Built-ins live one a file in `methods/`.
Third-party packages declare the entry-point group `oneshot_benchmark.methods`
(`name = "package.module:Class"`); they are imported only when their name is asked for, so
a broken plugin cannot break a run that does not use it.

Every name remembers where it came from (`source_of`), and the runner writes that into
run.json: "built-in", "file PATH sha256:DIGEST", "module NAME" (with the package and version
when the module belongs to an installed distribution), or "package NAME VERSION".
"""

from __future__ import annotations

import hashlib
import importlib
import importlib.metadata
import importlib.util
import inspect
import pkgutil
import sys
from pathlib import Path

from benchmark.api import Method
from benchmark.config import did_you_mean
from benchmark.errors import ConfigError

ENTRY_POINT_GROUP = "oneshot_benchmark.methods"

_methods: dict[str, type[Method]] = {}
_sources: dict[str, str] = {}
# While a plugin or entry point is being imported: its source, and the names it registers.
_loading_source: str | None = None
_loading_names: list[str] | None = None
_builtins_loaded = False


def register_method(name: str):
    """Class decorator: `@register_method("my_method")` makes the class runnable by that name."""
    if not isinstance(name, str) or not name.isidentifier():
        raise ValueError(f"method name {name!r} must be a Python identifier")

    def decorate(cls):
        if not (isinstance(cls, type) and issubclass(cls, Method)):
            raise TypeError(f"@register_method({name!r}) must decorate a subclass of benchmark.api.Method")
        existing = _methods.get(name)
        # The same class from the same file may register again (a file imported by a test and
        # loaded by --plugin gets two module names); anything else would silently replace it.
        if existing is not None and _identity(existing) != _identity(cls):
            raise ValueError(f"method name {name!r} is already registered by "
                             f"{existing.__module__}.{existing.__qualname__} ({_identity(existing)[0]})")
        cls.name = name
        _methods[name] = cls
        _sources[name] = _loading_source or (
            "built-in" if cls.__module__.startswith("methods.") else f"module {cls.__module__}")
        if _loading_names is not None:
            _loading_names.append(name)
        return cls

    return decorate


def _identity(cls) -> tuple[str, str]:
    try:
        where = str(Path(inspect.getfile(cls)).resolve())
    except (TypeError, OSError):  # classes made at run time, e.g. by type()
        where = cls.__module__
    return where, cls.__qualname__


def _source_of_module(module: str) -> str:
    """'module NAME', with the installed package and version it belongs to, if any."""
    top = module.split(".")[0]
    try:
        distributions = importlib.metadata.packages_distributions().get(top, [])
    except Exception:  # unreadable metadata of some other package must not matter here
        distributions = []
    if distributions:
        name = distributions[0]
        try:
            return f"module {module} (package {name} {importlib.metadata.version(name)})"
        except importlib.metadata.PackageNotFoundError:
            pass
    return f"module {module}"


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


def builtin_names() -> list[str]:
    """The names of the methods that ship in `methods/`."""
    load_builtin_methods()
    return sorted(name for name, source in _sources.items() if source == "built-in")


def load_plugin(spec: str) -> list[str]:
    """Load a plugin from a `.py` file or an importable module; return the names it registered."""
    global _loading_source, _loading_names
    # Built-ins first, so that a plugin reusing a built-in's name gets a clear error.
    load_builtin_methods()
    is_file = spec.endswith(".py")
    path = Path(spec)
    if is_file and not path.is_file():
        raise ConfigError(f"plugin file {spec} not found: check the path given to --plugin")
    if is_file:
        digest = hashlib.sha256(path.read_bytes()).hexdigest()[:16]
        source = f"file {spec} sha256:{digest}"
    else:
        source = _source_of_module(spec)
    previous = _loading_source, _loading_names
    _loading_source, _loading_names = source, []
    try:
        if is_file:
            module_name = f"oneshot_plugin_{path.stem}"
            loader_spec = importlib.util.spec_from_file_location(module_name, path)
            module = importlib.util.module_from_spec(loader_spec)
            sys.modules[module_name] = module
            try:
                loader_spec.loader.exec_module(module)
            except BaseException:
                del sys.modules[module_name]
                raise
        else:
            importlib.import_module(spec)
        added = sorted(set(_loading_names))
    except ModuleNotFoundError as error:
        raise ConfigError(f"plugin {spec!r} cannot be imported ({error}): give a .py file or an "
                          f"importable module to --plugin") from None
    except Exception as error:
        raise ConfigError(f"plugin {spec!r} failed while loading: {type(error).__name__}: {error}") from None
    finally:
        _loading_source, _loading_names = previous
    if not added and not is_file:
        # A module imported earlier in this process registered its methods back then.
        added = sorted(name for name, cls in _methods.items() if cls.__module__ == spec)
        for name in added:
            _sources[name] = source
    if not added:
        raise ConfigError(f"plugin {spec!r} registered no method: decorate a Method subclass "
                          f"with @register_method(\"name\")")
    return added


def _entry_points() -> dict:
    """Entry points of the group by name, read without importing anything.

    On duplicate names the distribution first on sys.path wins, as it would for an import.
    """
    found = {}
    for distribution in importlib.metadata.distributions():
        for entry_point in distribution.entry_points.select(group=ENTRY_POINT_GROUP):
            found.setdefault(entry_point.name, entry_point)
    return found


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
    global _loading_source, _loading_names
    dist = getattr(entry_point, "dist", None)
    package = dist.name if dist else entry_point.value
    version = dist.version if dist else "unknown"
    source = f"package {package} {version}"
    previous = _loading_source, _loading_names
    _loading_source, _loading_names = source, []
    try:
        cls = entry_point.load()
    except Exception as error:
        raise ConfigError(f"method {name!r} from package {package} failed to load: "
                          f"{type(error).__name__}: {error}") from None
    finally:
        _loading_source, _loading_names = previous
    if not (isinstance(cls, type) and issubclass(cls, Method)):
        raise ConfigError(f"entry point {name!r} of package {package} ({entry_point.value}) "
                          f"is not a Method subclass")
    registered_as = next((n for n, c in _methods.items() if c is cls), None)
    if registered_as is not None and registered_as != name:
        raise ConfigError(f"entry point {name!r} of package {package} names a class registered as "
                          f"{registered_as!r}: the two names must match")
    if registered_as is None:  # a class that did not use the decorator
        cls.name = name
        _methods[name] = cls
    _sources[name] = source
    return cls


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
            dist = getattr(entry_points[name], "dist", None)
            package = f"{dist.name} {dist.version}" if dist else entry_points[name].value
            rows.append((name, f"(from package {package}, loaded when used)"))
    return rows

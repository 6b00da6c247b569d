"""The method registry: built-in methods, `--plugin` files or modules, and entry points.

One decorator registers a class under a name. Built-ins live one a file in `methods/`.
Third-party packages declare the entry-point group `oneshot_benchmark.methods`
(`name = "package.module:Class"`); they are imported only when their name is asked for, so
a broken plugin cannot break a run that does not use it.

Every name remembers where it came from (`source_of`), and the runner writes that into
run.json: "built-in", "file PATH sha256:DIGEST", "module NAME" (with the package and version
when the module belongs to an installed distribution), or "package NAME VERSION".

The project has one `Registry`, `METHODS`; the functions of this module are its methods
(`register_method`, `get_method`, `create_method`, ...). Tests that register methods do so
inside `METHODS.isolated()`, which undoes their registrations.
"""

from __future__ import annotations

import contextlib
import hashlib
import importlib
import importlib.metadata
import importlib.util
import inspect
import pkgutil
import sys
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

from benchmark.api import Method, hyperparameters
from benchmark.config import coerce, did_you_mean
from benchmark.errors import ConfigError
from benchmark.paths import EXAMPLES_DIR, PROJECT_ROOT

ENTRY_POINT_GROUP = "oneshot_benchmark.methods"


class Registry:
    """Method names -> classes, each with where it came from."""

    def __init__(self, entry_point_group: str = ENTRY_POINT_GROUP):
        self.entry_point_group = entry_point_group
        self._classes: dict[str, type[Method]] = {}
        self._sources: dict[str, str] = {}
        self._loading_source: str | None = None  # while a plugin or entry point is imported
        self._loading_names: list[str] | None = None  # the names it registers meanwhile
        self._builtins_loaded = False

    # ---- registering -----------------------------------------------------------------------

    def register(self, name: str):
        """Class decorator: `@register_method("my_method")` makes the class runnable by that name."""
        if not isinstance(name, str) or not name.isidentifier():
            raise ValueError(f"method name {name!r} must be a Python identifier")

        def decorate(cls):
            if not (isinstance(cls, type) and issubclass(cls, Method)):
                raise TypeError(f"@register_method({name!r}) must decorate a subclass of benchmark.api.Method")
            existing = self._classes.get(name)
            # The same class from the same file may register again (a file imported by a test and
            # loaded by --plugin gets two module names); anything else would silently replace it.
            if existing is not None and _identity(existing) != _identity(cls):
                raise ValueError(f"method name {name!r} is already registered by "
                                 f"{existing.__module__}.{existing.__qualname__} ({_identity(existing)[0]})")
            cls.name = name
            self._classes[name] = cls
            self._sources[name] = self._loading_source or (
                "built-in" if cls.__module__.startswith("methods.") else f"module {cls.__module__}")
            if self._loading_names is not None:
                self._loading_names.append(name)
            return cls

        return decorate

    @contextlib.contextmanager
    def isolated(self) -> Iterator[Registry]:
        """Registrations made within the block are undone at its end (for tests)."""
        self.load_builtins()  # first: their modules are imported once per process
        saved = dict(self._classes), dict(self._sources)
        try:
            yield self
        finally:
            self._classes, self._sources = saved

    @contextlib.contextmanager
    def _loading(self, source: str) -> Iterator[list[str]]:
        """Attribute what registers within the block to `source`; yields the names registered."""
        previous = self._loading_source, self._loading_names
        self._loading_source, self._loading_names = source, []
        try:
            yield self._loading_names
        finally:
            self._loading_source, self._loading_names = previous

    # ---- loading ---------------------------------------------------------------------------

    def load_builtins(self) -> None:
        """Import every module of the `methods` package once (each registers itself)."""
        if self._builtins_loaded:
            return
        import methods

        for module in pkgutil.iter_modules(methods.__path__):
            if not module.name.startswith("_"):
                importlib.import_module(f"methods.{module.name}")
        self._builtins_loaded = True

    def load_plugin(self, spec: str) -> list[str]:
        """Load a plugin from a `.py` file or an importable module; return the names it registered."""
        self.load_builtins()  # first, so that a plugin reusing a built-in's name gets a clear error
        is_file = spec.endswith(".py")
        path = Path(spec)
        if is_file and not path.is_file():
            raise ConfigError(f"plugin file {spec} not found: check the path given to --plugin")
        source = (f"file {spec} sha256:{hashlib.sha256(path.read_bytes()).hexdigest()[:16]}" if is_file
                  else _source_of_module(spec))
        helpers: list[str] = []
        try:
            with self._loading(source) as names:
                if is_file:
                    helpers = _import_file(path)
                else:
                    importlib.import_module(spec)
            added = sorted(set(names))
        except ModuleNotFoundError as error:
            raise ConfigError(f"plugin {spec!r} cannot be imported ({error}): give a .py file or an "
                              f"importable module to --plugin") from None
        except Exception as error:
            raise ConfigError(f"plugin {spec!r} failed while loading: {type(error).__name__}: {error}") from None
        if not added and not is_file:
            # A module imported earlier in this process registered its methods back then.
            added = sorted(name for name, cls in self._classes.items() if cls.__module__ == spec)
            for name in added:
                self._sources[name] = source
        if not added:
            raise ConfigError(f"plugin {spec!r} registered no method: decorate a Method subclass "
                              f"with @register_method(\"name\")")
        if helpers:  # what the file imported from its own folder shapes the method too
            for name in added:
                self._sources[name] = f"{source} with {', '.join(helpers)}"
        return added

    def _entry_points(self) -> dict:
        """Entry points of the group by name, read without importing anything.

        On duplicate names the distribution first on sys.path wins, as it would for an import.
        """
        found = {}
        for distribution in importlib.metadata.distributions():
            for entry_point in distribution.entry_points.select(group=self.entry_point_group):
                found.setdefault(entry_point.name, entry_point)
        return found

    def _load_entry_point(self, name: str, entry_point) -> type[Method]:
        dist = getattr(entry_point, "dist", None)
        package = dist.name if dist else entry_point.value
        try:
            with self._loading(f"package {package} {dist.version if dist else 'unknown'}"):
                cls = entry_point.load()
        except Exception as error:
            raise ConfigError(f"method {name!r} from package {package} failed to load: "
                              f"{type(error).__name__}: {error}") from None
        if not (isinstance(cls, type) and issubclass(cls, Method)):
            raise ConfigError(f"entry point {name!r} of package {package} ({entry_point.value}) "
                              f"is not a Method subclass")
        registered_as = next((n for n, c in self._classes.items() if c is cls), None)
        if registered_as is not None and registered_as != name:
            raise ConfigError(f"entry point {name!r} of package {package} names a class registered as "
                              f"{registered_as!r}: the two names must match")
        if registered_as is None:  # a class that did not use the decorator
            cls.name = name
            self._classes[name] = cls
        self._sources[name] = f"package {package} {dist.version if dist else 'unknown'}"
        return cls

    # ---- looking up ------------------------------------------------------------------------

    def get(self, name: str) -> type[Method]:
        """The class registered under `name`, loading its entry point if it comes from a package."""
        self.load_builtins()
        if name in self._classes:
            return self._classes[name]
        entry_point = self._entry_points().get(name)
        if entry_point is not None:
            return self._load_entry_point(name, entry_point)
        example = _example_defining(name)
        if example is not None:
            raise ConfigError(f"unknown method {name!r}: it is an example plugin, load it with "
                              f"--plugin {example}")
        raise ConfigError(f"unknown method {name!r}{did_you_mean(name, self.names())} (see --list-methods)")

    def create(self, name: str, settings: Mapping[str, Any]) -> Method:
        """An unfitted instance with these hyperparameters, checked against its constructor."""
        cls = self.get(name)
        params = check_hyperparameters(name, cls, settings)
        try:
            return cls(**params)
        except Exception as error:
            raise ConfigError(f"method {name!r} rejected its hyperparameters: {error}") from None

    def names(self) -> list[str]:
        """Registered names plus entry-point names (the latter without importing them)."""
        self.load_builtins()
        return sorted(set(self._classes) | set(self._entry_points()))

    def builtin_names(self) -> list[str]:
        """The names of the methods that ship in `methods/`."""
        self.load_builtins()
        return sorted(name for name, source in self._sources.items() if source == "built-in")

    def source_of(self, name: str) -> str:
        """Where a method came from: built-in, a plugin file or module, or a package and version."""
        return self._sources.get(name, "unknown")

    def describe(self) -> list[tuple[str, str, str]]:
        """(name, where it comes from, one-line summary) for every method; entry points are
        described without loading them."""
        rows = []
        entry_points = self._entry_points()
        for name in self.names():
            if name in self._classes:
                rows.append((name, self.source_of(name), self._classes[name].summary()))
            else:
                dist = getattr(entry_points[name], "dist", None)
                package = f"{dist.name} {dist.version}" if dist else entry_points[name].value
                rows.append((name, f"package {package}", "(loaded when used)"))
        return rows


def check_hyperparameters(method_name: str, method_class: type, params: Mapping[str, Any]) -> dict:
    """Check hyperparameter names and types against the method's (inherited) constructor arguments."""
    accepted = hyperparameters(method_class)
    checked = {}
    for key, value in params.items():
        if key not in accepted:
            raise ConfigError(f"method {method_name!r} has no hyperparameter {key!r}{did_you_mean(key, accepted)}")
        parameter = accepted[key]
        annotation = parameter.annotation
        if annotation is parameter.empty or isinstance(annotation, str):  # none, or one that did not resolve
            annotation = type(parameter.default) if parameter.default not in (None, parameter.empty) else None
        checked[key] = coerce(value, annotation, f"methods.{method_name}.{key}") if annotation else value
    return checked


def _example_defining(name: str) -> str | None:
    """The example plugin file (examples/*.py, read as text, not imported) that registers `name`."""
    for path in sorted(EXAMPLES_DIR.glob("*.py")):
        if f'register_method("{name}")' in path.read_text(encoding="utf-8", errors="replace"):
            return str(path.relative_to(PROJECT_ROOT)) if path.is_relative_to(PROJECT_ROOT) else str(path)
    return None


def _import_file(path: Path) -> list[str]:
    """Import a plugin file as Python runs a script: its folder first on sys.path, so it can
    import helpers beside it. Returns 'NAME.py sha256:DIGEST' of each helper it imported from
    its folder (for run.json's record of where a method came from)."""
    folder = str(path.resolve().parent)
    if folder not in sys.path:
        sys.path.insert(0, folder)
    module_name = f"oneshot_plugin_{path.stem}"
    loader_spec = importlib.util.spec_from_file_location(module_name, path)
    module = importlib.util.module_from_spec(loader_spec)
    before = set(sys.modules)
    sys.modules[module_name] = module
    try:
        loader_spec.loader.exec_module(module)
    except BaseException:
        del sys.modules[module_name]
        raise
    helpers = []
    for name in sorted(set(sys.modules) - before - {module_name}):
        file = getattr(sys.modules[name], "__file__", None)
        if file and Path(file).resolve().parent == Path(folder):
            helpers.append(f"{Path(file).name} sha256:{hashlib.sha256(Path(file).read_bytes()).hexdigest()[:16]}")
    return helpers


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


METHODS = Registry()
register_method = METHODS.register
load_builtin_methods = METHODS.load_builtins
load_plugin = METHODS.load_plugin
get_method = METHODS.get
create_method = METHODS.create
available_names = METHODS.names
builtin_names = METHODS.builtin_names
source_of = METHODS.source_of
describe_methods = METHODS.describe

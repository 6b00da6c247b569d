"""The project's structure: no import cycles (imports inside functions count too), no long functions.

Read from the source with `ast` (nothing is imported), so a cycle that only bites when some
function first runs is caught as well as one at import time.
"""

import ast
import textwrap
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PACKAGES = ("benchmark", "tasks", "methods", "examples", "perf")
MAX_FUNCTION_LINES = 60
LENGTH_EXEMPT = ("perf", "tests")  # measurement scripts and tests may spell things out


def project_modules(root: Path, packages=PACKAGES) -> dict[str, Path]:
    """Module name -> file, for every .py file under the project's packages."""
    modules = {}
    for package in packages:
        for path in sorted((root / package).rglob("*.py")):
            parts = list(path.relative_to(root).with_suffix("").parts)
            if parts[-1] == "__init__":
                parts = parts[:-1]
            modules[".".join(parts)] = path
    return modules


def imported_names(tree: ast.AST, module: str, is_package: bool) -> set[str]:
    """Every module name an import anywhere in the tree names (a from-import names both the
    module and `module.name`, which is a module when a submodule is imported)."""
    package = module if is_package else module.rpartition(".")[0]
    names = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[:len(package.split(".")) - (node.level - 1)]
                base = ".".join([*anchor, base] if base else anchor)
            names.add(base)
            names.update(f"{base}.{alias.name}" for alias in node.names)
    return names


def import_graph(modules: dict[str, Path]) -> dict[str, set[str]]:
    """Module -> the project modules it imports (naming a module inside a package imports the
    package too, except the importer's own parent packages)."""
    graph = {}
    for name, path in modules.items():
        targets = imported_names(ast.parse(path.read_text(encoding="utf-8")), name, path.name == "__init__.py")
        graph[name] = {other for other in modules if other != name and not name.startswith(other + ".")
                       and any(t == other or t.startswith(other + ".") for t in targets)}
    return graph


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Groups of modules that import each other, directly or through others (Tarjan's SCCs)."""
    index, low, stack, on_stack, found = {}, {}, [], set(), []

    def visit(node):
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for other in sorted(graph[node]):
            if other not in index:
                visit(other)
                low[node] = min(low[node], low[other])
            elif other in on_stack:
                low[node] = min(low[node], index[other])
        if low[node] == index[node]:
            group = []
            while not group or group[-1] != node:
                group.append(stack.pop())
                on_stack.discard(group[-1])
            if len(group) > 1:
                found.append(sorted(group))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return found


def long_functions(modules: dict[str, Path], limit: int = MAX_FUNCTION_LINES, exempt=()) -> list[str]:
    """'file:line name (N lines)' for every function longer than `limit`, outside `exempt` packages."""
    found = []
    for name, path in modules.items():
        if name.split(".")[0] in exempt:
            continue
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                length = node.end_lineno - node.lineno + 1
                if length > limit:
                    found.append(f"{path}:{node.lineno} {node.name} ({length} lines)")
    return found


def test_no_import_cycle_among_the_projects_modules():
    modules = project_modules(ROOT)
    assert "benchmark.cli" in modules and "methods.siamese" in modules  # the scan sees the project
    assert cycles(import_graph(modules)) == []


def test_no_function_outside_perf_and_tests_is_longer_than_60_lines():
    assert long_functions(project_modules(ROOT), exempt=LENGTH_EXEMPT) == []


def test_the_cycle_check_sees_imports_inside_functions(tmp_path):
    (tmp_path / "pkg").mkdir()
    (tmp_path / "pkg" / "__init__.py").write_text("")
    (tmp_path / "pkg" / "a.py").write_text("from pkg import b\n")
    (tmp_path / "pkg" / "b.py").write_text(textwrap.dedent("""
        def later():
            from . import a  # only when called: still a cycle
            return a
    """))
    (tmp_path / "pkg" / "c.py").write_text("import pkg.a\n")
    graph = import_graph(project_modules(tmp_path, packages=("pkg",)))
    assert cycles(graph) == [["pkg.a", "pkg.b"]]


def test_the_length_check_counts_a_function_from_def_to_last_line(tmp_path):
    (tmp_path / "pkg").mkdir()
    body = "\n".join(f"    x{i} = {i}" for i in range(60))
    (tmp_path / "pkg" / "long.py").write_text(f"def sixty_one():\n{body}\n\n\ndef short():\n    pass\n")
    assert [line.split()[-3:] for line in long_functions(project_modules(tmp_path, ("pkg",)))] == \
        [["sixty_one", "(61", "lines)"]]

"""The shipped modules' imports, read with `ast` (nothing is imported): no first-party import cycle, every
first-party import names a shipped module, and third-party imports match the declared dependencies.

The shipped modules are the packages of pyproject's [tool.setuptools] (`touchpoint.activation` is
`activation/`, ...). Imports inside functions count as much as those at the top of a module (a deferred import
hides a cycle until the function runs); imports under `if TYPE_CHECKING:` do not, since they never run.
"""

from __future__ import annotations

import ast
import importlib.metadata
import re
import sys
import tomllib
from dataclasses import dataclass
from functools import cache
from pathlib import Path

from tests.conftest import PROJECT_ROOT

PYPROJECT = tomllib.loads((PROJECT_ROOT / "pyproject.toml").read_text())
# Cycles known and owned elsewhere, as (module, ..., module) in the order the failure message prints them.
# Each entry is temporary: it names the cycle until its owner breaks it.
KNOWN_CYCLES: set[tuple[str, ...]] = set()
# Runtime code beside the packages: dbt runs these Python models inside the pipeline.
DBT_PYTHON_MODELS = PROJECT_ROOT / "dbt_project" / "models"
# Packages Python imports from the tree but pyproject's `packages` does not list, so a wheel (a non-editable
# install) would leave them out. Temporary entries only, each naming a package its owner has yet to list.
KNOWN_UNLISTED_PACKAGES: set[str] = set()
# A meta-distribution declares the import name through the distributions it pins.
DECLARED_THROUGH = {"airflow": "apache-airflow"}


@dataclass(frozen=True)
class Import:
    target: str  # a dotted module name as written (absolute, relative ones resolved)
    names: tuple[str, ...]  # `from target import names`; empty for `import target`
    line: int


def package_dirs() -> dict[str, Path]:
    """Dotted package name -> folder, for every folder with an `__init__.py` under pyproject's package-dir
    roots: what Python can import (an editable install finds them all), listed in `packages` or not."""
    found: dict[str, Path] = {}
    for root, folder in PYPROJECT["tool"]["setuptools"]["package-dir"].items():
        base = PROJECT_ROOT / folder
        for init in sorted(base.rglob("__init__.py")):
            relative = init.parent.relative_to(base).parts
            found[".".join((root, *relative))] = init.parent
    return found


@cache
def shipped_modules() -> dict[str, Path]:
    """Dotted module name -> file, for every module of every package."""
    modules: dict[str, Path] = {}
    for package, folder in package_dirs().items():
        for path in sorted(folder.glob("*.py")):
            modules[package if path.stem == "__init__" else f"{package}.{path.stem}"] = path
    return modules


def _under_type_checking(tree: ast.AST) -> set[int]:
    """ids of the import nodes inside `if TYPE_CHECKING:` blocks."""
    skipped: set[int] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            skipped.update(id(inner) for statement in node.body for inner in ast.walk(statement))
    return skipped


def imports_of(path: Path, module: str | None) -> list[Import]:
    """Every import in the file, at any depth, relative ones resolved against `module`'s package."""
    tree = ast.parse(path.read_text(), filename=str(path))
    skipped = _under_type_checking(tree)
    is_package = path.stem == "__init__"
    found: list[Import] = []
    for node in ast.walk(tree):
        if id(node) in skipped:
            continue
        if isinstance(node, ast.Import):
            found.extend(Import(alias.name, (), node.lineno) for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            target = node.module or ""
            if node.level:
                assert module, f"{path}:{node.lineno}: a relative import outside a package"
                parts = module.split(".")[: len(module.split(".")) - node.level + (1 if is_package else 0)]
                target = ".".join([*parts, *([target] if target else [])])
            found.append(Import(target, tuple(alias.name for alias in node.names), node.lineno))
    return found


def first_party_edges() -> dict[str, dict[str, str]]:
    """module -> {imported shipped module: where ("path:line")}. `from package import name` is an edge to the
    submodule `package.name` when there is one, else to the package itself."""
    modules = shipped_modules()
    edges: dict[str, dict[str, str]] = {module: {} for module in modules}
    for module, path in modules.items():
        for imported in imports_of(path, module):
            if imported.target != "touchpoint" and not imported.target.startswith("touchpoint."):
                continue
            where = f"{path.relative_to(PROJECT_ROOT)}:{imported.line}"
            submodules = [f"{imported.target}.{name}" for name in imported.names]
            targets = [name for name in submodules if name in modules] or [imported.target]
            if len(targets) < len(submodules) and imported.target not in targets:
                targets.append(imported.target)  # names from the package itself beside its submodules
            for target in targets:
                edges[module].setdefault(target, where)
    return edges


def cycles(edges: dict[str, dict[str, str]]) -> list[list[str]]:
    """One cycle (as a closed path, first module repeated at the end) per strongly connected component."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    components: list[list[str]] = []

    def connect(node: str) -> None:  # Tarjan's algorithm; the graph is small enough to recurse
        index[node] = low[node] = len(index)
        stack.append(node)
        for successor in edges.get(node, {}):
            if successor not in index:
                connect(successor)
                low[node] = min(low[node], low[successor])
            elif successor in stack:
                low[node] = min(low[node], index[successor])
        if low[node] == index[node]:
            component = []
            while True:
                member = stack.pop()
                component.append(member)
                if member == node:
                    break
            if len(component) > 1 or node in edges.get(node, {}):
                components.append(component)

    for node in sorted(edges):
        if node not in index:
            connect(node)
    return [_closed_path(sorted(component), edges) for component in components]


def _closed_path(component: list[str], edges: dict[str, dict[str, str]]) -> list[str]:
    """The shortest path from the component's first module back to itself, within the component."""
    start, members = component[0], set(component)
    paths = {start: [start]}
    frontier = [start]
    while frontier:
        next_frontier = []
        for node in frontier:
            for successor in sorted(edges.get(node, {})):
                if successor == start:
                    return [*paths[node], start]
                if successor in members and successor not in paths:
                    paths[successor] = [*paths[node], successor]
                    next_frontier.append(successor)
        frontier = next_frontier
    raise AssertionError(f"no cycle through {start} in {component}")


def describe(cycle: list[str], edges: dict[str, dict[str, str]]) -> str:
    steps = [f"{a} -> {b} ({edges[a][b]})" for a, b in zip(cycle, cycle[1:], strict=False)]
    return " -> ".join(cycle) + "\n    " + "\n    ".join(steps)


def test_the_shipped_packages_are_found() -> None:
    modules = shipped_modules()
    for expected in ("touchpoint.cli", "touchpoint.ingest", "touchpoint.activation.runner",
                     "touchpoint.activation.destinations.postgres", "touchpoint.ml", "touchpoint.expectations"):
        assert expected in modules, expected
    assert all(path.exists() for path in modules.values())


def test_every_package_is_listed_for_the_wheel() -> None:
    listed = set(PYPROJECT["tool"]["setuptools"]["packages"])
    unlisted = set(package_dirs()) - listed
    assert unlisted == KNOWN_UNLISTED_PACKAGES, f"packages missing from pyproject's `packages`: {sorted(unlisted)}"
    assert listed <= set(package_dirs()), f"listed packages without a folder: {sorted(listed - set(package_dirs()))}"


def test_relative_imports_resolve_against_their_package(tmp_path: Path) -> None:
    module = tmp_path / "mod.py"
    module.write_text("from . import sibling\nfrom ..config import Paths\ndef f():\n    from .deep import x\n")
    assert [(i.target, i.names) for i in imports_of(module, "touchpoint.activation.mod")] == [
        ("touchpoint.activation", ("sibling",)),
        ("touchpoint.config", ("Paths",)),
        ("touchpoint.activation.deep", ("x",)),
    ]


def test_a_cycle_through_a_function_level_import_is_found() -> None:
    edges = {"a": {"b": "a.py:1"}, "b": {"c": "b.py:9"}, "c": {"a": "c.py:40"}, "d": {"a": "d.py:1"}}
    [cycle] = cycles(edges)
    assert cycle == ["a", "b", "c", "a"]
    assert describe(cycle, edges).startswith("a -> b -> c -> a\n    a -> b (a.py:1)")


def test_no_first_party_import_cycle() -> None:
    edges = first_party_edges()
    found = {tuple(cycle): describe(cycle, edges) for cycle in cycles(edges)}
    unexpected = [text for cycle, text in found.items() if cycle not in KNOWN_CYCLES]
    assert not unexpected, "import cycles among the shipped modules:\n" + "\n".join(unexpected)
    assert not KNOWN_CYCLES - set(found), f"listed cycles that no longer exist: {KNOWN_CYCLES - set(found)}"


def test_every_first_party_import_names_a_shipped_module() -> None:
    """A module that moved (a test double to tests/, a simulator to bench/) leaves no import behind."""
    modules = shipped_modules()
    missing = [
        f"{where}: {target}"
        for source, targets in first_party_edges().items()
        for target, where in targets.items()
        if target not in modules
    ]
    assert not missing, "imports of modules that are not shipped:\n" + "\n".join(missing)


# -- third-party imports and the declared dependencies ---------------------------------------------------------


def _distribution(requirement: str) -> str:
    return re.sub(r"[-_.]+", "-", re.split(r"[\[=<>!~;\s]", requirement, maxsplit=1)[0]).lower()


def runtime_third_party_imports() -> dict[str, str]:
    """Top-level third-party import name -> one place it is imported, over the shipped modules and the dbt
    Python models (dbt runs them in the pipeline)."""
    files = [(module, path) for module, path in shipped_modules().items()]
    files += [(None, path) for path in sorted(DBT_PYTHON_MODELS.rglob("*.py"))]
    found: dict[str, str] = {}
    for module, path in files:
        for imported in imports_of(path, module):
            top = imported.target.split(".")[0]
            if top and top not in sys.stdlib_module_names and top not in ("touchpoint", "__future__"):
                found.setdefault(top, f"{path.relative_to(PROJECT_ROOT)}:{imported.line}")
    return found


def test_runtime_code_imports_only_declared_runtime_dependencies() -> None:
    """Each third-party import of runtime code comes from a pinned [project] dependency, not from a package
    that happens to pull it in (sqlglot came only through splink, a bench-only dependency)."""
    declared = {_distribution(r) for r in PYPROJECT["project"]["dependencies"]}
    providers = importlib.metadata.packages_distributions()
    undeclared = [
        f"{where}: {name} (from {sorted(providers.get(name, ['an unknown distribution']))})"
        for name, where in sorted(runtime_third_party_imports().items())
        if not {_distribution(d) for d in providers.get(name, [])} & declared
        and DECLARED_THROUGH.get(name) not in declared
    ]
    assert not undeclared, "runtime imports without a declared dependency:\n" + "\n".join(undeclared)


def test_bench_and_test_dependencies_are_not_runtime_dependencies() -> None:
    """splink and phonenumbers are references the benches and tests compare against: extras, never imported by
    runtime code, and still installed by `make setup` (which installs `.[dev]`)."""
    project = PYPROJECT["project"]
    runtime = {_distribution(r) for r in project["dependencies"]}
    extras = project["optional-dependencies"]
    for reference in ("splink", "phonenumbers"):
        assert reference not in runtime, reference
        assert reference not in runtime_third_party_imports(), reference
    dev = {_distribution(r) for r in extras["dev"]} | {
        _distribution(r) for extra in re.findall(r"touchpoint\[([^\]]+)\]", " ".join(extras["dev"]))
        for name in extra.split(",") for r in extras[name.strip()]
    }
    assert {"splink", "phonenumbers"} <= dev

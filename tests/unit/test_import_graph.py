"""The import graph of the project's own modules, read with `ast` (nothing is imported): no cycle among the
modules of mlopsctl/ and dags/, the DAG package imports nothing from mlopsctl (a hosted Airflow has no mlopsctl),
and the Spark jobs import neither Airflow nor mlopsctl (they run on Databricks and in bare Python processes).

Every import counts: at module level, inside functions, under ``if TYPE_CHECKING:``, and calls of
`importlib.import_module` / ``__import__`` with a literal name. A package's submodule importing its parent
package implicitly (``import a.b`` runs ``a/__init__.py``) is not an edge: only what a file names is."""

from __future__ import annotations

import ast
import sys
from collections.abc import Iterable, Iterator
from itertools import pairwise
from pathlib import Path
from typing import NamedTuple

import pytest

REPO = Path(__file__).resolve().parents[2]
#: folder -> the name its modules are imported under (dags/ and spark_jobs/ are themselves on sys.path)
ROOTS = {"mlopsctl": "mlopsctl", "dags": "", "spark_jobs": ""}


class Import(NamedTuple):
    module: str  # absolute
    member: str | None  # x of ``from module import x`` (a submodule, or a name defined in the module)
    line: int


def module_names(root: Path, prefix: str) -> dict[str, Path]:
    """Module name -> file, for every ``*.py`` under ``root`` (``pkg/__init__.py`` is ``pkg``)."""
    found = {}
    for path in sorted(root.rglob("*.py")):
        parts = list(path.relative_to(root).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts.pop()
        name = ".".join([prefix, *parts] if prefix else parts)
        if name:
            found[name] = path
    return found


def imports_of(path: Path, module: str) -> Iterator[Import]:
    """Every import in the file, wherever it sits, with relative ones made absolute."""
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield Import(alias.name, None, node.lineno)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parts = package.split(".") if package else []
                if node.level - 1 > len(parts):
                    raise AssertionError(f"{path}:{node.lineno}: relative import beyond the top-level package")
                parts = parts[:len(parts) - (node.level - 1)]
                base = ".".join([*parts, base] if base else parts)
            for alias in node.names:
                yield Import(base, None if alias.name == "*" else alias.name, node.lineno)
        elif (isinstance(node, ast.Call) and node.args and isinstance(node.args[0], ast.Constant)
              and isinstance(node.args[0].value, str) and _is_import_call(node.func)):
            yield Import(node.args[0].value, None, node.lineno)


def _is_import_call(func: ast.expr) -> bool:
    if isinstance(func, ast.Name):
        return func.id in ("__import__", "import_module")
    return isinstance(func, ast.Attribute) and func.attr == "import_module"


def build_graph(modules: dict[str, Path]) -> dict[str, dict[str, int]]:
    """module -> {project module it imports: the first line that does}."""
    graph: dict[str, dict[str, int]] = {}
    for module, path in modules.items():
        edges: dict[str, int] = {}
        for imp in imports_of(path, module):
            submodule = f"{imp.module}.{imp.member}"
            target = submodule if imp.member and submodule in modules else imp.module
            if target in modules and target != module:
                edges.setdefault(target, imp.line)
        graph[module] = edges
    return graph


def find_cycle(graph: dict[str, dict[str, int]]) -> list[str] | None:
    """One cycle as [a, b, ..., a], or None (iterative depth-first search, modules in sorted order)."""
    state: dict[str, int] = {}  # 1: on the current path, 2: done
    for start in sorted(graph):
        if state.get(start):
            continue
        path: list[str] = [start]
        todo: list[Iterator[str]] = [iter(sorted(graph[start]))]
        state[start] = 1
        while todo:
            nxt = next(todo[-1], None)
            if nxt is None:
                state[path.pop()] = 2
                todo.pop()
            elif state.get(nxt) == 1:
                return [*path[path.index(nxt):], nxt]
            elif not state.get(nxt):
                state[nxt] = 1
                path.append(nxt)
                todo.append(iter(sorted(graph.get(nxt, {}))))
    return None


def find_cycles(graph: dict[str, dict[str, int]]) -> list[list[str]]:
    """Cycles until none is left, each found after the closing edge of the ones before was taken out (so every
    cycle shows at least once)."""
    rest = {module: dict(edges) for module, edges in graph.items()}
    cycles = []
    while (cycle := find_cycle(rest)) is not None:
        cycles.append(cycle)
        del rest[cycle[-2]][cycle[-1]]
    return cycles


def describe(cycles: list[list[str]], graph: dict[str, dict[str, int]], modules: dict[str, Path]) -> str:
    """Each cycle, one edge a line, with the file and line of the import that makes the edge."""
    def where(module: str) -> Path:
        return modules[module].relative_to(REPO) if modules[module].is_relative_to(REPO) else modules[module]

    return "\n".join(
        "import cycle:\n" + "\n".join(f"  {a} -> {b}   ({where(a)}:{graph[a][b]})" for a, b in pairwise(c))
        for c in cycles
    )


def project_modules(folders: Iterable[str]) -> dict[str, Path]:
    modules: dict[str, Path] = {}
    for folder in folders:
        modules.update(module_names(REPO / folder, ROOTS[folder]))
    return modules


def foreign_imports(folder: str, forbidden: set[str]) -> list[str]:
    """``file:line imports name`` for each import under ``folder`` whose top-level package is forbidden."""
    found = []
    for module, path in module_names(REPO / folder, ROOTS[folder]).items():
        for imp in imports_of(path, module):
            if imp.module.split(".", 1)[0] in forbidden:
                found.append(f"{path.relative_to(REPO)}:{imp.line} imports {imp.module}")
    return sorted(set(found))


def test_the_project_modules_import_each_other_without_a_cycle() -> None:
    modules = project_modules(("mlopsctl", "dags"))
    assert {"mlopsctl.cli", "mlopsctl.settings", "common.compute", "build_model"} <= modules.keys()
    graph = build_graph(modules)
    assert "mlopsctl.errors" in graph["mlopsctl.contexts"], "the walker found no edges"
    cycles = find_cycles(graph)
    assert cycles == [], describe(cycles, graph, modules)


def test_the_dags_import_nothing_from_mlopsctl() -> None:
    assert foreign_imports("dags", {"mlopsctl"}) == []


def test_the_spark_jobs_import_neither_airflow_nor_mlopsctl() -> None:
    assert foreign_imports("spark_jobs", {"airflow", "mlopsctl"}) == []


def test_the_dag_modules_mlopsctl_shares_need_only_the_standard_library() -> None:
    # mlopsctl loads them from its bundled DAG folder (the launcher's protocol, the local Spark facts): they must
    # import neither Airflow (the CLI does not import it) nor anything a hosted Airflow lacks
    from mlopsctl.paths import SHARED_DAG_MODULES, dags_common_module

    for name in SHARED_DAG_MODULES:
        path = REPO / "dags" / "common" / f"{name}.py"
        imported = {imp.module.split(".", 1)[0] for imp in imports_of(path, f"common.{name}")}
        assert imported <= set(sys.stdlib_module_names), (name, imported - set(sys.stdlib_module_names))
        assert Path(dags_common_module(name).__file__) == path


# --- the walker itself, on small packages written for the purpose
def _package(root: Path, files: dict[str, str]) -> dict[str, Path]:
    for name, text in files.items():
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    return module_names(root, "")


@pytest.mark.parametrize(
    ("a", "b"),
    [
        ("import pkg.b\n", "def f():\n    from pkg import a\n"),  # inside a function
        ("from . import b\n", "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from .a import X\n"),
        ("from .b import f\n", "import importlib\ndef g():\n    return importlib.import_module('pkg.a')\n"),
        ("try:\n    from pkg.b import f\nexcept ImportError:\n    pass\n", "from pkg.a import *\n"),
    ],
    ids=["function", "type-checking", "import-module", "try-star"],
)
def test_the_walker_finds_a_cycle_wherever_its_imports_sit(tmp_path: Path, a: str, b: str) -> None:
    modules = _package(tmp_path, {"pkg/__init__.py": "", "pkg/a.py": a, "pkg/b.py": b, "pkg/c.py": "import pkg.a\n"})
    graph = build_graph(modules)
    assert find_cycle(graph) in (["pkg.a", "pkg.b", "pkg.a"], ["pkg.b", "pkg.a", "pkg.b"])
    assert find_cycles(graph) == [find_cycle(graph)]
    assert "pkg.a -> pkg.b   (pkg/a.py:" in describe(find_cycles(graph), graph, modules).replace(str(tmp_path) + "/", "")


def test_the_walker_counts_names_not_parent_packages(tmp_path: Path) -> None:
    # a package that imports its submodule, whose submodule imports a sibling: the usual layout, no cycle;
    # ``from pkg import NAME`` (a name defined in pkg/__init__.py) is an edge to pkg itself
    modules = _package(tmp_path, {
        "pkg/__init__.py": "from pkg.a import A\n",
        "pkg/a.py": "from pkg.sub.b import B\nA = B\n",
        "pkg/sub/__init__.py": "",
        "pkg/sub/b.py": "from .. import c\nB = 1\n",
        "pkg/c.py": "import os\n",
        "other.py": "from pkg import A\n",
    })
    graph = build_graph(modules)
    assert graph["pkg.sub.b"] == {"pkg.c": 1}
    assert graph["other"] == {"pkg": 1}
    assert find_cycle(graph) is None

"""No import cycles among the project's modules, and built-in benchmarks registered exactly once.

A cycle makes what works depend on which module happens to be imported first; lazy imports
inside functions count too (they only postpone the cycle). Imports under `if TYPE_CHECKING:`
never run and do not count.
"""

from __future__ import annotations

import ast
import subprocess
import sys
from collections.abc import Iterable, Mapping
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
PACKAGES = ("ascood", "analysis")


def project_modules(root: Path, packages: Iterable[str]) -> dict[str, Path]:
    """Dotted module name → file, for every .py under the packages (a package is its __init__)."""
    modules = {}
    for package in packages:
        for path in sorted((root / package).rglob("*.py")):
            parts = list(path.relative_to(root).with_suffix("").parts)
            if parts[-1] == "__init__":
                parts.pop()
            modules[".".join(parts)] = path
    return modules


def _type_checking_only(tree: ast.AST) -> set[int]:
    """ids of the import nodes under `if TYPE_CHECKING:` (they never run)."""
    skipped = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.If):
            test = node.test
            name = test.id if isinstance(test, ast.Name) else test.attr if isinstance(test, ast.Attribute) else None
            if name == "TYPE_CHECKING":
                skipped |= {id(n) for stmt in node.body for n in ast.walk(stmt)}
    return skipped


def _imported(module: str, is_package: bool, tree: ast.AST, modules: Mapping[str, Path]) -> set[str]:
    """The project modules `module` imports explicitly, anywhere in its body; `from X import Y`
    is X.Y when that is a module, else X. Parent packages, which Python runs first, are not
    counted: they are no import of this module's own."""
    out = set()
    skipped = _type_checking_only(tree)
    for node in ast.walk(tree):
        if id(node) in skipped:
            continue
        if isinstance(node, ast.Import):
            out |= {a.name for a in node.names if a.name in modules}
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                package = module.split(".") if is_package else module.split(".")[:-1]
                base_parts = package[: len(package) - (node.level - 1)]
                base = ".".join([*base_parts, *([node.module] if node.module else [])])
            else:
                base = node.module or ""
            for alias in node.names:
                target = f"{base}.{alias.name}"
                if target in modules:
                    out.add(target)
                elif base in modules:
                    out.add(base)
    out.discard(module)
    return out


def import_graph(root: Path, packages: Iterable[str]) -> dict[str, set[str]]:
    modules = project_modules(root, packages)
    return {
        name: _imported(name, path.name == "__init__.py", ast.parse(path.read_text(), str(path)), modules)
        for name, path in modules.items()
    }


def find_cycles(graph: Mapping[str, Iterable[str]]) -> list[list[str]]:
    """One cycle (first node repeated at the end) per strongly connected component of more than
    one node (Tarjan's algorithm, iterative)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    on_stack: set[str] = set()
    stack: list[str] = []
    components: list[set[str]] = []
    for start in sorted(graph):
        if start in index:
            continue
        work = [(start, iter(sorted(graph.get(start, ()))))]
        index[start] = low[start] = len(index)
        stack.append(start)
        on_stack.add(start)
        while work:
            node, children = work[-1]
            child = next(children, None)
            if child is not None:
                if child not in index:
                    index[child] = low[child] = len(index)
                    stack.append(child)
                    on_stack.add(child)
                    work.append((child, iter(sorted(graph.get(child, ())))))
                elif child in on_stack:
                    low[node] = min(low[node], index[child])
                continue
            work.pop()
            if work:
                low[work[-1][0]] = min(low[work[-1][0]], low[node])
            if low[node] == index[node]:
                component = set()
                while True:
                    member = stack.pop()
                    on_stack.discard(member)
                    component.add(member)
                    if member == node:
                        break
                if len(component) > 1:
                    components.append(component)
    return [_cycle_in(graph, c) for c in components]


def _cycle_in(graph: Mapping[str, Iterable[str]], component: set[str]) -> list[str]:
    """A shortest cycle through the component's first node (breadth-first inside it)."""
    start = min(component)
    came_from: dict[str, str] = {}
    frontier = [start]
    while frontier:
        following = []
        for node in frontier:
            for child in sorted(graph.get(node, ())):
                if child not in component or child in came_from:
                    continue
                came_from[child] = node
                if child == start:
                    path = [start]
                    while path[-1] != start or len(path) == 1:
                        path.append(came_from[path[-1]])
                    return path[::-1]
                following.append(child)
        frontier = following
    raise AssertionError(f"no cycle in the component {sorted(component)}")


def _write(root: Path, files: dict[str, str]) -> None:
    for rel, text in files.items():
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_text(text)


def test_cycle_finder_reports_a_known_cycle_and_only_cycles():
    graph = {"a": {"b"}, "b": {"c"}, "c": {"a", "d"}, "d": set(), "e": {"a", "e"}, "f": {"g"}, "g": {"f"}}
    cycles = find_cycles(graph)
    assert sorted(" -> ".join(c) for c in cycles) == ["a -> b -> c -> a", "f -> g -> f"]
    assert find_cycles({"a": {"b"}, "b": {"c"}, "c": set(), "d": {"a", "c"}}) == []


def test_import_graph_resolves_relative_submodule_and_function_level_imports(tmp_path):
    _write(tmp_path, {
        "pkg/__init__.py": "from pkg import a\n",
        "pkg/a.py": "from . import b\n",
        "pkg/b.py": "def f():\n    from pkg.a import thing\n",
        "pkg/sub/__init__.py": "",
        "pkg/sub/c.py": "from ..b import f\nimport pkg.sub\nfrom typing import TYPE_CHECKING\n"
                        "if TYPE_CHECKING:\n    from pkg.sub.d import D\n",
        "pkg/sub/d.py": "from pkg.sub import c\n",
    })
    graph = import_graph(tmp_path, ["pkg"])
    assert graph == {"pkg": {"pkg.a"}, "pkg.a": {"pkg.b"}, "pkg.b": {"pkg.a"}, "pkg.sub": set(),
                     "pkg.sub.c": {"pkg.b", "pkg.sub"}, "pkg.sub.d": {"pkg.sub.c"}}
    assert [" -> ".join(c) for c in find_cycles(graph)] == ["pkg.a -> pkg.b -> pkg.a"]


def test_parent_packages_are_not_edges_of_the_importer(tmp_path):
    _write(tmp_path, {"pkg/__init__.py": "from pkg import a\n", "pkg/a.py": "from pkg.b import f\n",
                      "pkg/b.py": "def f():\n    pass\n"})
    graph = import_graph(tmp_path, ["pkg"])
    assert graph["pkg.a"] == {"pkg.b"} and find_cycles(graph) == []


def test_no_import_cycles_in_the_project():
    graph = import_graph(REPO, PACKAGES)
    assert {"ascood.data", "ascood.data.registry", "analysis"} <= set(graph), "the project's modules were found"
    assert "ascood.data.real.build" in graph["ascood.data"]
    cycles = find_cycles(graph)
    assert not cycles, "import cycles:\n" + "\n".join(" -> ".join(c) for c in cycles)


def test_the_data_layers_import_only_downwards():
    graph = import_graph(REPO, PACKAGES)
    assert graph["ascood.data.types"] == set() and graph["ascood.data.errors"] == set()
    assert graph["ascood.data.env"] == set()
    registry = graph["ascood.data.registry"]
    assert not {m for m in registry if m.startswith(("ascood.data.real", "ascood.data.embedded"))}, registry


@pytest.mark.parametrize("first", ["ascood.data.registry", "ascood.data.real.schema", "ascood.data.decode"])
def test_every_builtin_benchmark_is_registered_once_whatever_is_imported_first(first):
    code = (f"import {first}\nfrom ascood.data.registry import list_benchmarks, register_benchmark\n"
            "print(','.join(list_benchmarks()))\n"
            "try:\n    register_benchmark('cifar10', setting='conventional', description='again')(print)\n"
            "except ValueError as exc:\n    print(exc)\n")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, cwd=REPO)
    assert r.returncode == 0, r.stderr
    names, refused = r.stdout.splitlines()
    assert names.split(",") == ["aircraft", "cars", "celeba", "cifar10", "cifar100", "cmnist", "imagenet100",
                                "mnist10", "mnist6", "waterbirds"]
    assert refused == "benchmark 'cifar10' is registered twice"


def test_the_light_list_of_scorer_names_is_the_registry():
    """Configs validate scorer names against `ascood.scorer_names` (no torch); it must be the registry."""
    from ascood.scorer_names import SCORER_NAMES
    from ascood.scorers import SCORERS

    assert tuple(SCORERS) == SCORER_NAMES


# Every console script's --help and each bad-input refusal run without torch, Ray, MLflow, Optuna
# or matplotlib: they are what make a command answer in a second instead of three.
_HEAVY = ("torch", "ray", "mlflow", "optuna", "matplotlib")
_REFUSALS = """
import sys, yaml
from pathlib import Path
work = Path(sys.argv[1])
quick = yaml.safe_load(Path("sweeps/quickstart.yaml").read_text())
(work / "missing.yaml").write_text(yaml.safe_dump({k: v for k, v in quick.items() if k != "output"}))
from ascood.cli import data, eval, export, score, sweep, train
calls = [(m.main, ["--help"]) for m in (train, sweep, eval, data, export, score)]
calls += [(sweep.main, [str(work / "missing.yaml")]), (train.main, ["--p-inv", "2"]),
          (train.main, ["--benchmark", "nope"]), (eval.main, [str(work / "no-such-run")])]
for main, argv in calls:
    try:
        code = main(argv)
    except SystemExit as exc:
        code = exc.code
    assert code in (0, 2, None), (argv, code)
print("HEAVY:" + ",".join(m for m in %r if m in sys.modules))
"""


def test_help_and_refusals_import_no_heavy_library(tmp_path):
    proc = subprocess.run([sys.executable, "-c", _REFUSALS % (_HEAVY,), str(tmp_path)], capture_output=True, text=True,
                          cwd=REPO, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert proc.stdout.strip().splitlines()[-1] == "HEAVY:", proc.stdout.strip().splitlines()[-1]

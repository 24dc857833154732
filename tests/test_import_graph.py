"""Our packages import each other without a cycle.

The graph is read from the source with :mod:`ast` (nothing is imported): every ``import`` and
``from ... import`` of the modules of ``components``, ``pipelines``, ``tfxopt`` and ``benchmarks``,
at module level or inside a function, is an edge. A cycle that only works because one import is
deferred into a function is still a cycle: shared helpers belong in a leaf module.
"""

from __future__ import annotations

import ast
import pathlib

REPO_ROOT = pathlib.Path(__file__).resolve().parent.parent
PACKAGES = ("components", "pipelines", "tfxopt", "benchmarks")
# Cycles known today outside pipelines/ (model_io and training defer their imports of each other
# into functions); each is checked to still exist, so its entry goes when the cycle does. Add
# nothing here: break a new cycle with a leaf module (see components/common/numbers.py).
KNOWN_CYCLES: tuple[frozenset, ...] = ()


def _module_name(path: pathlib.Path) -> str:
    parts = list(path.relative_to(REPO_ROOT).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def our_modules() -> dict[str, pathlib.Path]:
    """Module name -> source file, for every module of our packages."""
    return {
        _module_name(path): path
        for package in PACKAGES
        for path in sorted((REPO_ROOT / package).rglob("*.py"))
    }


def _is_package(name: str, modules: dict[str, pathlib.Path]) -> bool:
    return name in modules and modules[name].name == "__init__.py"


def _resolve_relative(node: ast.ImportFrom, importer: str, modules) -> str:
    base = importer.split(".")
    if not _is_package(importer, modules):
        base = base[:-1]
    base = base[: len(base) - (node.level - 1)] if node.level > 1 else base
    return ".".join([*base, *([node.module] if node.module else [])])


def imports_of(name: str, modules: dict[str, pathlib.Path]) -> set[str]:
    """The modules of ours that ``name`` imports (at any depth of its code)."""
    tree = ast.parse(modules[name].read_text(), filename=str(modules[name]))
    found: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            source = _resolve_relative(node, name, modules) if node.level else node.module
            for alias in node.names:
                # `from pkg import mod` imports pkg.mod; `from mod import name` imports mod.
                submodule = f"{source}.{alias.name}"
                found.add(submodule if submodule in modules else source)
    return {target for target in found if target in modules and target != name}


def import_graph() -> dict[str, set[str]]:
    """Module -> the modules of ours it imports."""
    modules = our_modules()
    return {name: imports_of(name, modules) for name in modules}


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One cycle as ``[a, b, ..., a]``, or None (iterative depth-first search)."""
    state: dict[str, int] = {}  # 1: on the current path, 2: finished
    for root in sorted(graph):
        if state.get(root):
            continue
        path, stack = [root], [iter(sorted(graph[root]))]
        state[root] = 1
        while stack:
            child = next(stack[-1], None)
            if child is None:
                state[path.pop()] = 2
                stack.pop()
            elif state.get(child) == 1:
                return path[path.index(child) :] + [child]
            elif not state.get(child):
                state[child] = 1
                path.append(child)
                stack.append(iter(sorted(graph[child])))
    return None


def cycles(graph: dict[str, set[str]]) -> list[frozenset[str]]:
    """The groups of modules that import each other (strongly connected, more than one module)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    found: list[frozenset[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        for child in sorted(graph[node]):
            if child not in index:
                visit(child)
                low[node] = min(low[node], low[child])
            elif child in stack:
                low[node] = min(low[node], index[child])
        if low[node] == index[node]:
            group = set()
            while not group or node not in group:
                group.add(stack.pop())
            if len(group) > 1:
                found.append(frozenset(group))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return found


def _within(graph: dict[str, set[str]], group: frozenset[str]) -> dict[str, set[str]]:
    return {name: graph[name] & group for name in group}


def test_finds_a_cycle_and_an_acyclic_graph():
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": set()}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b", "c"}, "b": {"c"}, "c": set()}) is None
    graph = {"a": {"b"}, "b": {"a", "c"}, "c": {"d"}, "d": {"c"}, "e": {"a"}}
    assert sorted(map(sorted, cycles(graph))) == [["a", "b"], ["c", "d"]]


def test_reads_function_level_and_from_imports(tmp_path):
    package = tmp_path / "pkg"
    package.mkdir()
    (package / "__init__.py").write_text("")
    (package / "leaf.py").write_text("X = 1\n")
    (package / "user.py").write_text(
        "def f():\n    from pkg import leaf\n    from pkg.leaf import X\n    return X\n"
    )
    modules = {
        "pkg": package / "__init__.py",
        "pkg.leaf": package / "leaf.py",
        "pkg.user": package / "user.py",
    }
    assert imports_of("pkg.user", modules) == {"pkg.leaf"}


def test_our_packages_have_no_import_cycle():
    graph = import_graph()
    assert "pipelines.cli" in graph and graph["pipelines.cli"], "the graph found no imports"
    found = cycles(graph)
    new = [
        " -> ".join(find_cycle(_within(graph, group)))
        for group in found
        if group not in KNOWN_CYCLES
    ]
    assert not new, "import cycle(s): " + "; ".join(new)
    gone = [sorted(group) for group in KNOWN_CYCLES if group not in found]
    assert not gone, f"no longer a cycle, remove it from KNOWN_CYCLES: {gone}"

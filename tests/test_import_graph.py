"""The package's modules import in layers: no import cycles, counting imports inside functions
(lazy imports) and under ``if TYPE_CHECKING:`` as well, because a cycle hidden in a function is
still a cycle in the design. Also: the names that moved keep their old import paths."""

from __future__ import annotations

import ast
import importlib
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parents[1] / "src"
PACKAGE = "progan"


def module_name(path: Path, root: Path) -> str:
    parts = list(path.relative_to(root).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def resolve(node: ast.ImportFrom, current: str, is_package: bool) -> str:
    """The absolute module name of ``from <module> import ...`` (relative ones resolved)."""
    if not node.level:
        return node.module or ""
    base = current.split(".")
    if not is_package:
        base.pop()  # a module's relative imports start from its package
    base = base[: len(base) - (node.level - 1)]
    return ".".join(base + ([node.module] if node.module else []))


def import_graph(root: Path = SRC, package: str = PACKAGE) -> dict[str, set[str]]:
    """module -> the package's modules it imports, anywhere in its source."""
    files = {module_name(p, root): p for p in sorted((root / package).rglob("*.py"))}
    graph: dict[str, set[str]] = {}
    for name, path in files.items():
        is_package = path.name == "__init__.py"
        targets: set[str] = set()
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.Import):
                targets.update(alias.name for alias in node.names)
            elif isinstance(node, ast.ImportFrom):
                base = resolve(node, name, is_package)
                for alias in node.names:
                    sub = f"{base}.{alias.name}"
                    targets.add(sub if sub in files else base)  # `from pkg import module`
        graph[name] = {t for t in targets if t in files and t != name}
    return graph


def find_cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """One cycle (``[a, b, ..., a]``) through each strongly connected group of modules."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    groups: list[set[str]] = []

    def connect(v: str) -> None:  # Tarjan's algorithm
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in sorted(graph[v]):
            if w not in index:
                connect(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            group = set()
            while True:
                w = stack.pop()
                on_stack.discard(w)
                group.add(w)
                if w == v:
                    break
            if len(group) > 1:
                groups.append(group)

    for v in sorted(graph):
        if v not in index:
            connect(v)

    cycles = []
    for group in groups:
        start = min(group)
        # breadth-first search inside the group for the shortest way back to start
        paths = {w: [start, w] for w in sorted(graph[start] & group)}
        frontier = list(paths)
        while start not in paths:
            nxt = []
            for v in frontier:
                for w in sorted(graph[v] & group):
                    if w not in paths:
                        paths[w] = [*paths[v], w]
                        nxt.append(w)
            frontier = nxt
        cycles.append(paths[start])
    return cycles


def test_find_cycles_reports_a_cycle_and_accepts_layers():
    layered = {"a": {"b", "c"}, "b": {"c"}, "c": set()}
    assert find_cycles(layered) == []
    circular = {"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}
    assert find_cycles(circular) == [["a", "b", "c", "a"]]


def test_import_graph_sees_lazy_and_relative_imports(tmp_path):
    pkg = tmp_path / "pkg"
    (pkg / "sub").mkdir(parents=True)
    (pkg / "__init__.py").write_text("")
    (pkg / "sub" / "__init__.py").write_text("")
    (pkg / "a.py").write_text("def f():\n    from pkg.sub import b\n")
    (pkg / "sub" / "b.py").write_text("from .. import a\nfrom .c import x\n")
    (pkg / "sub" / "c.py").write_text("x = 1\n")
    graph = import_graph(tmp_path, "pkg")
    assert graph["pkg.a"] == {"pkg.sub.b"}
    assert graph["pkg.sub.b"] == {"pkg.a", "pkg.sub.c"}
    assert find_cycles(graph) == [["pkg.a", "pkg.sub.b", "pkg.a"]]


def test_no_import_cycles_in_progan():
    graph = import_graph()
    assert len(graph) > 50  # the walk found the package
    cycles = find_cycles(graph)
    assert not cycles, "import cycles:\n" + "\n".join(" -> ".join(c) for c in cycles)


@pytest.mark.parametrize(
    "module, names",
    [
        # the split of train/loop.py (README and older scripts import these from there)
        ("progan.train.loop", ["configure", "train", "Trainer", "TrainingDiverged"]),
        ("progan.train.distributed", ["launch_local", "Dist", "shard_offsets"]),
        ("progan.data.sources", ["Source", "Entry", "Cifar10Source", "open_source"]),
    ],
)  # fmt: skip
def test_old_import_paths_still_work(module, names):
    mod = importlib.import_module(module)
    for name in names:
        assert hasattr(mod, name), f"{module}.{name}"

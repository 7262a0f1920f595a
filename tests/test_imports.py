"""No import circle among drawzoo's modules: each one's imports of the others, read with `ast`.

An import counts wherever it is: at module level, inside a function (a lazy import still needs
the other module), and with ``typing`` also inside ``if TYPE_CHECKING:`` (two modules that name
each other's types still depend on each other, as evaluation.py and models/base.py once did).
"""

import ast
from pathlib import Path

import pytest

import drawzoo

PACKAGE = Path(drawzoo.__file__).resolve().parent


def _name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


MODULES = {_name(path): path for path in sorted(PACKAGE.rglob("*.py"))}


def _type_checking(test: ast.expr) -> bool:
    return isinstance(test, ast.Name) and test.id == "TYPE_CHECKING" or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING")


def _import_nodes(node: ast.AST, typing: bool):
    """Every import statement under `node`, those in ``if TYPE_CHECKING:`` only with `typing`."""
    for child in ast.iter_child_nodes(node):
        if isinstance(child, ast.If) and _type_checking(child.test) and not typing:
            for other in child.orelse:
                yield from _import_nodes(other, typing)
            continue
        if isinstance(child, (ast.Import, ast.ImportFrom)):
            yield child
        yield from _import_nodes(child, typing)


def _targets(module: str, node: ast.Import | ast.ImportFrom) -> list[str]:
    """The drawzoo modules `node` in `module` names: ``from P import x`` is P.x where that is a
    module, else P (its ``__init__``); relative imports are resolved against `module`'s package."""
    if isinstance(node, ast.Import):
        return [alias.name for alias in node.names]
    start = node.module
    if node.level:
        package = module.split(".")[:None if MODULES[module].name == "__init__.py" else -1]
        package = ".".join(package[:len(package) - node.level + 1])
        start = f"{package}.{node.module}" if node.module else package
    return [f"{start}.{a.name}" if f"{start}.{a.name}" in MODULES else start for a in node.names]


def import_graph(typing: bool) -> dict[str, set[str]]:
    """``{module: the drawzoo modules its import statements run}``. Importing ``a.b.c`` runs the
    packages ``a.b`` and ``a`` first, except those the importer is inside (they are running
    already); a package's ``__init__`` importing its own submodules is an edge like any other."""
    graph = {}
    for module, path in MODULES.items():
        edges = graph[module] = set()
        for node in _import_nodes(ast.parse(path.read_text(), str(path)), typing):
            for target in _targets(module, node):
                while target and target not in MODULES:  # an attribute of a module: the module
                    target = target.rpartition(".")[0]
                for prefix in _prefixes(target):
                    if prefix != module and not module.startswith(prefix + "."):
                        edges.add(prefix)
    return graph


def _prefixes(target: str) -> list[str]:
    """``drawzoo.models.base`` -> itself, ``drawzoo.models``, ``drawzoo``; nothing outside drawzoo."""
    parts = target.split(".") if target else []
    return [".".join(parts[:n]) for n in range(len(parts), 0, -1) if parts[0] == "drawzoo"]


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One cycle of `graph` as ``[a, b, ..., a]``, or None."""
    done, path = set(), []

    def visit(node):
        if node in path:
            return path[path.index(node):] + [node]
        if node in done:
            return None
        path.append(node)
        for target in sorted(graph.get(node, ())):
            if (cycle := visit(target)) is not None:
                return cycle
        path.pop()
        done.add(node)
        return None

    for node in sorted(graph):
        if (cycle := visit(node)) is not None:
            return cycle
    return None


def test_the_graph_reads_relative_lazy_and_typing_imports():
    graph, typed = import_graph(typing=False), import_graph(typing=True)
    assert {"drawzoo.models.base", "drawzoo.models.draw", "drawzoo.models.vae"} <= graph["drawzoo.models"]
    assert "drawzoo.attention" in graph["drawzoo.models.base"]  # from ..attention import ...
    assert "drawzoo.distributed" in graph["drawzoo.evaluation"]  # from . import distributed
    assert "drawzoo.pictures" in graph["drawzoo.cli"]  # imported inside a function
    assert "drawzoo.models.base" not in graph["drawzoo.registry"]  # only under TYPE_CHECKING ...
    assert {"drawzoo.models.base", "drawzoo.models"} <= typed["drawzoo.registry"]  # ... counted with typing
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]


@pytest.mark.parametrize("typing", [False, True], ids=["at run time", "with type hints"])
def test_no_import_circle(typing):
    cycle = find_cycle(import_graph(typing))
    assert cycle is None, "import circle: " + " -> ".join(cycle)

"""No import circle among drawzoo's modules: each one's imports of the others, read with `ast`.

An import counts wherever it is: at module level, inside a function (a lazy import still needs
the other module), and with ``typing`` also inside ``if TYPE_CHECKING:`` (two modules that name
each other's types still depend on each other, as evaluation.py and models/base.py once did).
"""

import ast
import importlib
import subprocess
import sys
from pathlib import Path

import pytest

import drawzoo


def _modules(package: Path) -> dict[str, Path]:
    """``{dotted name: file}`` of every module of `package` (a folder with ``__init__.py``)."""
    modules = {}
    for path in sorted(package.rglob("*.py")):
        parts = path.relative_to(package.parent).with_suffix("").parts
        modules[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = path
    return modules


def _type_checking(test: ast.expr) -> bool:
    return isinstance(test, ast.Name) and test.id == "TYPE_CHECKING" or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING")


def _import_nodes(nodes, typing: bool):
    """Every import statement in or under `nodes`, those in ``if TYPE_CHECKING:`` only with `typing`."""
    for node in nodes:
        if isinstance(node, ast.If) and _type_checking(node.test) and not typing:
            yield from _import_nodes(node.orelse, typing)
            continue
        if isinstance(node, (ast.Import, ast.ImportFrom)):
            yield node
        yield from _import_nodes(ast.iter_child_nodes(node), typing)


def _targets(module: str, is_package: bool, node: ast.Import | ast.ImportFrom, modules) -> list[str]:
    """What `node` in `module` names: ``from P import x`` is P.x where that is a module, else P
    (its ``__init__``); a relative import is resolved against `module`'s package."""
    if isinstance(node, ast.Import):
        return [alias.name for alias in node.names]
    start = node.module
    if node.level:
        package = module.split(".")[:None if is_package else -1]
        package = ".".join(package[:len(package) - node.level + 1])
        start = f"{package}.{node.module}" if node.module else package
    return [f"{start}.{a.name}" if f"{start}.{a.name}" in modules else start for a in node.names]


def import_graph(package: Path, typing: bool) -> dict[str, set[str]]:
    """``{module: the modules of `package` its import statements run}``. Importing ``a.b.c`` runs
    the packages ``a.b`` and ``a`` first, except those the importer is inside (they are running
    already); a package's ``__init__`` importing its own submodules is an edge like any other."""
    modules = _modules(package)
    graph = {}
    for module, path in modules.items():
        edges = graph[module] = set()
        for node in _import_nodes([ast.parse(path.read_text(), str(path))], typing):
            for target in _targets(module, path.name == "__init__.py", node, modules):
                while target and target not in modules:  # an attribute of a module: the module
                    target = target.rpartition(".")[0]
                parts = target.split(".") if target else []
                for prefix in (".".join(parts[:n]) for n in range(len(parts), 0, -1)):
                    if prefix != module and not module.startswith(prefix + "."):
                        edges.add(prefix)
    return graph


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


def test_the_graph_reads_relative_lazy_and_typing_imports(tmp_path):
    files = {
        "__init__.py": "from .a import f\n",
        "a.py": "import os\nfrom . import b\n",
        "b.py": "def g():\n    from .sub.c import h\n",
        "sub/__init__.py": "",
        "sub/c.py": "from typing import TYPE_CHECKING\nfrom .. import a\nif TYPE_CHECKING:\n    from .d import x\n"
                    "else:\n    import pkg.b\n",
        "sub/d.py": "from .c import h\nfrom ..sub import c\n",
    }
    for name, text in files.items():
        (tmp_path / "pkg" / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / "pkg" / name).write_text(text)
    assert import_graph(tmp_path / "pkg", typing=False) == {
        "pkg": {"pkg.a"}, "pkg.a": {"pkg.b"}, "pkg.b": {"pkg.sub", "pkg.sub.c"}, "pkg.sub": set(),
        "pkg.sub.c": {"pkg.a", "pkg.b"}, "pkg.sub.d": {"pkg.sub.c"}}
    assert import_graph(tmp_path / "pkg", typing=True)["pkg.sub.c"] == {"pkg.a", "pkg.b", "pkg.sub.d"}
    assert find_cycle(import_graph(tmp_path / "pkg", typing=False)) == ["pkg.a", "pkg.b", "pkg.sub.c", "pkg.a"]
    assert find_cycle({"a": {"b"}, "b": set()}) is None


@pytest.mark.parametrize("typing", [False, True], ids=["at run time", "with type hints"])
def test_no_import_circle(typing):
    cycle = find_cycle(import_graph(Path(drawzoo.__file__).resolve().parent, typing))
    assert cycle is None, "import circle: " + " -> ".join(cycle)


def test_the_top_level_holds_the_public_face_and_what_the_parts_share():
    top = sorted(p.stem for p in Path(drawzoo.__file__).resolve().parent.glob("*.py") if not p.stem.startswith("__"))
    assert top == ["checkpoints", "config", "distributed", "errors", "files", "memory", "pretrained", "registry"]


def test_a_moved_module_still_imports_by_its_old_name():
    """``import drawzoo.OLD``, ``from drawzoo import OLD``, ``drawzoo.OLD``: the module at its new home, with a
    DeprecationWarning naming it; in a fresh interpreter, where nothing imported an old name yet."""
    code = """if True:
        import importlib, sys, warnings, drawzoo
        for old, new in drawzoo.MOVED.items():
            new = importlib.import_module("drawzoo." + new)
            with warnings.catch_warnings(record=True) as caught:
                warnings.simplefilter("always")
                a = importlib.import_module("drawzoo." + old)
                exec(f"from drawzoo import {old} as b; import drawzoo.{old} as c", globals())
                d = getattr(drawzoo, old)
            assert a is b is c is d is new, (old, a, b, c, d, new)
            assert new.__spec__.name == new.__name__ != "drawzoo." + old, new
            assert any(issubclass(w.category, DeprecationWarning) and new.__name__ in str(w.message)
                       for w in caught), (old, [str(w.message) for w in caught])
        print(len(drawzoo.MOVED))
    """
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == [str(len(drawzoo.MOVED))] and len(drawzoo.MOVED) == 16


def test_an_unknown_module_is_still_an_import_error():
    with pytest.raises(ModuleNotFoundError, match="drawzoo.nothing_here"):
        importlib.import_module("drawzoo.nothing_here")
    with pytest.raises(AttributeError, match="nothing_here"):
        drawzoo.nothing_here  # noqa: B018

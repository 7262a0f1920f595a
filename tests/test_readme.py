"""The code of README.md and of the documentation pages (docs/**/*.md) runs as written.

- Every ``python`` snippet of a page runs, in order, in one namespace per page, in a fresh working
  folder (relative paths such as ``runs/draw.pt`` land there; ``benchmarks/`` is linked in), on the
  real data of ``$DRAWZOO_DATA``; every ``expr.shape  # [..]`` comment in it is the shape the
  expression has. A ``toml`` snippet whose first line is ``# NAME.toml`` is that file there.
- Every ``pycon`` snippet (``>>>`` lines and the output they print) runs in the same namespace, in
  its place among the python snippets, as a doctest (``...`` stands for any text, whitespace may
  differ): an output shown on a page that the code no longer prints fails here.
- Every ``drawzoo ...`` command line of a ``bash`` snippet parses with the command's own parser (a
  renamed or removed option fails here), and every ``python benchmarks/X.py`` names a script that exists.
- Every ``toml`` snippet reads: a recipe through `drawzoo.load_recipe`, anything else as TOML.

`snippets` and `run_snippets` run the snippets of one section (tests/test_masks.py uses them).
"""

import doctest
import re
import shlex
import sys
import tomllib
from pathlib import Path

import pytest

import drawzoo
from drawzoo.cli import build_parser
from drawzoo.cli.train import model_to_train
from tests.test_data import real_data

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"
DOCS = ROOT / "docs"
PAGES = [README, *sorted(p for p in DOCS.rglob("*.md") if "_build" not in p.relative_to(DOCS).parts)]
FENCE = re.compile(r"^```([^\n`]*)\n(.*?)^```[ \t]*$", re.MULTILINE | re.DOTALL)
HEADING = re.compile(r"^(#{1,6}) +(.+?) *$", re.MULTILINE)
SHAPE_COMMENT = re.compile(r"^(?P<expr>\S.*\.shape)\s+# \[(?P<dims>[\d, ]+)\]", re.MULTILINE)
SECTION = "## Using drawzoo models in your own Pyro code"
#: Pages whose every snippet a test of its own runs, with assertions of its own.
RUN_ELSEWHERE = {"pyro.md": SECTION, "masks.md": "# Partially observed images: masks, inpainting, conditional NLL"}


def page_name(page: Path) -> str:
    return str(page.relative_to(ROOT))


def blocks(text: str) -> list[tuple[str, str]]:
    """``(language, code)`` of every fenced block of a Markdown text, in order."""
    return [(m[1].strip().split(" ")[0], m[2]) for m in FENCE.finditer(text)]


def headings(text: str) -> list[tuple[int, int, str]]:
    """``(offset, level, title)`` of every heading outside fenced blocks."""
    fenced = [m.span() for m in FENCE.finditer(text)]
    return [(m.start(), len(m[1]), m[2]) for m in HEADING.finditer(text)
            if not any(a <= m.start() < b for a, b in fenced)]


def section_text(section: str) -> tuple[Path, str]:
    """The page holding the heading `section` (its title, with or without the leading #'s) and the
    text under it, up to the next heading of the same or a higher level."""
    title = section.lstrip("#").strip()
    for page in PAGES:
        text = page.read_text()
        found = headings(text)
        for i, (start, level, name) in enumerate(found):
            if name == title:
                end = next((s for s, lv, _ in found[i + 1:] if lv <= level), len(text))
                return page, text[start:end]
    raise AssertionError(f"no page has a section {title!r}")


RUNS = ("python", "pycon")  #: the snippets that run: python code, and doctests of what it prints
DOCTEST_FLAGS = doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE


def snippets(section: str) -> list[tuple[str, str]]:
    """``(language, code)`` of the python and pycon snippets of `section`, in order."""
    return [(language, code) for language, code in blocks(section_text(section)[1]) if language in RUNS]


def run_python(code: str, label: str, namespace: dict) -> None:
    exec(compile(code, label, "exec"), namespace)
    for match in SHAPE_COMMENT.finditer(code):
        shape = tuple(eval(match["expr"], namespace))
        expected = tuple(int(d) for d in match["dims"].split(","))
        assert shape == expected, f"{label}: {match['expr']} is {list(shape)}, the page says {list(expected)}"


def run_pycon(code: str, label: str, namespace: dict) -> None:
    """Run a ``>>>`` session in `namespace` (kept for the snippets after it); every output it shows
    must be what the code prints."""
    test = doctest.DocTestParser().get_doctest(code, namespace, label, label, 0)
    assert test.examples, f"{label}: a pycon snippet without >>> lines"
    report = []
    runner = doctest.DocTestRunner(optionflags=DOCTEST_FLAGS)
    result = runner.run(test, out=report.append, clear_globs=False)
    namespace.update(test.globs)  # DocTest ran on a copy: what the session defined is the page's too
    assert not result.failed, f"{label}: the page shows an output the code does not print:\n" + "".join(report)


def run_snippet(language: str, code: str, label: str, namespace: dict) -> None:
    (run_pycon if language == "pycon" else run_python)(code, label, namespace)


def run_snippets(section: str, monkeypatch, at_least: int = 1) -> dict:
    """Run the python snippets of `section` in order, in one namespace, checking their
    ``.shape  # [..]`` comments; returns the namespace."""
    monkeypatch.setenv("DRAWZOO_DATA", str(real_data()))
    page, _ = section_text(section)
    code = snippets(section)
    assert len(code) >= at_least
    namespace: dict = {}
    for i, (language, block) in enumerate(code):
        run_snippet(language, block, f"{page_name(page)} snippet {i + 1}", namespace)
    return namespace


def test_the_pyro_snippets_run_as_written(monkeypatch):
    namespace = run_snippets(SECTION, monkeypatch, at_least=7)
    assert namespace["m2"].pyro_name != namespace["m"].pyro_name


def _workdir(tmp_path: Path, monkeypatch) -> Path:
    """A fresh working folder with the repository's benchmarks/ in it."""
    (tmp_path / "benchmarks").symlink_to(ROOT / "benchmarks")
    monkeypatch.chdir(tmp_path)
    return tmp_path


def _write_named_toml(code: str, folder: Path) -> None:
    first = code.split("\n", 1)[0]
    if re.fullmatch(r"# [\w.-]+\.toml", first):
        (folder / first[2:]).write_text(code)


def _colour_mnist(folder: Path) -> None:
    """data/colour_mnist, as benchmarks/colour_mnist.py writes it (fewer pictures)."""
    sys.path.insert(0, str(ROOT / "benchmarks"))
    try:
        import colour_mnist
    finally:
        sys.path.pop(0)
    assert colour_mnist.main(["--n", "60", "--out", str(folder / "data" / "colour_mnist")]) == 0


PYTHON_PAGES = [p for p in PAGES if any(language in RUNS for language, _ in blocks(p.read_text()))]


@pytest.mark.parametrize("page", PYTHON_PAGES, ids=page_name)
def test_every_python_snippet_of_the_page_runs_as_written(page, tmp_path, monkeypatch):
    text = page.read_text()
    if page.name in RUN_ELSEWHERE:
        assert page.parent == DOCS and snippets(RUN_ELSEWHERE[page.name]) == [
            (language, code) for language, code in blocks(text) if language in RUNS], f"{page.name}: some snippets run nowhere"
        pytest.skip(f"run by the test of {RUN_ELSEWHERE[page.name]!r}")
    if page.name == "pretrained.md" and not drawzoo.list_pretrained():
        pytest.skip("no pretrained weights installed (drawzoo/weights/manifest.json)")
    monkeypatch.setenv("DRAWZOO_DATA", str(real_data()))
    folder = _workdir(tmp_path, monkeypatch)
    if "data/colour_mnist" in text:
        _colour_mnist(folder)
    namespace: dict = {}
    count = 0
    for language, code in blocks(text):
        if language == "toml":
            _write_named_toml(code, folder)
        elif language in RUNS:
            count += 1
            run_snippet(language, code, f"{page_name(page)} snippet {count}", namespace)


def command_lines(code: str) -> list[list[str]]:
    """The commands of a bash snippet: continuation lines joined, comments dropped, ``&&`` split."""
    commands = []
    for line in code.replace("\\\n", " ").splitlines():
        words = shlex.split(line, comments=True)
        while words:
            cut = words.index("&&") if "&&" in words else len(words)
            commands.append(words[:cut])
            words = words[cut + 1:]
    return commands


def drawzoo_argv(words: list[str]) -> list[str] | None:
    """The arguments of the ``drawzoo`` command that `words` runs, if it runs one."""
    if words and words[0] == "drawzoo":
        return words[1:]
    if "-m" in words and words[words.index("-m") + 1:][:1] == ["drawzoo"]:  # torchrun ... -m drawzoo, python -m drawzoo
        return words[words.index("-m") + 2:]
    return None


BASH = [(page, code) for page in PAGES for language, code in blocks(page.read_text()) if language == "bash"]


@pytest.mark.parametrize("page", sorted({page for page, _ in BASH}), ids=page_name)
def test_every_command_line_of_the_page_parses(page, tmp_path, monkeypatch, capsys):
    folder = _workdir(tmp_path, monkeypatch)
    for language, code in blocks(page.read_text()):
        if language == "toml":
            _write_named_toml(code, folder)
        if language != "bash":
            continue
        for words in command_lines(code):
            scripts = [w for w in words if w.startswith("benchmarks/") and w.endswith((".py", ".sh"))]
            for script in scripts:
                assert (ROOT / script).is_file(), f"{page_name(page)}: {' '.join(words)}: no {script}"
            argv = drawzoo_argv(words)
            if argv is None:
                continue
            try:
                build_parser(model_to_train(argv)).parse_args(argv)
            except SystemExit as e:
                assert e.code == 0, f"{page_name(page)}: drawzoo {shlex.join(argv)}: {capsys.readouterr().err}"


@pytest.mark.parametrize("page", sorted({p for p in PAGES if any(lang == "toml" for lang, _ in blocks(p.read_text()))}),
                         ids=page_name)
def test_every_toml_snippet_reads(page, tmp_path):
    for i, (language, code) in enumerate(blocks(page.read_text())):
        if language != "toml":
            continue
        data = tomllib.loads(code)
        if "project" not in data:  # a recipe
            path = tmp_path / f"snippet{i}.toml"
            path.write_text(code)
            drawzoo.load_recipe(path)

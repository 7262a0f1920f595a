"""The documentation site builds strictly, and every link of README.md and the docs resolves.

- `sphinx-build -W --keep-going -n` (warnings are errors, nitpicky: every reference must resolve,
  every documented name must import): a rename that breaks a page or a docstring fails here. Skipped
  only where Sphinx is not installed (``pip install -e ".[docs]"``; ``.[test]`` includes it).
- Every relative link and picture of README.md, CHANGELOG.md, benchmarks/README.md and
  docs/**/*.md names a file that exists, and its ``#anchor`` a heading of that file as GitHub
  makes anchors (a page that includes a whole file has that file's headings too).
- The API reference documents every name of ``drawzoo.__all__`` and ``drawzoo.models.__all__``.
- README's benchmark table is benchmarks/README.md's latest quick-preset table, row for row.
- The build never reaches the network: it runs with sockets refused, and intersphinx reads every
  inventory from a file of docs/_inventories/, whose links point where each project documents
  the object (a sample of them checked here).
"""

import re
import resource
import subprocess
import sys
import time
import tomllib
from pathlib import Path

import pytest

import drawzoo
import drawzoo.models

from tests.test_readme import DOCS, FENCE, PAGES, README, ROOT, headings

MARKDOWN = [*PAGES, ROOT / "CHANGELOG.md", ROOT / "benchmarks" / "README.md"]
LINK = re.compile(r"(?<!!)\[[^\]]*\]\(([^)\s]+)\)|!\[[^\]]*\]\(([^)\s]+)\)|<img [^>]*src=\"([^\"]+)\"")
INCLUDE = re.compile(r"^```\{include\} (\S+)\n((?::[^\n]*\n)*)", re.MULTILINE)
BUILD_CPU_SECONDS = 120  # the build's CPU time (not wall time: the machine may be shared)
#: sphinx-build with every socket refused: a build that tries the network fails, with this message
OFFLINE_SPHINX = """
import socket, sys
def refuse(*args, **kwargs):
    raise OSError(f"the docs build tried the network: {args[:2]!r}")
socket.socket.connect = socket.socket.connect_ex = refuse
socket.create_connection = socket.getaddrinfo = refuse
from sphinx.cmd.build import main
sys.exit(main(sys.argv[1:]))
"""


def github_anchor(title: str, seen: dict) -> str:
    """The anchor GitHub (and myst_heading_anchors) gives a heading: lower case, punctuation
    dropped, spaces to hyphens; a repeated one gets -1, -2, ..."""
    slug = re.sub(r"[^\w\- ]", "", title.strip().lower()).replace(" ", "-")
    n = seen.get(slug, 0)
    seen[slug] = n + 1
    return slug if n == 0 else f"{slug}-{n}"


def anchors(path: Path) -> set[str]:
    text, seen = path.read_text(), {}
    found = {github_anchor(title, seen) for _, _, title in headings(text)}
    for m in INCLUDE.finditer(text):  # a whole file included: its headings are this page's too
        if ":start-after:" not in m[2] and ":end-before:" not in m[2]:
            found |= anchors((path.parent / m[1]).resolve())
    return found


def prose(text: str) -> str:
    """`text` without fenced blocks and inline code."""
    return re.sub(r"`[^`\n]*`", "", FENCE.sub("", text))


def relative_links(path: Path) -> list[str]:
    return [t for m in LINK.finditer(prose(path.read_text())) for t in m.groups() if t and
            not re.match(r"[a-z][a-z0-9+.-]*:", t)]  # http:, https:, mailto: ... are not checked offline


@pytest.mark.parametrize("page", MARKDOWN, ids=lambda p: str(p.relative_to(ROOT)))
def test_every_relative_link_resolves(page):
    broken = []
    for link in relative_links(page):
        target, _, anchor = link.partition("#")
        path = page if not target else (page.parent / target).resolve()
        if not path.exists():
            broken.append(f"{link}: no file {path.relative_to(ROOT) if path.is_relative_to(ROOT) else path}")
        elif anchor and (path.suffix != ".md" or anchor not in anchors(path)):
            broken.append(f"{link}: no heading #{anchor} in {path.relative_to(ROOT)}")
    assert not broken, f"{page.relative_to(ROOT)}: " + "; ".join(broken)


def test_readme_links_into_the_docs_and_stays_short():
    text = README.read_text()
    assert len(text.splitlines()) <= 250
    linked = {(README.parent / link.partition("#")[0]).resolve() for link in relative_links(README)}
    for page in ("docs/index.md", "docs/getting-started.md", "docs/cli.md", "docs/adding-a-model.md",
                 "docs/reliability.md", "benchmarks/README.md", "CHANGELOG.md"):
        assert ROOT / page in linked, page


def test_the_readme_tables_are_the_latest_benchmark_tables():
    bench = (ROOT / "benchmarks" / "README.md").read_text()
    rows = []
    for name in ("quick", "literature"):
        table = bench.split(f"<!-- {name}-table: README.md shows this table too -->\n", 1)[1].split(f"<!-- /{name}-table -->")[0]
        rows += [line for line in table.splitlines() if line.startswith("|")]
    readme = README.read_text().split("## The quick benchmark: a 15-minute demo", 1)[1].split("\n## ", 1)[0]
    assert [line for line in readme.splitlines() if line.startswith("|")] == rows


def test_the_readme_headline_is_the_campaign_table_of_benchmarks_readme():
    def campaign_table(path):
        return path.read_text().split("<!-- campaign-table -->\n", 1)[1].split("<!-- /campaign-table -->")[0]

    text = README.read_text()
    assert text.index("<!-- campaign-table -->") < text.index("## Python") < text.index("## The quick benchmark")
    assert campaign_table(README) == campaign_table(ROOT / "benchmarks" / "README.md")


def test_the_docs_build_strictly(tmp_path):
    pytest.importorskip("sphinx")
    pytest.importorskip("myst_parser")
    pytest.importorskip("furo")
    before, started = resource.getrusage(resource.RUSAGE_CHILDREN), time.monotonic()
    done = subprocess.run([sys.executable, "-c", OFFLINE_SPHINX, "-W", "--keep-going", "-n", "-q", "-E", "-b", "html",
                           "-d", str(tmp_path / "doctrees"), str(DOCS), str(tmp_path / "html")],
                          capture_output=True, text=True, cwd=ROOT)
    after, seconds = resource.getrusage(resource.RUSAGE_CHILDREN), time.monotonic() - started
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    assert done.returncode == 0, done.stderr[-8000:] or done.stdout[-8000:]
    print(f"docs built in {seconds:.1f} s ({cpu:.1f} s of CPU)")
    assert cpu < BUILD_CPU_SECONDS
    html = tmp_path / "html"
    for page in ("index", "getting-started", "tutorial", "cli", "draw", "vae", "api/drawzoo", "api/models", "benchmarks"):
        assert (html / f"{page}.html").is_file(), page
    assert '<div class="math notranslate nohighlight">' in (html / "draw.html").read_text()  # LaTeX, for MathJax
    assert 'href="https://docs.pytorch.org/docs/stable/tensors.html#torch.Tensor"' in (html / "api" / "models.html").read_text()
    assert (html / "_modules" / "drawzoo" / "registry.html").is_file()  # viewcode: the source of every documented module
    assert (html / "_static" / "custom.css").is_file()
    pretrained = (html / "pretrained.html").read_text()
    assert all(tag in pretrained for tag in drawzoo.list_pretrained()), "the pretrained page's table lacks a tag"
    cli = (tmp_path / "html" / "cli.html").read_text()
    assert "usage: drawzoo train" in cli and "--read-size" in cli  # the generated reference, DRAW's options too
    api = (tmp_path / "html" / "api" / "drawzoo.html").read_text()
    models = (tmp_path / "html" / "api" / "models.html").read_text()
    missing = [f"drawzoo.{name}" for name in drawzoo.__all__ if f'id="drawzoo.{name}"' not in api]
    missing += [f"drawzoo.models.{name}" for name in drawzoo.models.__all__ if f'id="drawzoo.models.{name}"' not in models]
    assert not missing, f"public names the API reference does not document: {missing}"
    # `name` in a docstring is a link or code (the default role), never italics; 1075 links before it
    pages = [(html / "api" / f"{page}.html").read_text() for page in
             ("drawzoo", "models", "attention", "data", "training", "evaluation", "figures")]
    assert not any("<cite>" in page for page in pages)
    assert sum(page.count('<a class="reference internal"') for page in pages) > 1400


TOY = """
.. py:module:: toy

.. py:class:: Widget

.. py:function:: helper(path)

.. py:module:: toy.other

.. py:class:: Gizmo

   .. py:method:: spin()

.. py:module:: toy.sub

.. py:function:: run(path, num_samples=1)

   Reads `path` with `helper`, as `other(x=1)` says, `num_samples` times; see `Widget`,
   `Gizmo.spin`, `spin` and `_private`.
"""


def build_toy(tmp_path, text: str):
    """Build a one-page project with drawzoo's docs extension and its default role: (return
    code, warnings, HTML)."""
    import io

    from sphinx.application import Sphinx

    (tmp_path / "src").mkdir(parents=True)
    (tmp_path / "src" / "conf.py").write_text(f"import sys\nsys.path.insert(0, {str(DOCS / '_ext')!r})\n"
                                              'extensions = ["drawzoo_docs"]\ndefault_role = "py:obj"\n'
                                              "nitpicky = True\n")
    (tmp_path / "src" / "index.rst").write_text(text)
    warnings = io.StringIO()
    app = Sphinx(tmp_path / "src", tmp_path / "src", tmp_path / "out", tmp_path / "doctrees", "html",
                 status=None, warning=warnings, freshenv=True, warningiserror=False)
    app.build()
    return app.statuscode, warnings.getvalue(), (tmp_path / "out" / "index.html").read_text()


def test_a_backticked_name_is_a_link_or_code_and_a_stale_one_fails(tmp_path):
    pytest.importorskip("sphinx")
    _, warnings, html = build_toy(tmp_path / "good", TOY)
    assert warnings == ""
    code = '<code class="xref py py-obj docutils literal notranslate"><span class="pre">{}</span></code>'
    # documented in a package above, or (dotted) in another module: links that Sphinx alone does not make
    for target in ("toy.helper", "toy.Widget", "toy.other.Gizmo.spin"):
        assert f'href="#{target}" title="{target}"' in html, target
    # a parameter, an expression, a private name, a method of another module's class: code
    for name in ("path", "num_samples", "other(x=1)", "_private", "spin"):
        assert code.format(name) in html and f'title="{name}"' not in html, name
    assert "<cite>" not in html
    for stale in ("`toy.gone`", "`Gadget`", "`drawzoo.attention.filterbank`"):  # dotted or class-like: fails
        _, warnings, _ = build_toy(tmp_path / stale.strip("`"), TOY + f"\n   See {stale}.\n")
        assert f"reference target not found: {stale.strip('`')}" in warnings, stale


def test_the_docs_dependencies_are_an_extra_that_test_pulls_in():
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    extras = project["optional-dependencies"]
    assert {re.split(r"[<>=~ \[]", r)[0] for r in extras["docs"]} == {"sphinx", "myst-parser", "furo"}
    assert not any(r.startswith(("sphinx", "myst", "furo")) for r in project["dependencies"])
    assert "drawzoo[docs]" in extras["test"]  # CI installs .[test]: the build test runs there


def test_intersphinx_reads_only_inventories_kept_in_the_repo():
    pytest.importorskip("sphinx")
    from sphinx.util.inventory import InventoryFile

    conf = {"__file__": str(DOCS / "conf.py")}
    exec(compile((DOCS / "conf.py").read_text(), str(DOCS / "conf.py"), "exec"), conf)
    assert "sphinx.ext.intersphinx" in conf["extensions"] and conf["intersphinx_timeout"] <= 1
    found = {}
    for name, (base, location) in conf["intersphinx_mapping"].items():
        path = Path(location)
        assert path.is_file() and path.parent == DOCS / "_inventories", f"{name}: {location} is no file of docs/_inventories"
        assert base.startswith("https://"), name
        with path.open("rb") as f:
            inventory = InventoryFile.load(f, base, lambda base, uri: base + uri)
        for role, items in inventory.items():
            for target, item in items.items():
                found[target] = (role, getattr(item, "uri", None) or item[2])
    expected = {  # where each project's documentation has these objects
        "torch.Tensor": "https://docs.pytorch.org/docs/stable/tensors.html#torch.Tensor",
        "torch.nn.Module": "https://docs.pytorch.org/docs/stable/generated/torch.nn.Module.html#torch.nn.Module",
        "torch.nn.modules.linear.Linear": "https://docs.pytorch.org/docs/stable/generated/torch.nn.Linear.html#torch.nn.Linear",
        "torch.dtype": "https://docs.pytorch.org/docs/stable/tensor_attributes.html#torch.dtype",
        "torch.utils.data.Dataset": "https://docs.pytorch.org/docs/stable/data.html#torch.utils.data.Dataset",
        "torch.zeros": "https://docs.pytorch.org/docs/stable/generated/torch.zeros.html#torch.zeros",
        "pyro.infer.SVI": "https://docs.pyro.ai/en/stable/inference_algos.html#pyro.infer.svi.SVI",
        "pyro.infer.Trace_ELBO": "https://docs.pyro.ai/en/stable/inference_algos.html#pyro.infer.trace_elbo.Trace_ELBO",
        "pyro.sample": "https://docs.pyro.ai/en/stable/primitives.html#pyro.primitives.sample",
        "pyro.poutine.trace": "https://docs.pyro.ai/en/stable/poutine.html#pyro.poutine.handlers.trace",
        "pyro.distributions.Normal": "https://docs.pyro.ai/en/stable/distributions.html#pyro.distributions.Normal",
        "pathlib.Path": "https://docs.python.org/3/library/pathlib.html#pathlib.Path",
        "int": "https://docs.python.org/3/library/functions.html#int",
        "str": "https://docs.python.org/3/library/stdtypes.html#str",
        "ValueError": "https://docs.python.org/3/library/exceptions.html#ValueError",
        "numpy.ndarray": "https://numpy.org/doc/stable/reference/generated/numpy.ndarray.html#numpy.ndarray",
    }
    assert {name: found.get(name, (None, None))[1] for name in expected} == expected

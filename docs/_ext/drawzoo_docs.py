"""Directives that write reference text from the code itself, so that the pages cannot drift from it.

``drawzoo-help``: the ``--help`` text of a ``drawzoo`` command, e.g. ``train draw`` or ``eval``,
from the command's own argparse parser (`drawzoo.cli.main`), at a fixed width of 88 columns, which
the page's code blocks show whole at 1280 pixels (docs/_static/custom.css).

Links to the Markdown files that a page includes whole (``drawzoo_included`` in conf.py: the
changelog page includes CHANGELOG.md, the benchmarks page benchmarks/README.md) resolve to that
page, so that a page links ``../benchmarks/README.md#speed`` as GitHub wants it and the site
follows the link to its own copy.

``drawzoo-config``: a table of a config dataclass's fields (field, type, default, help), e.g.
``drawzoo.TrainConfig`` or ``drawzoo.models.DrawConfig``, from the `drawzoo.config.param` help lines
that ``drawzoo train --help`` shows too.

``drawzoo-pretrained``: the table of the pretrained tags, from the manifest through
`drawzoo.list_pretrained` and `drawzoo.pretrained.info`: each tag's data set, test figures (with
their standard errors where measured), training run and recipe.

Around autodoc and intersphinx: napoleon reads Google-style sections of functions and classes
only (an attribute's ``#:`` line, "what it is: an example", is not "type: description"); names
that annotations spell by a module's alias (``Tensor``, ``np.ndarray``, ``nn.Module``,
``dist.Normal``, ``Figure``, ``PathLike``) are resolved as their full names, so that they link into
torch's, NumPy's, matplotlib's and Python's documentation like any other; tables of seven columns
or more get the class ``drawzoo-wide`` (smaller type, the first column kept in view while the
table scrolls).
"""

from __future__ import annotations

import contextlib
import dataclasses
import importlib
import io
import os
import re
import typing
from pathlib import Path

from docutils import nodes
from docutils.parsers.rst import Directive

WIDTH = "88"


def command_help(argv: list[str]) -> str:
    """What ``drawzoo ARGV --help`` prints."""
    from drawzoo.cli import main

    out, previous = io.StringIO(), os.environ.get("COLUMNS")
    os.environ["COLUMNS"] = WIDTH
    try:
        with contextlib.redirect_stdout(out), contextlib.suppress(SystemExit):
            main([*argv, "--help"])
    finally:
        if previous is None:
            del os.environ["COLUMNS"]
        else:
            os.environ["COLUMNS"] = previous
    text = out.getvalue()
    if not text.startswith("usage: drawzoo"):
        raise ValueError(f"drawzoo {' '.join(argv)} --help printed no usage: {text[:200]!r}")
    return text


class DrawzooHelp(Directive):
    """``drawzoo ARGS --help`` as a literal block."""

    optional_arguments = 1
    final_argument_whitespace = True

    def run(self):
        argv = self.arguments[0].split() if self.arguments else []
        text = command_help(argv)
        block = nodes.literal_block(text, text, language="text")
        return [block]


def _type_name(hint) -> str:
    """``int``, ``tuple[int, int, int]``, ``str | None``: the annotation as it is written."""
    return hint.__name__ if isinstance(hint, type) else str(hint).replace("typing.", "")


def config_rows(config_cls) -> list[tuple[str, str, str, str]]:
    """(field, type, default, help) of each field of a config dataclass, in declaration order."""
    hints = typing.get_type_hints(config_cls)
    return [(f.name, _type_name(hints[f.name]), repr(f.default), f.metadata.get("help", ""))
            for f in dataclasses.fields(config_cls)]


class DrawzooConfig(Directive):
    """A table of the fields of the config dataclass named by the argument (``module.Class``)."""

    required_arguments = 1

    def run(self):
        module, _, name = self.arguments[0].rpartition(".")
        config_cls = getattr(importlib.import_module(module), name)
        rows = config_rows(config_cls)
        table = nodes.table(classes=["drawzoo-config"])
        group = nodes.tgroup(cols=4)
        table += group
        for width in (14, 12, 14, 60):
            group += nodes.colspec(colwidth=width)
        head, body = nodes.thead(), nodes.tbody()
        group += head
        group += body
        for target, cells in ((head, ("field", "type", "default", "what it does")), *((body, r) for r in rows)):
            row = nodes.row()
            for i, text in enumerate(cells):
                entry = nodes.entry()
                entry += nodes.paragraph("", "", nodes.literal(text, text) if i < 3 and target is body else
                                         nodes.Text(text))
                row += entry
            target += row
        return [table]


def _figure(test: dict, key: str) -> str:
    """``92.46`` or ``92.46 ± 0.21``: a test figure with its standard error where measured."""
    se = f" ± {test[key + '_se']:.2f}" if key + "_se" in test else ""
    return f"{test[key]:.2f}{se}"


def pretrained_rows(pictures: dict[str, list[str]]) -> list[tuple]:
    """(tag, default, data, test -ELBO, test NLL, training, pictures) of every pretrained tag."""
    import drawzoo
    from drawzoo import pretrained

    rows = []
    for tag in drawzoo.list_pretrained():
        entry, t = pretrained.info(tag), pretrained.info(tag).test
        elbo = f"{_figure(t, 'neg_elbo')} ({t['images']:,} images)"
        nll = f"{_figure(t, 'nll')} (K={t['nll_samples']:,}, {t['nll_images']:,} images)" if "nll" in t else "-"
        run = entry.trained
        training = (f"{run.get('epochs', '?')} epochs (best {run.get('best_epoch', '?')}), {run.get('minutes', '?')} min "
                    f"on {run.get('machine', '?')}, {run.get('date', '?')}")
        rows.append((tag, entry.default, entry.data, elbo, nll, training, entry.recipe, entry.note,
                     pictures.get(tag, [])))
    return rows


class DrawzooPretrained(Directive):
    """The table of the pretrained tags, from the manifest. Each line of the content, ``TAG: FILE
    FILE ...``, names pictures (files beside the page) that the tag drew: shown small in its row."""

    has_content = True

    def run(self):
        import drawzoo

        page = Path(self.state.document.current_source).parent
        pictures = {}
        for line in self.content:
            tag, _, files = line.partition(":")
            if tag.strip() not in drawzoo.list_pretrained():
                raise self.error(f"drawzoo-pretrained: {tag.strip()!r} is no pretrained tag")
            for name in files.split():
                if not (page / name).is_file():
                    raise self.error(f"drawzoo-pretrained: no picture {name} beside the page")
            pictures[tag.strip()] = files.split()
        rows = pretrained_rows(pictures)
        if not rows:
            return [nodes.paragraph("", "No pretrained weights are installed (drawzoo/weights/manifest.json).")]
        table = nodes.table(classes=["drawzoo-pretrained"])
        group = nodes.tgroup(cols=5)
        table += group
        for width in (26, 14, 16, 20, 24):
            group += nodes.colspec(colwidth=width)
        head, body = nodes.thead(), nodes.tbody()
        group += head
        group += body
        row = nodes.row()
        for text in ("tag", "data", "test -ELBO (nats)", "test NLL (nats)", "pictures"):
            row += nodes.entry("", nodes.paragraph("", text))
        head += row
        for tag, default, data, elbo, nll, training, recipe, note, files in rows:
            row = nodes.row()
            first = nodes.paragraph("", "", nodes.strong("", "", nodes.literal(tag, tag)))
            if default:
                first += nodes.Text(" (default)")
            row += nodes.entry("", first)
            row += nodes.entry("", nodes.paragraph("", "", nodes.literal(data, data)))
            for figure in (elbo, nll):  # "92.46 ± 0.21" over "(K=1,000, 100 images)"
                value, _, detail = figure.partition(" (")
                cell = nodes.paragraph("", value)
                if detail:
                    cell += nodes.raw("", "<br>", format="html")
                    cell += nodes.inline("", f"({detail}", classes=["drawzoo-detail"])
                row += nodes.entry("", cell)
            shown = nodes.paragraph()
            for name in files:
                shown += nodes.image(uri=name, alt=f"{tag}: {name}", width="64px")
                shown += nodes.Text(" ")
            row += nodes.entry("", shown if files else nodes.paragraph("", "-"))
            body += row
            # the run, its recipe and the manifest's note: one line under the figures, across the table
            run = nodes.paragraph("", f"{training}; recipe ")
            run += nodes.literal(recipe, recipe)
            if note:
                run += nodes.Text(f". {note[0].upper()}{note[1:]}.")
            run["support_smartquotes"] = False  # the notes name options: --max-minutes, not an en dash
            wide = nodes.entry("", run, morecols=4, classes=["drawzoo-run"])
            body += nodes.row("", wide)
        return [table]


def mark_wide_tables(app, doctree) -> None:
    """Give the class ``drawzoo-wide`` to every table of seven columns or more."""
    for table in doctree.findall(nodes.table):
        groups = list(table.findall(nodes.tgroup))
        if groups and int(groups[0].get("cols", 0)) >= WIDE_TABLE:
            table["classes"].append("drawzoo-wide")


WIDE_TABLE = 7
#: How annotations spell other projects' names (an alias, or a name imported under TYPE_CHECKING)
ALIASES = {"Tensor": "torch.Tensor", "Figure": "matplotlib.figure.Figure", "PathLike": "os.PathLike",
           "Path": "pathlib.Path", "Dataset": "torch.utils.data.Dataset", "Image": "PIL.Image.Image",
           "EntryPoint": "importlib.metadata.EntryPoint",
           # other projects' classes that docstrings name short, as their modules import them
           "Predictive": "pyro.infer.Predictive", "RenyiELBO": "pyro.infer.RenyiELBO",
           "TraceTailAdaptive_ELBO": "pyro.infer.TraceTailAdaptive_ELBO",
           "ReweightedWakeSleep": "pyro.infer.ReweightedWakeSleep", "Subset": "torch.utils.data.Subset"}
PREFIXES = {"np.": "numpy.", "nn.": "torch.nn.", "dist.": "pyro.distributions.", "F.": "torch.nn.functional."}


def full_name(target: str) -> str | None:
    if target in ALIASES:
        return ALIASES[target]
    return next((full + target[len(short):] for short, full in PREFIXES.items() if target.startswith(short)), None)


def resolve_aliases(app, env, node, contnode):
    """A Python reference to ``Tensor``, ``np.ndarray``...: resolved as ``torch.Tensor``, ``numpy.ndarray``."""
    from sphinx.ext.intersphinx import missing_reference

    if node.get("refdomain") != "py" or not (target := full_name(node.get("reftarget", ""))):
        return None
    aliased = node.deepcopy()
    aliased["reftarget"] = target
    return missing_reference(app, env, aliased, contnode)


def napoleon_for_callables(app) -> None:
    """Napoleon for modules, classes and functions only: it would read an attribute's docstring
    "the tag without its model: ``attention_bmnist``" as a type ("the tag without its model")."""
    from sphinx.ext import napoleon

    listeners = app.events.listeners.get("autodoc-process-docstring", [])
    for listener in [x for x in listeners if x.handler is napoleon._process_docstring]:
        app.disconnect(listener.id)

    def process(app, what, name, obj, options, lines):
        if what not in ("attribute", "data", "property"):
            napoleon._process_docstring(app, what, name, obj, options, lines)

    app.connect("autodoc-process-docstring", process)


def link_included_files(app, doctree) -> None:
    """Point MyST's links to an included file (a path outside the docs) at the page including it."""
    from sphinx.addnodes import pending_xref

    root = Path(app.confdir).parent
    pages = {str((root / path).with_suffix("")): page for path, page in app.config.drawzoo_included.items()}
    for node in doctree.findall(pending_xref):
        if node.get("reftype") == "myst" and node.get("reftarget") in pages:
            node["reftarget"] = pages[node["reftarget"]]


def public_names() -> dict[str, str]:
    """``{where an object of drawzoo.__all__ is defined: its public name}``, e.g.
    ``drawzoo.training.config.TrainConfig: drawzoo.TrainConfig``."""
    import drawzoo

    names = {}
    for name in drawzoo.__all__:
        obj = getattr(drawzoo, name)
        names[f"{obj.__module__}.{obj.__qualname__}"] = f"drawzoo.{name}"
    return names


def resolve_public_name(app, env, node, contnode):
    """A reference (e.g. a type hint) to where a public object is defined resolves to its public
    name, the one the API reference documents it under."""
    public = public_names().get(node.get("reftarget"))
    if node.get("refdomain") != "py" or public is None:
        return None
    domain = env.get_domain("py")
    return domain.resolve_xref(env, node["refdoc"], app.builder, node["reftype"], public, node, contnode)


IDENTIFIER = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
#: A class-like name, ``ImageDataset`` or ``RenyiELBO``: a capital, then a lower-case letter somewhere
CLASS_LIKE = re.compile(r"[A-Z][A-Za-z0-9_]*[a-z][A-Za-z0-9_]*")


def _suffix_matches(env, target: str, module: str | None, members: bool) -> list[str]:
    """Documented objects named ``...TARGET``, from ``module`` outward: those inside the module
    (then its package, ...) where some are, else all of them. Without ``members`` (a bare
    lower-case name) only what is in scope counts: the functions, classes and data of the module
    itself or of a package above it, and a module of its own package. A parameter ``split`` is
    not ``GaussianPosterior.split``, a parameter ``config`` not the module `drawzoo.config`, and a
    parameter ``epoch`` in drawzoo.training not the function ``drawzoo.data.binarization.epoch``."""
    domain = env.get_domain("py")
    # an object documented under its public name is found once (drawzoo.data.ImageDataset, not
    # also as drawzoo.data.dataset.ImageDataset)
    found = [name for name, entry in domain.objects.items() if name.endswith("." + target) and not entry.aliased]
    scopes = module.split(".") if module else []
    if not members:
        above = {".".join(scopes[:depth]) for depth in range(1, len(scopes) + 1)}


        def in_scope(name: str) -> bool:
            parent = name.rsplit(".", 1)[0]
            return parent == module if domain.objects[name].objtype == "module" else parent in above

        found = [name for name in found if in_scope(name)]
    for depth in range(len(scopes), 0, -1):
        prefix = ".".join(scopes[:depth]) + "."
        inside = [name for name in found if name.startswith(prefix)]
        if inside:
            return inside
    return found


def resolve_short_name(app, env, node, contnode):
    """A Python reference that nothing else resolved (most are the default role's single
    backticks, `evaluate` or `path`), by this rule:

    - an expression (``evaluate(..., per_step=True)``, ``drawzoo train --recipe R``), or a private
      name (``_pass_weights``), is code: the literal as written, no link, no warning;
    - a name of ``drawzoo.__all__`` (`evaluate`, `CheckpointError`) links to its public name;
    - else the one documented object named ``...NAME`` (``NAME`` may be dotted:
      ``ZooModel.compile_steps``), searched from the reference's module outward, links to it;
    - a bare name that is not class-like (``path``, ``num_samples``, ``NAMES``) and that no
      documented object (or more than one) has: code, as written;
    - anything else, a class-like name or a dotted one that nothing documents, or one that is
      ambiguous, stays unresolved: the strict build fails on it.
    """
    if node.get("refdomain") != "py" or node.get("reftype") != "obj":
        return None  # a :class: or a type in a signature or a field must resolve as it is written
    target = node.get("reftarget", "")
    parts = target.split(".")
    if not all(IDENTIFIER.fullmatch(part) for part in parts):  # an expression: code
        return contnode
    if parts[-1].startswith("_") and not parts[-1].endswith("__") or target.startswith("_"):
        return contnode  # a private name: nothing documents it
    import drawzoo

    domain = env.get_domain("py")
    if len(parts) == 1 and target in drawzoo.__all__ and f"drawzoo.{target}" in domain.objects:
        return domain.resolve_xref(env, node["refdoc"], app.builder, node["reftype"], f"drawzoo.{target}",
                                   node, contnode)
    bare = len(parts) == 1
    members = not bare or bool(CLASS_LIKE.fullmatch(target))
    found = _suffix_matches(env, target, node.get("py:module"), members)
    if len(found) == 1:
        resolved = domain.resolve_xref(env, node["refdoc"], app.builder, "obj", found[0], node, contnode)
        if resolved is not None:
            return resolved
    if bare and not CLASS_LIKE.fullmatch(target):
        return contnode  # a parameter, a local, a constant nothing documents: code
    return None  # warned: "py:obj reference target not found"


def setup(app):
    app.add_config_value("drawzoo_included", {}, "env")
    app.setup_extension("sphinx.ext.napoleon")
    app.setup_extension("sphinx.ext.intersphinx")
    napoleon_for_callables(app)
    app.connect("doctree-read", link_included_files)
    app.connect("doctree-read", mark_wide_tables)
    app.connect("missing-reference", resolve_aliases, priority=400)
    app.connect("missing-reference", resolve_public_name)
    app.connect("missing-reference", resolve_short_name, priority=900)  # after intersphinx
    app.add_directive("drawzoo-help", DrawzooHelp)
    app.add_directive("drawzoo-config", DrawzooConfig)
    app.add_directive("drawzoo-pretrained", DrawzooPretrained)
    return {"parallel_read_safe": True, "parallel_write_safe": True}

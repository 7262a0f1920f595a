"""Directives that write reference text from the code itself, so that the pages cannot drift from it.

``drawzoo-help``: the ``--help`` text of a ``drawzoo`` command, e.g. ``train draw`` or ``eval``,
from the command's own argparse parser (`drawzoo.cli.main`), at a fixed width of 100 columns.

Links to the Markdown files that a page includes whole (``drawzoo_included`` in conf.py: the
changelog page includes CHANGELOG.md, the benchmarks page benchmarks/README.md) resolve to that
page, so that a page links ``../benchmarks/README.md#speed`` as GitHub wants it and the site
follows the link to its own copy.

``drawzoo-config``: a table of a config dataclass's fields (field, type, default, help), e.g.
``drawzoo.TrainConfig`` or ``drawzoo.models.DrawConfig``, from the `drawzoo.config.param` help lines
that ``drawzoo train --help`` shows too.
"""

from __future__ import annotations

import contextlib
import dataclasses
import importlib
import io
import os
import typing
from pathlib import Path

from docutils import nodes
from docutils.parsers.rst import Directive

WIDTH = "100"


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


def setup(app):
    app.add_config_value("drawzoo_included", {}, "env")
    app.connect("doctree-read", link_included_files)
    app.connect("missing-reference", resolve_public_name)
    app.add_directive("drawzoo-help", DrawzooHelp)
    app.add_directive("drawzoo-config", DrawzooConfig)
    return {"parallel_read_safe": True, "parallel_write_safe": True}

"""README's "Using drawzoo models in your own Pyro code": every snippet runs, in order, as written,
and every ``expr.shape  # [..]`` comment in it is the shape the expression has."""

import re
from pathlib import Path


from tests.test_data import real_data

README = Path(__file__).resolve().parents[1] / "README.md"
SECTION = "## Using drawzoo models in your own Pyro code"
SHAPE_COMMENT = re.compile(r"^(?P<expr>\S.*\.shape)\s+# \[(?P<dims>[\d, ]+)\]", re.MULTILINE)


def snippets(section: str) -> list[str]:
    text = README.read_text()
    assert section in text, f"README has no section {section!r}"
    body = text.split(section, 1)[1].split("\n## ", 1)[0]
    return re.findall(r"```python\n(.*?)```", body, re.DOTALL)


def run_snippets(section: str, monkeypatch, at_least: int = 1) -> dict:
    """Run the python snippets of README's `section` in order, in one namespace, checking their
    ``.shape  # [..]`` comments; returns the namespace."""
    monkeypatch.setenv("DRAWZOO_DATA", str(real_data()))
    blocks = snippets(section)
    assert len(blocks) >= at_least
    namespace: dict = {}
    for i, block in enumerate(blocks):
        exec(compile(block, f"README.md snippet {i + 1}", "exec"), namespace)
        for match in SHAPE_COMMENT.finditer(block):
            shape = tuple(eval(match["expr"], namespace))
            expected = tuple(int(d) for d in match["dims"].split(","))
            assert shape == expected, f"snippet {i + 1}: {match['expr']} is {list(shape)}, README says {list(expected)}"
    return namespace


def test_the_pyro_snippets_run_as_written(monkeypatch):
    namespace = run_snippets(SECTION, monkeypatch, at_least=7)
    assert namespace["m2"].pyro_name != namespace["m"].pyro_name

"""`benchmarks/nll_mnist.py` end to end on the real data, with its tiny "smoke" preset."""

import importlib.util
import json
import os
import sys
from pathlib import Path

import pytest
import torch

from drawzoo.batching import random_subset
from tests.conftest import fake_distribution

SCRIPT = Path(__file__).resolve().parents[1] / "benchmarks" / "nll_mnist.py"


def _script():
    spec = importlib.util.spec_from_file_location("nll_mnist", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


@pytest.fixture
def real_data():
    if not os.environ.get("DRAWZOO_DATA"):
        if os.environ.get("CI"):
            pytest.fail("DRAWZOO_DATA is not set under CI: the real binarized MNIST is missing")
        pytest.skip("DRAWZOO_DATA is not set")


def test_smoke_preset_prints_the_table_and_writes_its_files(real_data, tmp_path, capsys, monkeypatch):
    fake_distribution(tmp_path / "site")  # a third-party model joins by its registry name
    monkeypatch.syspath_prepend(str(tmp_path / "site"))
    out = tmp_path / "out"
    assert _script().main(["--preset", "smoke", "--out", str(out), "--models", "draw,vae,mymodel"]) == 0
    printed = capsys.readouterr().out
    for label in ("DRAW (attention)", "DRAW (no attention)", "| VAE |", "| mymodel |", "<= 80.97", "<= 87.40"):
        assert label in printed
    rows = json.loads((out / "results.json").read_text())["rows"]
    assert [r["label"] for r in rows] == ["DRAW (attention)", "DRAW (no attention)", "VAE", "mymodel"]
    for r in rows:
        assert r["test_images"] == 200 and r["num_samples"] == 3
        assert r["test_nll"] <= r["test_neg_elbo"] and r["parameters"] > 0
        assert (out / f"samples_{r['label'].lower().replace(' ', '_').replace('(', '').replace(')', '')}.png").exists()
    assert (out / "results.md").read_text().count("\n|") == 6  # header, rule, 4 rows


def test_subsets_are_seeded_random_samples_not_the_first_rows():
    sorted_split = torch.arange(10_000)  # like the test split, sorted by label
    subset = random_subset(sorted_split, 2000, seed=0)
    assert len(subset) == 2000 and len(set(subset.tolist())) == 2000
    assert subset.max() > 9000 and not torch.equal(subset, sorted_split[:2000])
    assert torch.equal(subset, random_subset(sorted_split, 2000, seed=0))


def test_unknown_models_are_refused(real_data, capsys):
    with pytest.raises(Exception, match="unknown model 'nope'"):
        _script().select_runs(_script().PRESETS["smoke"], ["draw", "nope"])

"""What a Python user expects of an installed library: version, typing marker, licence, extras."""

import importlib.metadata
import importlib.util
from pathlib import Path

import pytest
import torch

import drawzoo

ROOT = Path(__file__).resolve().parents[1]


def test_version_is_the_installed_distributions():
    assert drawzoo.__version__ == importlib.metadata.version("drawzoo")


def test_the_package_is_typed_and_licensed():
    assert (Path(drawzoo.__file__).parent / "py.typed").is_file()
    assert "MIT License" in (ROOT / "LICENSE").read_text()
    assert importlib.metadata.metadata("drawzoo")["License"] == "MIT"


def test_tensorboard_is_an_extra_pulled_in_by_test():
    requires = importlib.metadata.requires("drawzoo")
    assert not any(r.startswith("tensorboard") and "extra" not in r for r in requires)
    assert any(r.startswith("tensorboard") and 'extra == "tensorboard"' in r for r in requires)


def test_matplotlib_is_the_plots_extra_which_tensorboard_and_test_pull_in():
    requires = importlib.metadata.requires("drawzoo")
    assert not any(r.startswith("matplotlib") and "extra" not in r for r in requires)
    assert any(r.startswith("matplotlib") and 'extra == "plots"' in r for r in requires)
    for extra in ("tensorboard", "test"):  # TensorBoard's KL per step is a plot
        assert f'drawzoo[plots]; extra == "{extra}"' in requires


def test_asking_for_summaries_without_tensorboard_is_a_clear_error(monkeypatch, tmp_path):
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "tensorboard" else real(name, *a))
    m = drawzoo.load("vae", hidden_dim=8, latent_dim=2)
    x = torch.zeros(4, 1, 28, 28)
    with pytest.raises(drawzoo.DrawzooError, match=r"pip install 'drawzoo\[tensorboard\]'"):
        drawzoo.train(m, x, epochs=1, batch_size=2, lr=1e-3, log_dir=tmp_path / "tb", progress=False)
    assert not (tmp_path / "tb").exists()

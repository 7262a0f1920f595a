import importlib.util
import sys
import textwrap
from pathlib import Path

import pyro
import pytest
import torch


@pytest.fixture(autouse=True)
def _fresh_pyro():
    """Each test starts from an empty param store and a fixed seed."""
    pyro.clear_param_store()
    pyro.set_rng_seed(0)
    yield
    pyro.clear_param_store()


def load_script(name: str):
    """benchmarks/`name`.py as a module (registered in sys.modules: dataclasses look their module up there)."""
    spec = importlib.util.spec_from_file_location(name, Path(__file__).resolve().parents[1] / "benchmarks" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


def binary_images(n, shape=(1, 28, 28), seed=0):
    """`n` random binary images [n, C, H, W] (float)."""
    g = torch.Generator().manual_seed(seed)
    return (torch.rand(n, *shape, generator=g) < 0.3).float()


def fake_distribution(root, model_name="mymodel", source=None, target="TinyVAE"):
    """A third-party package `zoo_extra` declaring a drawzoo.models entry point: `target` of its
    `source` (default: a small VAE, TinyVAE)."""
    (root / "zoo_extra").mkdir(parents=True)
    (root / "zoo_extra" / "__init__.py").write_text(source or textwrap.dedent('''
        from dataclasses import dataclass
        from drawzoo.models import VAE, VAEConfig

        @dataclass(frozen=True)
        class TinyConfig(VAEConfig):
            hidden_dim: int = 7
            latent_dim: int = 2

        class TinyVAE(VAE):
            Config = TinyConfig
            zoo_name = "mymodel"
    '''))
    dist_info = root / "zoo_extra-0.1.dist-info"
    dist_info.mkdir()
    (dist_info / "METADATA").write_text("Metadata-Version: 2.1\nName: zoo-extra\nVersion: 0.1\n")
    (dist_info / "entry_points.txt").write_text(f"[drawzoo.models]\n{model_name} = zoo_extra:{target}\n")

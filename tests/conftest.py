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


def binary_images(n, shape=(1, 28, 28), seed=0):
    """`n` random binary images [n, C, H, W] (float)."""
    g = torch.Generator().manual_seed(seed)
    return (torch.rand(n, *shape, generator=g) < 0.3).float()

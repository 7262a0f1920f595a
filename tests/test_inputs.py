import numpy as np
import pytest
import torch

import drawzoo
from drawzoo import InputError
from tests.conftest import binary_images


@pytest.fixture(params=["draw", "vae"])
def model(request):
    kw = dict(T=2, hidden_dim=8, latent_dim=2) if request.param == "draw" else dict(hidden_dim=8, latent_dim=2)
    return drawzoo.load(request.param, image_shape=(1, 8, 10), **kw)


@pytest.mark.parametrize("bad,match", [
    (torch.rand(8, 10), r"4 dimensions .* got 2"),
    (torch.rand(1, 8, 10), r"got 3: \[1, 8, 10\] \(a single image\? add a batch dimension"),
    (torch.rand(2, 1, 10, 8), r"shape \[2, 1, 10, 8\] but the model expects \[2, 1, 8, 10\]"),
    (torch.rand(2, 3, 8, 10), r"shape \[2, 3, 8, 10\] but the model expects \[2, 1, 8, 10\]"),
    (torch.rand(2, 8, 10, 1), r"channels last\? use x.permute\(0, 3, 1, 2\)"),
    (torch.rand(0, 1, 8, 10), "empty batch"),
    (torch.rand(2, 1, 8, 10) * 2, r"values in \[0, 1\], got min .* max"),
    (torch.rand(2, 1, 8, 10) - 0.5, r"values in \[0, 1\]"),
    (torch.full((2, 1, 8, 10), float("nan")), r"160 non-finite values \(NaN\)"),
    (torch.tensor(float("inf")).expand(2, 1, 8, 10), r"non-finite .*\(inf\)"),
    ((torch.rand(2, 1, 8, 10) * 255).to(torch.uint8), r"dtype torch.uint8 \(bytes 0..255\? divide by 255"),
    (torch.randint(0, 2, (2, 1, 8, 10)), "must hold floats"),
    ([[0.0]], "must be a torch.Tensor or numpy array"),
])
def test_bad_images_are_named_before_any_work(model, bad, match):
    for call in (model.model, model.guide):
        with pytest.raises(InputError, match=match):
            call(bad)


def test_accepted_conversions_give_the_same_result(model):
    x = binary_images(3, (1, 8, 10))
    ref = model.check_images(x)
    for other in (x.numpy(), x.double(), x.bool(), x.to(memory_format=torch.channels_last),
                  x.transpose(2, 3).contiguous().transpose(2, 3), np.asfortranarray(x.numpy())):
        got = model.check_images(other)
        assert got.dtype == torch.float32 and torch.equal(got, ref)


def test_model_without_images_needs_a_batch_size(model):
    with pytest.raises(InputError, match="batch_size"):
        model.model()
    with pytest.raises(InputError, match="contradicts"):
        model.model(binary_images(2, (1, 8, 10)), batch_size=3)

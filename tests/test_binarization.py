"""Dynamic binarization as a seeded protocol (`drawzoo.data.binarization`): a fresh draw each
training epoch, the same for the same seed and for a resumed run; one fixed draw elsewhere."""

import os
import subprocess
import sys

import pytest
import torch

import drawzoo
from drawzoo import data
from drawzoo.data.batching import epoch_data, random_subset
from drawzoo.data import binarization

SHAPE = (1, 8, 8)
FAST = dict(batch_size=16, lr=3e-3, progress=False)
FIXED_DRAW = "import torch; from drawzoo.data import ImageDataset; " \
    "g = torch.Generator().manual_seed(5); ds = ImageDataset(torch.rand(6, 1, 8, 8, generator=g), binarize='dynamic'); " \
    "print(''.join(str(int(v)) for v in ds[:].flatten().tolist()))"


def grey(n=6, shape=SHAPE, seed=5):
    g = torch.Generator().manual_seed(seed)
    return data.ImageDataset(torch.rand(n, *shape, generator=g), binarize="dynamic")


def test_the_fixed_draw_is_the_same_at_every_access_in_any_batching_and_subset():
    ds = grey()
    whole = ds[:]
    assert set(whole.unique().tolist()) <= {0.0, 1.0}
    torch.manual_seed(1)  # no RNG is involved
    assert torch.equal(ds[:], whole) and torch.equal(ds[3], whole[3]) and torch.equal(ds[[4, 1]], whole[[4, 1]])
    assert torch.equal(random_subset(ds, 3, seed=2)[:], whole[random_subset(torch.arange(6), 3, seed=2)])


def test_the_fixed_draw_is_the_same_in_another_process():
    out = subprocess.run([sys.executable, "-c", FIXED_DRAW], capture_output=True, text=True, check=True,
                         env={**os.environ, "OMP_NUM_THREADS": "1"}).stdout.strip()
    assert out == "".join(str(int(v)) for v in grey()[:].flatten().tolist())


def test_epochs_draw_afresh_and_the_same_seed_draws_the_same():
    ds = grey(n=50)
    draws = {(seed, e): ds.epoch_draw(seed, e)[:] for seed in (0, 1) for e in (0, 1)}
    assert torch.equal(grey(n=50).epoch_draw(0, 1)[:], draws[0, 1])  # a new object, the same draw
    values = [ds[:], *draws.values()]
    assert all(not torch.equal(a, b) for i, a in enumerate(values) for b in values[i + 1:])
    assert ds.draw is binarization.FIXED  # a view: the data set itself keeps its fixed draw
    assert ds.epoch_draw(0, 1).images is ds.images
    assert data.ImageDataset(torch.rand(2, *SHAPE)).epoch_draw(0, 1)[:].unique().numel() > 2  # grey stays grey


def test_a_draw_follows_the_grey_levels():
    images = torch.tensor([0.0, 1.0, 0.25]).view(1, 1, 1, 3).expand(1, 1, 4000, 3).contiguous()
    for x in (data.ImageDataset(images, binarize="dynamic")[0],
              data.ImageDataset((images * 255).round().to(torch.uint8), binarize="dynamic").epoch_draw(3, 7)[0]):
        assert (x[..., 0] == 0).all() and (x[..., 1] == 1).all()
        assert abs(x[..., 2].mean().item() - 0.25) < 0.03


def test_epoch_data_is_the_epochs_draw_for_dynamic_images_only():
    ds = grey()
    assert torch.equal(epoch_data(ds, 3, 2)[:], ds.epoch_draw(3, 2)[:])
    plain = torch.utils.data.TensorDataset(torch.zeros(2))
    assert epoch_data(plain, 3, 2) is plain


def _run(train, valid, epochs, **kw):
    torch.manual_seed(0)
    model = drawzoo.load("vae", image_shape=SHAPE, hidden_dim=8, latent_dim=2)
    history = drawzoo.train(model, train, valid, epochs=epochs, seed=3, **FAST, **kw)
    return model, [(h["train_loss"], h["valid_loss"]) for h in history]


def test_training_sees_each_epochs_draw_and_validation_the_fixed_one(monkeypatch):
    train, valid = grey(48), grey(16, seed=6)
    seen = []
    original = data.ImageDataset.__getitems__

    def spy(self, indices):
        seen.append((self.draw, len(indices)))
        return original(self, indices)

    monkeypatch.setattr(data.ImageDataset, "__getitems__", spy)
    _run(train, valid, 2)
    trained = [draw for draw, n in seen if draw is not binarization.FIXED]
    assert trained == [binarization.epoch(3, 0)] * 3 + [binarization.epoch(3, 1)] * 3  # 3 batches an epoch
    assert train.draw is binarization.FIXED and valid.draw is binarization.FIXED


def test_a_resumed_run_continues_with_the_draws_it_would_have_had(tmp_path):
    train, valid = grey(48), grey(16, seed=6)
    straight, full = _run(train, valid, 3)
    path = tmp_path / "run.pt"
    _run(train, valid, 3, checkpoint=path, max_steps=4)  # stops in the middle of epoch 2
    torch.manual_seed(123)  # whatever the caller's RNG
    resumed, rest = _run(train, valid, 3, checkpoint=path)
    assert rest == full
    assert all(torch.equal(a, b) for a, b in zip(resumed.state_dict().values(), straight.state_dict().values()))


@pytest.mark.skipif(not os.environ.get("DRAWZOO_DATA"), reason="DRAWZOO_DATA is not set")
def test_mnist_valid_and_test_are_one_fixed_draw_keyed_by_place():
    valid, test = data.mnist(split="valid", download=False), data.mnist(split="test", download=False)
    assert valid.binarize == test.binarize == "dynamic"
    assert torch.equal(valid.keys, torch.arange(50_000, 60_000)) and torch.equal(test.keys, torch.arange(10_000))
    assert torch.equal(test[:100], data.mnist(split="test", download=False)[:100])
    # a valid image keeps its draw in full_train's fixed draw: keyed by its place in the file
    full = data.mnist(split="full_train", download=False)
    assert torch.equal(full[50_000:50_010], valid[:10])


import math
import re
import signal
import threading

import pytest
import torch
from pyro.infer import TraceMeanField_ELBO
from torch.utils.data import Dataset

import drawzoo
from drawzoo.checkpoints import CheckpointLock, read_checkpoint
from drawzoo.evaluation import objectives
from drawzoo.training.config import contradictions, stored_settings
from tests.conftest import binary_images

SHAPE = (1, 8, 8)
FAST = dict(batch_size=16, lr=3e-3, progress=False)


def tiny_draw(**kw):
    torch.manual_seed(0)
    return drawzoo.load("draw", image_shape=SHAPE, T=3, hidden_dim=16, latent_dim=3, **kw)


@pytest.fixture(scope="module")
def data():
    x = binary_images(96, SHAPE)
    x[:48, :, 2:6, 2:6] = 1.0
    return x[:80], x[80:]


def _weights(model):
    return {k: v.clone() for k, v in model.state_dict().items()}


def _same_weights(a, b):
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def _losses(history):
    return [(h["epoch"], h["step"], h["train_loss"], h["valid_loss"]) for h in history]


def test_train_returns_a_history_and_learns(data):
    train, valid = data
    history = drawzoo.train(tiny_draw(), train, valid, epochs=6, **FAST)
    assert [h["epoch"] for h in history] == list(range(1, 7))
    assert history[-1]["step"] == 6 * 5
    assert history[-1]["train_loss"] < history[0]["train_loss"]
    assert history[-1]["valid_loss"] < history[0]["valid_loss"]


def test_numpy_and_datasets_are_accepted(data):
    train, valid = data

    class Pairs(Dataset):  # (image, label) items, as torchvision datasets give
        def __len__(self):
            return len(train)

        def __getitem__(self, i):
            return train[i], 0

    a = drawzoo.train(tiny_draw(), train.numpy(), valid.numpy(), epochs=1, **FAST)
    b = drawzoo.train(tiny_draw(), Pairs(), valid, epochs=1, **FAST)
    assert _losses(a) == _losses(b)


def test_same_seed_same_run_and_another_seed_another(data):
    train, valid = data
    a = drawzoo.train(tiny_draw(), train, valid, epochs=2, seed=3, **FAST)
    b = drawzoo.train(tiny_draw(), train, valid, epochs=2, seed=3, **FAST)
    c = drawzoo.train(tiny_draw(), train, valid, epochs=2, seed=4, **FAST)
    assert _losses(a) == _losses(b) and _losses(a) != _losses(c)


def test_resume_gives_the_weights_of_an_uninterrupted_run(data, tmp_path):
    train, valid = data
    straight = tiny_draw()
    full = drawzoo.train(straight, train, valid, epochs=4, seed=1, **FAST)

    path = tmp_path / "run.pt"
    first = drawzoo.train(tiny_draw(), train, valid, epochs=2, seed=1, checkpoint=path, **FAST)
    assert read_checkpoint(path)["progress"]["epoch"] == 2
    resumed = tiny_draw()
    torch.manual_seed(123)  # whatever the caller's RNG, the checkpoint's takes over
    rest = drawzoo.train(resumed, train, valid, epochs=4, seed=1, checkpoint=path, **FAST)
    assert _losses(first) == _losses(full)[:2]
    assert _losses(rest) == _losses(full)  # the epoch count continues and earlier epochs are kept
    assert _same_weights(_weights(resumed), _weights(straight))
    # a finished run has nothing left to do
    assert _losses(drawzoo.train(tiny_draw(), train, valid, epochs=4, seed=1, checkpoint=path, **FAST)) == _losses(full)


def test_max_steps_stops_mid_epoch_and_resumes(data, tmp_path):
    train, valid = data
    straight = tiny_draw()
    full = drawzoo.train(straight, train, valid, epochs=3, seed=4, **FAST)
    path, best = tmp_path / "run.pt", tmp_path / "best.pt"
    part = drawzoo.train(tiny_draw(), train, valid, epochs=3, seed=4, checkpoint=path, max_steps=7, best=best, **FAST)
    assert [h["epoch"] for h in part] == [1, 1.4] and part[-1]["partial"] and part[-1]["step"] == 7
    assert read_checkpoint(path)["progress"]["step_in_epoch"] == 2
    resumed = tiny_draw()
    rest = drawzoo.train(resumed, train, valid, epochs=3, seed=4, checkpoint=path, best=best, **FAST)
    assert _losses(rest) == _losses(full)
    assert _same_weights(_weights(resumed), _weights(straight))
    # `best` holds the weights of the lowest validation loss, loadable as a model
    best_valid = min(h["valid_loss"] for h in part + rest)
    assert read_checkpoint(best)["valid_loss"] == best_valid
    assert drawzoo.evaluate(drawzoo.load(checkpoint=best), valid, seed=4)["neg_elbo"] == pytest.approx(best_valid)


@pytest.mark.parametrize("budget", [dict(epochs=2), dict(epochs=3, max_steps=7)], ids=["epochs", "max_steps"])
def test_rerunning_a_finished_run_changes_nothing_and_says_so(data, tmp_path, caplog, budget):
    """A finished run (its epochs, or `max_steps` mid-epoch) rerun: the same history, not one more
    step, the checkpoint and best weights byte for byte as they were (issue: a rerun took a step)."""
    train, valid = data
    path, best = tmp_path / "run.pt", tmp_path / "best.pt"
    first = drawzoo.train(tiny_draw(), train, valid, seed=4, checkpoint=path, best=best, **budget, **FAST)
    files = {p: p.read_bytes() for p in (path, best)}
    caplog.clear()
    again = drawzoo.train(tiny_draw(), train, valid, seed=4, checkpoint=path, best=best, **budget, **FAST)
    assert _losses(again) == _losses(first) and again[-1].get("partial") == first[-1].get("partial")
    assert {p: p.read_bytes() for p in files} == files
    end = "max_steps=7" if "max_steps" in budget else "epochs=2"
    assert [r.getMessage() for r in caplog.records if r.levelname == "WARNING"] == [
        f"the run is already complete (epoch {first[-1]['epoch']:g}, step {first[-1]['step']}; epochs="
        f"{budget['epochs']}{', ' + end if 'max_steps' in budget else ''}): nothing to train, nothing written"]
    # a larger budget goes on from there, as an uninterrupted run would
    if "max_steps" in budget:
        straight = tiny_draw()
        full = drawzoo.train(straight, train, valid, epochs=3, seed=4, **FAST)
        resumed = tiny_draw()
        assert _losses(drawzoo.train(resumed, train, valid, epochs=3, seed=4, checkpoint=path, **FAST)) == _losses(full)
        assert _same_weights(_weights(resumed), _weights(straight))


def test_max_minutes_stops_after_a_step_and_says_so(data, caplog):
    train, valid = data
    history = drawzoo.train(tiny_draw(), train, valid, epochs=2, max_minutes=1e-6, **FAST)
    assert [{k: v for k, v in h.items() if k not in ("train_loss", "seconds")} for h in history] == [
        {"epoch": 0.2, "step": 1, "valid_loss": None, "partial": True, "stopped": "max_minutes"}]
    assert [r.getMessage() for r in caplog.records if r.levelname == "WARNING"] == [
        "stopped at the time limit (max_minutes=1e-06) at step 1 (epoch 0.2): no checkpoint was given, nothing saved"]


@pytest.fixture
def python_signals():
    """SIGINT and SIGTERM handled as a Python program starts with them, whatever launched pytest."""
    handlers = {signal.SIGINT: signal.default_int_handler, signal.SIGTERM: signal.SIG_DFL}
    saved = {signum: signal.signal(signum, handler) for signum, handler in handlers.items()}
    yield handlers
    for signum, handler in saved.items():
        signal.signal(signum, handler)


def _sending(*signums, at_epoch):
    """An `on_epoch` that sends this process `signums` after epoch `at_epoch`."""
    def on_epoch(record):
        if record["epoch"] == at_epoch:
            for signum in signums:
                signal.raise_signal(signum)
    return on_epoch


def test_signals_stop_training_with_a_checkpoint_and_the_handlers_come_back(data, tmp_path, python_signals):
    """Signals sent from `on_epoch`, while an epoch ends: SIGTERM stops training there, with a
    checkpoint; a second SIGINT stops at once, the last checkpoint untouched; a signal after the last
    step is still reported, the run complete (the weights of an uninterrupted run). Each time the
    handlers from before are back. In another thread, train() installs none and still runs; an
    ignored signal stays ignored."""
    train, valid = data
    straight = tiny_draw()
    drawzoo.train(straight, train, valid, epochs=3, seed=4, **FAST)
    path = tmp_path / "run.pt"

    def run(*signums, at_epoch, match):
        model = tiny_draw()
        with pytest.raises(drawzoo.Interrupted, match=match) as e:
            drawzoo.train(model, train, valid, epochs=3, seed=4, checkpoint=path,
                          on_epoch=_sending(*signums, at_epoch=at_epoch), **FAST)
        assert e.value.signum == signums[0]
        assert {s: signal.getsignal(s) for s in python_signals} == python_signals
        return model

    run(signal.SIGTERM, at_epoch=1, match=re.escape(f"stopped by SIGTERM at step 5 (epoch 1): checkpoint {path}, "
                                                    "resume from it to continue"))
    assert read_checkpoint(path)["progress"]["step"] == 5
    written = path.read_bytes()
    run(signal.SIGINT, signal.SIGINT, at_epoch=2,
        match=re.escape(f"stopped at once by a second SIGINT; the last checkpoint at {path} is intact"))
    assert path.read_bytes() == written
    resumed = run(signal.SIGINT, at_epoch=3,
                  match=re.escape(f"stopped by SIGINT after training was complete: checkpoint {path}"))
    assert _same_weights(_weights(resumed), _weights(straight))
    elsewhere = []
    thread = threading.Thread(target=lambda: elsewhere.append(drawzoo.train(tiny_draw(), train, epochs=1, **FAST)))
    thread.start()
    thread.join()
    assert len(elsewhere) == 1
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    assert len(drawzoo.train(tiny_draw(), train, epochs=1, on_epoch=_sending(signal.SIGTERM, at_epoch=1), **FAST)) == 1
    assert signal.getsignal(signal.SIGTERM) == signal.SIG_IGN


class _Interrupt(Exception):
    pass


class _Crashing(Dataset):
    """Raises after `limit` batched fetches: a run that dies mid-epoch."""

    def __init__(self, images, limit):
        self.images, self.limit, self.fetches = images, limit, 0

    def __len__(self):
        return len(self.images)

    def __getitem__(self, i):
        return self.images[i]

    def __getitems__(self, idx):
        self.fetches += 1
        if self.fetches > self.limit:
            raise _Interrupt
        return self.images[torch.as_tensor(idx)]


def test_resume_from_a_mid_epoch_checkpoint(data, tmp_path):
    train, _ = data
    straight = tiny_draw()
    full = drawzoo.train(straight, train, epochs=3, seed=2, **FAST)
    path = tmp_path / "run.pt"
    with pytest.raises(_Interrupt):  # dies at step 8 (of 15); checkpoints every 3 steps
        drawzoo.train(tiny_draw(), _Crashing(train, 7), epochs=3, seed=2, checkpoint=path, every_steps=3, **FAST)
    progress = read_checkpoint(path)["progress"]
    assert (progress["epoch"], progress["step"], progress["step_in_epoch"]) == (1, 6, 1)
    resumed = tiny_draw()
    rest = drawzoo.train(resumed, train, epochs=3, seed=2, checkpoint=path, every_steps=3, **FAST)
    assert _losses(rest) == _losses(full)
    assert _same_weights(_weights(resumed), _weights(straight))


def test_cosine_learning_rate_resumes_exactly(data, tmp_path):
    train, _ = data
    kw = dict(epochs=3, seed=5, lr_min=1e-4, batch_size=16, lr=3e-3, progress=False)
    straight = tiny_draw()
    full = drawzoo.train(straight, train, **kw)
    path = tmp_path / "run.pt"
    with pytest.raises(_Interrupt):
        drawzoo.train(tiny_draw(), _Crashing(train, 8), checkpoint=path, every_steps=4, **kw)
    assert 1e-4 < read_checkpoint(path)["optimizer"]["param_groups"][0]["lr"] < 3e-3
    resumed = tiny_draw()
    assert _losses(drawzoo.train(resumed, train, checkpoint=path, every_steps=4, **kw)) == _losses(full)
    assert _same_weights(_weights(resumed), _weights(straight))
    assert read_checkpoint(path)["optimizer"]["param_groups"][0]["lr"] == pytest.approx(1e-4)


class _LearningRates(drawzoo.Callback):
    def __init__(self):
        self.lrs = []

    def on_step_end(self, run, loss):
        self.lrs.append(run.optimizer.param_groups[0]["lr"])


def test_a_cosine_run_trained_on_past_anneal_epochs_holds_lr_min(data, tmp_path, caplog):
    train, _ = data  # 5 steps an epoch
    kw = dict(seed=5, lr_min=1e-4, batch_size=16, lr=3e-3, progress=False)
    plain, annealed = tiny_draw(), tiny_draw()
    # anneal_epochs equal to the run's epochs is the run's own cosine, bit for bit
    assert _losses(drawzoo.train(plain, train, epochs=2, **kw)) == \
        _losses(drawzoo.train(annealed, train, epochs=2, anneal_epochs=2, **kw))
    assert _same_weights(_weights(plain), _weights(annealed))
    path = tmp_path / "run.pt"
    drawzoo.train(tiny_draw(), train, epochs=2, checkpoint=path, **kw)
    stretched = tmp_path / "stretched.pt"
    stretched.write_bytes(path.read_bytes())
    # trained on for an epoch: without anneal_epochs the cosine stretches over 3 epochs and the
    # learning rate leaves lr_min, with a warning; with it, the run goes on at lr_min
    rising = _LearningRates()
    with caplog.at_level("WARNING", logger="drawzoo"):
        drawzoo.train(tiny_draw(), train, epochs=3, checkpoint=stretched, callbacks=[rising], **kw)
    assert "now runs over epochs=3" in caplog.text and "anneal_epochs=2 keeps that cosine" in caplog.text
    assert rising.lrs[0] == pytest.approx(6.459e-4, rel=1e-3)  # step 10 of a cosine over 15, up from lr_min
    caplog.clear()
    held = _LearningRates()
    with caplog.at_level("WARNING", logger="drawzoo"):
        drawzoo.train(tiny_draw(), train, epochs=3, anneal_epochs=2, checkpoint=path, callbacks=[held], **kw)
    assert "cosine" not in caplog.text
    assert held.lrs == [pytest.approx(1e-4)] * 5
    assert read_checkpoint(path)["train_config"]["anneal_epochs"] == 2
    # the cosine, once given, is part of the run: resuming with another is refused
    with pytest.raises(drawzoo.CheckpointError, match="anneal_epochs: checkpoint has 2, given 3"):
        drawzoo.train(tiny_draw(), train, epochs=4, anneal_epochs=3, checkpoint=path, **kw)


def test_a_constant_run_given_a_cosine_ahead_of_it_resumes_as_the_same_run(data, tmp_path, caplog):
    train, _ = data  # 5 steps an epoch
    kw = dict(seed=5, batch_size=16, lr=3e-3, progress=False)
    cosine = dict(lr_min=1e-4, anneal_from=2)
    whole, rates = tiny_draw(), _LearningRates()
    straight = drawzoo.train(whole, train, epochs=4, callbacks=[rates], **cosine, **kw)
    # lr for epochs 1-2, then a cosine over epochs 3-4 (steps 10-19) from lr down to lr_min
    assert rates.lrs[:11] == [3e-3] * 11 and rates.lrs[-1] == pytest.approx(1e-4)
    assert rates.lrs[15] == pytest.approx(1e-4 + 0.5 * 2.9e-3 * (1 + math.cos(math.pi * 5 / 9)))
    # a run trained at a constant lr for 2 epochs, then given that cosine: the same run, bit for bit
    path = tmp_path / "run.pt"
    drawzoo.train(tiny_draw(), train, epochs=2, checkpoint=path, **kw)
    constant = tmp_path / "constant.pt"
    constant.write_bytes(path.read_bytes())
    resumed = tiny_draw()
    with caplog.at_level("WARNING", logger="drawzoo"):
        later = drawzoo.train(resumed, train, epochs=4, checkpoint=path, **cosine, **kw)
    assert "its learning-rate schedule changes" in caplog.text and "lr_min: checkpoint has None, given 0.0001" \
        in caplog.text and "anneal_from: checkpoint has None, given 2" in caplog.text
    assert _losses(later) == _losses(straight) and _same_weights(_weights(resumed), _weights(whole))
    assert read_checkpoint(path)["train_config"]["anneal_from"] == 2
    # once a step was on the cosine, it is part of the run
    with pytest.raises(drawzoo.CheckpointError, match="anneal_from: checkpoint has 2, given 3"):
        drawzoo.train(tiny_draw(), train, epochs=5, checkpoint=path, lr_min=1e-4, anneal_from=3, **kw)
    # a cosine that would have begun before where the constant run stands changes its past: refused
    for late in (dict(lr_min=1e-4, anneal_from=1), dict(lr_min=1e-4)):
        with pytest.raises(drawzoo.CheckpointError, match="lr_min: checkpoint has None, given 0.0001"):
            drawzoo.train(tiny_draw(), train, epochs=4, checkpoint=constant, **late, **kw)


def test_a_cosine_past_a_calls_budget_is_said_and_reached_by_a_longer_call(data, tmp_path, caplog):
    train, _ = data  # 5 steps an epoch
    kw = dict(seed=5, batch_size=16, lr=3e-3, progress=False, lr_min=1e-4, anneal_from=2)
    path, first, second = tmp_path / "run.pt", _LearningRates(), _LearningRates()
    for budget in (dict(epochs=2), dict(epochs=4, max_steps=10)):  # the cosine would begin at step 10
        with caplog.at_level("WARNING", logger="drawzoo"):
            drawzoo.train(tiny_draw(), train, callbacks=[first], **budget, **kw)
        words = ", ".join(f"{k}={v}" for k, v in budget.items())
        assert f"lr_min's cosine begins at epoch 2, at or after the end of this run's budget ({words})" in caplog.text
        caplog.clear()
    assert first.lrs == [3e-3] * 20
    # the same settings in chunks: the first at lr, the second on to the cosine, with no warning
    with caplog.at_level("WARNING", logger="drawzoo"):
        drawzoo.train(tiny_draw(), train, epochs=2, checkpoint=path, **kw)
        caplog.clear()
        drawzoo.train(tiny_draw(), train, epochs=4, checkpoint=path, callbacks=[second], **kw)
    assert "cosine" not in caplog.text
    assert second.lrs[0] == pytest.approx(3e-3) and second.lrs[-1] == pytest.approx(1e-4)


def test_a_checkpoint_written_before_anneal_from_had_its_cosine_from_the_first_step():
    progress = {"epoch": 2, "step_in_epoch": 0, "step": 10}
    elbo = objectives.describe(objectives.make_elbo("elbo", 1))
    older = {"train_config": {"lr": 3e-3, "lr_min": 1e-4, "epochs": 4}, "progress": progress, "elbo": elbo}
    assert stored_settings(older)["anneal_from"] is None
    given = drawzoo.TrainConfig(lr=3e-3, lr_min=1e-4, anneal_from=3, epochs=4)
    assert contradictions(older, given, elbo) == ["anneal_from: checkpoint has None, given 3"]
    constant = {"train_config": {"lr": 3e-3, "lr_min": None, "epochs": 2}, "progress": progress, "elbo": elbo}
    assert contradictions(constant, given, elbo) == []


class _StopAt(_LearningRates):
    def __init__(self, step):
        super().__init__()
        self.step = step

    def on_step_end(self, run, loss):
        super().on_step_end(run, loss)
        if run.state.step == self.step:
            run.stop("test")


def test_a_resume_warns_only_when_the_cosine_moves(data, tmp_path, caplog):
    train, _ = data  # 5 steps an epoch
    kw = dict(seed=5, lr_min=1e-4, batch_size=16, lr=3e-3, progress=False)
    whole = _LearningRates()
    drawzoo.train(tiny_draw(), train, epochs=3, max_steps=7, callbacks=[whole], **kw)
    # max_steps=7 sets the cosine's length whatever the epochs: resumed with more epochs, the run
    # goes on along the same cosine, without a warning
    path = tmp_path / "run.pt"
    first, second = _StopAt(3), _LearningRates()
    drawzoo.train(tiny_draw(), train, epochs=3, max_steps=7, checkpoint=path, callbacks=[first], **kw)
    with caplog.at_level("WARNING", logger="drawzoo"):
        drawzoo.train(tiny_draw(), train, epochs=9, max_steps=7, checkpoint=path, callbacks=[second], **kw)
    assert "cosine" not in caplog.text
    assert first.lrs + second.lrs == whole.lrs
    # nor when a finished run is rerun with a smaller budget: nothing is trained
    caplog.clear()
    with caplog.at_level("WARNING", logger="drawzoo"):
        drawzoo.train(tiny_draw(), train, epochs=1, checkpoint=path, **kw)
    assert "already complete" in caplog.text and "cosine" not in caplog.text
    # another max_steps moves it: the warning names both budgets
    path.unlink()
    drawzoo.train(tiny_draw(), train, epochs=3, max_steps=7, checkpoint=path, callbacks=[_StopAt(3)], **kw)
    with caplog.at_level("WARNING", logger="drawzoo"):
        drawzoo.train(tiny_draw(), train, epochs=3, max_steps=9, checkpoint=path, **kw)
    assert ("ran over epochs=3, max_steps=7, anneal_epochs=None and now runs over epochs=3, max_steps=9, "
            "anneal_epochs=None") in caplog.text
    assert "keeps that cosine" not in caplog.text  # anneal_epochs counts epochs: no cure for a cut in steps


def test_checkpoint_rebuilds_the_model_and_refuses_contradictions(data, tmp_path):
    train, _ = data
    path = tmp_path / "m.pt"
    model = tiny_draw(attention=False)
    drawzoo.train(model, train, epochs=1, checkpoint=path, **FAST)
    loaded = drawzoo.load("draw", checkpoint=path)
    assert loaded.config == model.config and _same_weights(_weights(loaded), _weights(model))
    assert drawzoo.load(checkpoint=path, T=3, attention=False).config == model.config
    with pytest.raises(drawzoo.CheckpointError) as e:
        drawzoo.load("draw", checkpoint=path, T=5, attention=True, hidden_dim=16)
    msg = str(e.value)
    assert "T: checkpoint has 3, given 5" in msg and "attention: checkpoint has False, given True" in msg
    assert "hidden_dim" not in msg and str(path) in msg
    with pytest.raises(drawzoo.CheckpointError, match="of model 'draw', not 'vae'"):
        drawzoo.load("vae", checkpoint=path)
    with pytest.raises(drawzoo.ConfigError, match="'Tee'"):
        drawzoo.load("draw", checkpoint=path, Tee=3)
    # training another config on this checkpoint is refused, naming the field
    with pytest.raises(drawzoo.CheckpointError, match="latent_dim: checkpoint has 3, given 4"):
        drawzoo.train(drawzoo.load("draw", image_shape=SHAPE, T=3, hidden_dim=16, latent_dim=4, attention=False),
                      train, epochs=2, checkpoint=path, **FAST)


def test_bad_checkpoint_files_are_reported_not_unpickled(tmp_path):
    missing = tmp_path / "nope.pt"
    with pytest.raises(drawzoo.CheckpointError, match="no such checkpoint"):
        drawzoo.load(checkpoint=missing)
    garbage = tmp_path / "garbage.pt"
    garbage.write_bytes(b"\x00not a checkpoint" * 10)
    with pytest.raises(drawzoo.CheckpointError, match="garbage.pt: not a readable checkpoint"):
        drawzoo.load(checkpoint=garbage)

    class Evil:
        def __reduce__(self):
            return (exec, ("raise SystemExit('unpickled!')",))

    evil = tmp_path / "evil.pt"
    torch.save({"format": "drawzoo-checkpoint", "payload": Evil()}, evil)
    with pytest.raises(drawzoo.CheckpointError, match="refused, not unpickled"):
        drawzoo.load(checkpoint=evil)
    # a checkpoint whose weights changed after it was written (bit rot, a bad copy): caught by its sha256
    good = tmp_path / "good.pt"
    drawzoo.train(tiny_draw(), binary_images(16, SHAPE), epochs=1, checkpoint=good, **FAST)
    payload = torch.load(good, weights_only=True)
    payload["state_dict"]["decoder.bias_hh"][0] += 1.0
    torch.save(payload, tmp_path / "rotten.pt")
    with pytest.raises(drawzoo.CheckpointError, match=r"rotten.pt: corrupted checkpoint"):
        drawzoo.load(checkpoint=tmp_path / "rotten.pt")
    other = tmp_path / "other.pt"
    torch.save({"weights": torch.zeros(2)}, other)
    with pytest.raises(drawzoo.CheckpointError, match="not a drawzoo checkpoint"):
        drawzoo.load(checkpoint=other)


def test_a_failed_write_leaves_the_previous_checkpoint(data, tmp_path, monkeypatch):
    train, _ = data
    path = tmp_path / "m.pt"
    drawzoo.train(tiny_draw(), train, epochs=1, checkpoint=path, **FAST)
    before = path.read_bytes()

    def broken_save(obj, f, *a, **k):
        f.write(b"partial")
        raise OSError("disk full")

    monkeypatch.setattr(torch, "save", broken_save)
    with pytest.raises(OSError, match="disk full"):
        drawzoo.train(tiny_draw(), train, epochs=2, checkpoint=path, **FAST)
    assert path.read_bytes() == before
    assert [p.name for p in tmp_path.iterdir() if p.suffix == ".tmp"] == []


def test_two_runs_cannot_share_a_checkpoint(data, tmp_path):
    train, _ = data
    path = tmp_path / "m.pt"
    with CheckpointLock(path):
        with pytest.raises(drawzoo.CheckpointError, match="another training run"):
            drawzoo.train(tiny_draw(), train, epochs=1, checkpoint=path, **FAST)
    drawzoo.train(tiny_draw(), train, epochs=1, checkpoint=path, **FAST)


def test_non_finite_losses_are_skipped_then_stop_training(data, tmp_path, caplog):
    train, _ = data

    class NaNAfter(TraceMeanField_ELBO):
        calls = 0

        def differentiable_loss(self, model, guide, *args, **kwargs):
            NaNAfter.calls += 1  # call s is step s
            loss = super().differentiable_loss(model, guide, *args, **kwargs)
            return loss * float("nan") if NaNAfter.calls > 7 else loss

    path = tmp_path / "m.pt"
    model = tiny_draw()
    with pytest.raises(drawzoo.TrainingError, match=r"3 non-finite losses in a row, up to step 10; .* intact"):
        drawzoo.train(model, train, epochs=3, checkpoint=path, elbo=NaNAfter(), max_bad_steps=3, **FAST)
    warned = [r for r in caplog.records if r.name == "drawzoo.training" and r.levelname == "WARNING"]
    assert [r.getMessage() for r in warned] == ["non-finite loss or gradient at step 8: update skipped"]  # once
    assert read_checkpoint(path)["progress"]["epoch"] == 1
    assert all(torch.isfinite(p).all() for p in model.parameters())


def test_tensorboard_summaries(data, tmp_path):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    train, valid = data
    drawzoo.train(tiny_draw(), train, valid, epochs=2, log_dir=tmp_path / "tb", num_preview=4, **FAST)
    events = EventAccumulator(str(tmp_path / "tb")).Reload()
    tags = events.Tags()
    assert {"loss/train", "loss/valid", "loss/train_step"} <= set(tags["scalars"])
    assert [e.step for e in events.Scalars("loss/valid")] == [5, 10]  # x axis: optimizer steps
    assert len(events.Scalars("loss/train_step")) == 10
    assert "samples" in tags["images"]


@pytest.mark.parametrize("bad,match", [
    (dict(epochs=-1), "epochs"), (dict(batch_size=0), "batch_size"), (dict(lr=0), "lr"),
    (dict(every=0), "every"), (dict(every_steps=0), "every_steps"), (dict(max_steps=0), "max_steps"),
])
def test_bad_arguments(data, bad, match):
    kwargs = dict(epochs=1, **FAST)
    kwargs.update(bad)
    with pytest.raises(ValueError, match=match):
        drawzoo.train(tiny_draw(), data[0], **kwargs)


def test_bad_training_data_is_named(data):
    with pytest.raises(drawzoo.InputError, match=r"train_data must have values in \[0, 1\]"):
        drawzoo.train(tiny_draw(), data[0] * 255, epochs=1, **FAST)
    with pytest.raises(drawzoo.InputError, match=r"valid_data has shape \[4, 1, 9, 9\]"):
        drawzoo.train(tiny_draw(), data[0], torch.rand(4, 1, 9, 9), epochs=1, **FAST)

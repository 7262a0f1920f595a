"""`drawzoo.train(..., callbacks=[...])`: every point of a run called in order, a stop that a
later call resumes from bit for bit, a hook drawzoo would never call refused before any work, a
hook that raises leaving the last checkpoint, and ``on_epoch=`` as it was."""

import logging
import math
import re

import pytest
import torch
from pyro.infer import TraceMeanField_ELBO

import drawzoo
from drawzoo.checkpoints import read_checkpoint
from drawzoo.training.callbacks import HOOKS
from tests.conftest import binary_images
from tests.test_training import FAST, tiny_draw

SHAPE = (1, 8, 8)  # tiny_draw's; 80 training images in batches of 16: 5 steps an epoch


@pytest.fixture(scope="module")
def data():
    x = binary_images(96, SHAPE)
    x[:48, :, 2:6, 2:6] = 1.0
    return x[:80], x[80:]


def _same_weights(a, b):
    a, b = a.state_dict(), b.state_dict()
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def _losses(history):
    return [(h["epoch"], h["step"], h["train_loss"], h["valid_loss"]) for h in history]


class Recorder:
    """Records every call: (hook, run.state.step, run.state.epoch), and what each hook was given.
    Not a `drawzoo.Callback`: any object with the hooks' names will do."""

    def __init__(self):
        self.calls, self.given, self.runs = [], [], set()

    def _note(self, hook, run, given=None):
        self.calls.append((hook, run.state.step, run.state.epoch))
        self.given.append((hook, given))
        self.runs.add(id(run))
        self.run = run

    def on_train_start(self, run):
        self._note("on_train_start", run)

    def on_epoch_start(self, run):
        self._note("on_epoch_start", run)

    def on_step_end(self, run, loss):
        self._note("on_step_end", run, loss)

    def on_validation_end(self, run, scores):
        self._note("on_validation_end", run, scores)

    def on_epoch_end(self, run, record):
        self._note("on_epoch_end", run, record)

    def on_checkpoint(self, run, path):
        self._note("on_checkpoint", run, (path, read_checkpoint(path)["progress"]["step"]))

    def on_train_end(self, run, history):
        self._note("on_train_end", run, history)

    def of(self, hook):
        return [given for name, given in self.given if name == hook]


def test_every_point_of_a_run_is_called_in_order(data, tmp_path):
    """Validation, a checkpoint every 3 steps, max_steps=12 ending the run in epoch 3, then a second
    call that resumes mid-epoch and finishes; every call, in order, with what it was given."""
    train, valid = data
    path = tmp_path / "run.pt"
    model, recorder = tiny_draw(), Recorder()
    first = drawzoo.train(model, train, valid, epochs=3, seed=4, checkpoint=path, every_steps=3, max_steps=12,
                          callbacks=[recorder], **FAST)
    assert recorder.calls == [
        ("on_train_start", 0, 0),
        ("on_epoch_start", 0, 0),
        ("on_step_end", 1, 0), ("on_step_end", 2, 0), ("on_step_end", 3, 0), ("on_checkpoint", 3, 0),
        ("on_step_end", 4, 0), ("on_step_end", 5, 0),
        ("on_validation_end", 5, 0), ("on_epoch_end", 5, 1), ("on_checkpoint", 5, 1),
        ("on_epoch_start", 5, 1),
        ("on_step_end", 6, 1), ("on_checkpoint", 6, 1), ("on_step_end", 7, 1), ("on_step_end", 8, 1),
        ("on_step_end", 9, 1), ("on_checkpoint", 9, 1), ("on_step_end", 10, 1),
        ("on_validation_end", 10, 1), ("on_epoch_end", 10, 2), ("on_checkpoint", 10, 2),
        ("on_epoch_start", 10, 2),
        ("on_step_end", 11, 2), ("on_step_end", 12, 2), ("on_checkpoint", 12, 2),  # max_steps: the part-epoch's end
        ("on_validation_end", 12, 2), ("on_epoch_end", 12, 2), ("on_checkpoint", 12, 2),
        ("on_train_end", 12, 2),
    ]
    # what each hook was given: the history's records, validation's figures, the step losses, the checkpoint
    assert recorder.of("on_epoch_end") == first and first[-1]["partial"] and first[-1]["epoch"] == 2.4
    assert recorder.of("on_train_end") == [first]
    assert [s["neg_elbo"] for s in recorder.of("on_validation_end")] == [h["valid_loss"] for h in first]
    losses = recorder.of("on_step_end")
    assert [sum(losses[:5]) / 5, sum(losses[5:10]) / 5] == pytest.approx([h["train_loss"] for h in first[:2]])
    assert recorder.of("on_checkpoint") == [(path, step) for step in (3, 5, 6, 9, 10, 12, 12)]
    run = recorder.run
    assert len(recorder.runs) == 1 and run.model is model and isinstance(run.optimizer, torch.optim.Adam)
    assert (run.checkpoint, run.main, run.config.max_steps, run.state.history) == (path, True, 12, first[:2])
    # resumed mid-epoch 3 (2 of its 5 steps taken): it starts there and finishes the epoch
    again = Recorder()
    rest = drawzoo.train(tiny_draw(), train, valid, epochs=3, seed=4, checkpoint=path, every_steps=3,
                         callbacks=[again], **FAST)
    assert again.calls == [
        ("on_train_start", 12, 2), ("on_epoch_start", 12, 2),
        ("on_step_end", 13, 2), ("on_step_end", 14, 2), ("on_step_end", 15, 2), ("on_checkpoint", 15, 2),
        ("on_validation_end", 15, 2), ("on_epoch_end", 15, 3), ("on_checkpoint", 15, 3),
        ("on_train_end", 15, 3),
    ]
    assert again.of("on_epoch_end") == rest[-1:] and [h["epoch"] for h in rest] == [1, 2, 3]
    # a finished run called again: it starts and ends, nothing between
    done = Recorder()
    drawzoo.train(tiny_draw(), train, valid, epochs=3, seed=4, checkpoint=path, callbacks=[done], **FAST)
    assert done.calls == [("on_train_start", 15, 3), ("on_train_end", 15, 3)]


class StopAt(drawzoo.Callback):
    """Asks the run to stop after optimizer step `step`, or after epoch `epoch`; keeps the history
    that `on_train_end` gets."""

    def __init__(self, step=None, epoch=None):
        self.step, self.epoch, self.ended = step, epoch, None

    def on_step_end(self, run, loss):
        if run.state.step == self.step:
            run.stop(f"step {self.step} reached")

    def on_epoch_end(self, run, record):
        if record["epoch"] == self.epoch:
            run.stop(f"epoch {self.epoch} is enough")

    def on_train_end(self, run, history):
        self.ended = history


def test_a_stop_asked_by_a_callback_checkpoints_and_resumes_bit_for_bit(data, tmp_path, caplog):
    """Stopped after step 7 (mid-epoch), then after epoch 2 (as early stopping does), then asked to
    stop when no step is left (nothing changes): the run ends with the weights of one that nobody
    stopped, and callbacks that stop nothing do not change a run."""
    train, valid = data
    straight = tiny_draw()
    full = drawzoo.train(straight, train, valid, epochs=3, seed=4, **FAST)
    path = tmp_path / "run.pt"
    caplog.set_level(logging.WARNING, logger="drawzoo.training")
    stopper = StopAt(step=7)
    part = drawzoo.train(tiny_draw(), train, valid, epochs=3, seed=4, checkpoint=path, callbacks=[stopper], **FAST)
    assert [{k: v for k, v in h.items() if k not in ("train_loss", "seconds")} for h in part] == [
        {"epoch": 1, "step": 5, "valid_loss": full[0]["valid_loss"]},
        {"epoch": 1.4, "step": 7, "valid_loss": None, "partial": True, "stopped": "step 7 reached"}]
    assert stopper.ended == part and read_checkpoint(path)["progress"]["step"] == 7
    assert [r.getMessage() for r in caplog.records if r.levelname == "WARNING"] == [
        f"stopped as a callback asked (step 7 reached) at step 7 (epoch 1.4): checkpoint {path}, "
        "resume from it to continue"]
    stopper, recorder = StopAt(epoch=2), Recorder()
    rest = drawzoo.train(tiny_draw(), train, valid, epochs=3, seed=4, checkpoint=path, callbacks=[stopper, recorder],
                         **FAST)
    assert _losses(rest) == _losses(full[:2]) and rest[-1]["stopped"] == "epoch 2 is enough"
    assert recorder.of("on_checkpoint") == [(path, 10)]  # the epoch's checkpoint, not written again to stop
    assert read_checkpoint(path)["progress"]["step"] == 10 and stopper.ended == rest
    resumed, stopper = tiny_draw(), StopAt(epoch=3)
    final = drawzoo.train(resumed, train, valid, epochs=3, seed=4, checkpoint=path, callbacks=[stopper, Recorder()],
                          **FAST)
    assert _losses(final) == _losses(full) and "stopped" not in final[-1]
    assert _same_weights(resumed, straight)


def test_a_stop_on_the_last_step_of_the_budget_leaves_the_epoch_end_to_the_rerun(data, tmp_path):
    """max_steps ends the run at an epoch's last step, and a stop is asked on that step: the stop
    comes first (no validation), and a rerun still validates and records that epoch."""
    train, valid = data
    straight = tiny_draw()
    full = drawzoo.train(straight, train, valid, epochs=3, max_steps=10, seed=4, **FAST)
    assert [h["epoch"] for h in full] == [1, 2]
    path = tmp_path / "run.pt"
    part = drawzoo.train(tiny_draw(), train, valid, epochs=3, max_steps=10, seed=4, checkpoint=path,
                         callbacks=[StopAt(step=10)], **FAST)
    assert part[-1]["partial"] and part[-1]["stopped"] == "step 10 reached" and part[-1]["valid_loss"] is None
    resumed = tiny_draw()
    rest = drawzoo.train(resumed, train, valid, epochs=3, max_steps=10, seed=4, checkpoint=path, **FAST)
    assert _losses(rest) == _losses(full) and read_checkpoint(path)["progress"]["epoch"] == 2
    assert _same_weights(resumed, straight)


class Typo:
    def on_epoch_ends(self, run, record):
        pass


class WrongArguments(drawzoo.Callback):
    def on_step_end(self, loss):
        pass


@pytest.mark.parametrize("callbacks,message", [
    ([Typo()], "callback Typo has a method on_epoch_ends, which drawzoo.train never calls (did you mean "
               f"on_epoch_end?): the points of a run are {', '.join(HOOKS)}"),
    ([WrongArguments()], "callback WrongArguments: on_step_end(loss) cannot be called as on_step_end(run, loss), "
                         "as drawzoo.train calls it"),
    ([Recorder], "callbacks: Recorder is a class; give an instance of it, e.g. Recorder()"),
    (Recorder(), "callbacks must be a list of callback objects (e.g. [MyCallback()]), got Recorder"),
], ids=["typo", "arguments", "class", "not a list"])
def test_a_hook_drawzoo_would_not_call_is_refused_before_any_work(data, tmp_path, callbacks, message):
    model = tiny_draw()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    with pytest.raises(drawzoo.ConfigError, match=re.escape(message)):
        drawzoo.train(model, data[0], epochs=1, checkpoint=tmp_path / "run.pt", callbacks=callbacks, **FAST)
    assert list(tmp_path.iterdir()) == [] and all(torch.equal(v, before[k]) for k, v in model.state_dict().items())
    assert HOOKS == ("on_train_start", "on_epoch_start", "on_step_end", "on_validation_end", "on_epoch_end",
                     "on_checkpoint", "on_train_end")


class Boom(Exception):
    pass


class RaiseAt(drawzoo.Callback):
    """Raises `Boom` in `hook` at optimizer step `step`; keeps the bytes of each checkpoint written."""

    def __init__(self, hook, step):
        self.hook, self.step, self.written = hook, step, None

    def on_checkpoint(self, run, path):
        self.written = path.read_bytes()

    def on_step_end(self, run, loss):
        self._maybe("on_step_end", run)

    def on_epoch_end(self, run, record):
        self._maybe("on_epoch_end", run)

    def _maybe(self, hook, run):
        if hook == self.hook and run.state.step == self.step:
            raise Boom


@pytest.mark.parametrize("hook,step,kept", [("on_step_end", 8, 6), ("on_epoch_end", 10, 9)])
def test_a_callback_that_raises_leaves_the_last_checkpoint(data, tmp_path, hook, step, kept):
    """The exception goes out of train(); the checkpoint is the last one written before (not the
    end of the epoch whose hook raised), and it resumes to the weights of an uninterrupted run."""
    train, valid = data
    straight = tiny_draw()
    drawzoo.train(straight, train, valid, epochs=3, seed=2, **FAST)
    path, raiser = tmp_path / "run.pt", RaiseAt(hook, step)
    with pytest.raises(Boom):
        drawzoo.train(tiny_draw(), train, valid, epochs=3, seed=2, checkpoint=path, every_steps=3,
                      callbacks=[raiser], **FAST)
    assert path.read_bytes() == raiser.written and read_checkpoint(path)["progress"]["step"] == kept
    resumed = tiny_draw()
    drawzoo.train(resumed, train, valid, epochs=3, seed=2, checkpoint=path, every_steps=3, **FAST)
    assert _same_weights(resumed, straight)


def test_a_skipped_step_is_told_with_a_nan_loss(data):
    class NaNAtStep3(TraceMeanField_ELBO):
        calls = 0

        def differentiable_loss(self, model, guide, *args, **kwargs):
            NaNAtStep3.calls += 1
            loss = super().differentiable_loss(model, guide, *args, **kwargs)
            return loss * float("nan") if NaNAtStep3.calls == 3 else loss

    recorder = Recorder()
    drawzoo.train(tiny_draw(), data[0], epochs=1, elbo=NaNAtStep3(), callbacks=[recorder], **FAST)
    steps = [(step, loss) for (hook, step, _), (_, loss) in zip(recorder.calls, recorder.given) if hook == "on_step_end"]
    assert [step for step, _ in steps] == [1, 2, 3, 4, 5]
    assert [math.isnan(loss) for _, loss in steps] == [False, False, True, False, False]


def test_on_epoch_still_gets_each_record_before_the_callbacks(data):
    """``on_epoch=``: each record after validation, a part-epoch's without its "partial" mark, as
    before callbacks came; then the callbacks, each with its own copy."""
    train, valid = data
    seen = []

    class Changes(drawzoo.Callback):
        def on_epoch_end(self, run, record):
            seen.append(("callback", dict(record)))
            record["train_loss"] = 0.0  # its own copy: the history keeps the figure

    history = drawzoo.train(tiny_draw(), train, valid, epochs=3, max_steps=7,
                            on_epoch=lambda record: seen.append(("on_epoch", record)), callbacks=[Changes()], **FAST)
    unmarked = {k: v for k, v in history[1].items() if k != "partial"}
    assert seen == [("on_epoch", history[0]), ("callback", history[0]), ("on_epoch", unmarked), ("callback", history[1])]
    assert history[1]["partial"] and all(h["train_loss"] > 0 for h in history)


class _TwoProcesses(drawzoo.distributed.Group):
    """A world of two processes whose collectives are this process alone's (or fail, as
    `failing` says): what a torchrun process sees, without torchrun."""

    failing = False

    def _maybe_fail(self):
        if self.failing:
            raise drawzoo.distributed.LostProcesses("Connection closed by peer")

    def sum(self, *values):
        self._maybe_fail()
        return [2 * v for v in values]

    def mean_(self, tensors):
        self._maybe_fail()

    def broadcast_(self, tensors):
        pass

    def gather(self, obj):
        return [obj, obj]


@pytest.mark.parametrize("failing", [False, True], ids=["a hook's error", "a collective's error"])
def test_under_torchrun_only_a_failed_collective_reads_as_lost_processes(data, failing, monkeypatch):
    """A hook's own RuntimeError reaches the caller as it is; only a collective's failure is
    reported as the loss of the other processes."""
    monkeypatch.setattr("drawzoo.training.loop.distributed.join", lambda device: _TwoProcesses(0, 2))
    monkeypatch.setattr(_TwoProcesses, "failing", failing)

    class Fails:
        def on_step_end(self, run, loss):
            raise RuntimeError("the tracker's server is down")

    with pytest.raises((RuntimeError, drawzoo.TrainingError)) as caught:
        drawzoo.train(tiny_draw(), data[0], epochs=1, callbacks=[Fails()], **FAST)
    if failing:
        assert type(caught.value) is drawzoo.TrainingError
        assert str(caught.value) == "rank 0 of 2: lost the other training processes (Connection closed by peer)"
    else:
        assert type(caught.value) is RuntimeError and str(caught.value) == "the tracker's server is down"

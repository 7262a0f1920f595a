"""README's "Reliability" promises, one test each: settings checked before any work, checkpoints
never replaced by worse ones, one seed one run, outputs that never overwrite an input."""

import math
import re
import shutil
import subprocess
import sys

import numpy as np
import pytest
import torch

import drawzoo
from drawzoo.checkpoints import read_checkpoint, save_checkpoint
from drawzoo.cli import main
from tests.conftest import binary_images
from tests.test_train_config import one_line_error, run

SHAPE = (1, 10, 12)
TINY = ["--T", "2", "--hidden-dim", "16", "--latent-dim", "4", "--read-size", "2", "--write-size", "3"]


@pytest.fixture(scope="module")
def npz(tmp_path_factory):
    path = tmp_path_factory.mktemp("data") / "images.npz"
    np.savez(path, images=binary_images(40, SHAPE).numpy())
    return path


@pytest.fixture(scope="module")
def trained(tmp_path_factory, npz):
    """A good checkpoint of one epoch (5 steps), and the best one the CLI keeps beside it."""
    ckpt = tmp_path_factory.mktemp("good") / "draw.pt"
    assert main([*map(str, ["train", "draw", *TINY, "--data", npz, "--epochs", 1, "--batch-size", 8,
                            "--checkpoint", ckpt, "--quiet"])]) == 0
    return ckpt


@pytest.fixture
def good(trained, tmp_path):
    """A copy of `trained` and of its best checkpoint in `tmp_path`: (checkpoint, best, their bytes)."""
    ckpt, best = tmp_path / "draw.pt", tmp_path / "draw.best.pt"
    for source, copy in ((trained, ckpt), (trained.with_name(best.name), best)):
        if source.exists():
            shutil.copy(source, copy)
    return ckpt, best, contents(ckpt, best)


def contents(*paths):
    """The bytes of each file (None: no such file)."""
    return tuple(p.read_bytes() if p.exists() else None for p in paths)


def tiny_draw(**kw):
    torch.manual_seed(0)
    return drawzoo.load("draw", image_shape=SHAPE, T=2, hidden_dim=16, latent_dim=4, read_size=2, write_size=3, **kw)


# -- 1. every setting is checked before any work -----------------------------------------------------


def test_a_negative_clip_norm_is_an_error_before_any_work(capsys, npz, tmp_path):
    with pytest.raises(drawzoo.ConfigError, match="'clip_norm' must be a positive"):
        drawzoo.train(tiny_draw(), binary_images(16, SHAPE), clip_norm=-5, checkpoint=tmp_path / "x.pt")
    err = one_line_error(capsys, "train", "draw", *TINY, "--data", npz, "--clip-norm", -5, "--checkpoint",
                         tmp_path / "x.pt")
    assert "'clip_norm' must be a positive" in err and "got -5.0" in err
    assert list(tmp_path.iterdir()) == []


def test_inf_turns_clipping_and_the_divergence_check_off(tmp_path):
    """The legal "off" of clip_norm and divergence_threshold: inf, in Python, on the command line and
    in a recipe alike (None has no spelling in TOML or on a command line)."""
    x = binary_images(16, SHAPE)
    unclipped, huge = tiny_draw(), tiny_draw()
    drawzoo.train(unclipped, x, epochs=1, batch_size=8, lr=0.1, clip_norm=math.inf, progress=False)
    drawzoo.train(huge, x, epochs=1, batch_size=8, lr=0.1, clip_norm=1e30, progress=False)
    assert all(torch.equal(a, b) for a, b in zip(unclipped.parameters(), huge.parameters()))
    recipe = tmp_path / "run.toml"
    recipe.write_text("[train]\nclip_norm = inf\ndivergence_threshold = inf\n")
    assert drawzoo.load_recipe(recipe).train_config().clip_norm == math.inf


@pytest.mark.parametrize("options", [["--clip-norm", "0"], ["--clip-norm", "nan", "--every-steps", "1"]])
def test_a_bad_clip_norm_leaves_a_good_checkpoint_as_it_was(capsys, npz, good, options):
    ckpt, best, before = good
    err = one_line_error(capsys, "train", "draw", "--data", npz, "--epochs", 2, "--checkpoint", ckpt, *options)
    assert "'clip_norm' must be a positive" in err
    assert contents(ckpt, best) == before


def test_unknown_and_absent_devices_are_one_line_errors_naming_the_available_ones(capsys, npz, good, tmp_path):
    ckpt = good[0]
    absent = ["cuda:64"] + ([] if torch.cuda.is_available() else ["cuda"])
    for device in ["tpu9", *absent]:
        for argv in (["train", "draw", *TINY, "--data", npz, "--checkpoint", tmp_path / "new.pt"],
                     ["sample", ckpt, "--out", tmp_path / "s.png"], ["animate", ckpt, "--out", tmp_path / "a.gif"],
                     ["eval", ckpt, "--data", npz]):
            err = one_line_error(capsys, *argv, "--device", device)
            assert f"device {device!r} is not" in err and "this machine has cpu" in err, err  # cpu first
    assert sorted(p.name for p in tmp_path.iterdir()) == ["draw.best.pt", "draw.pt"]  # nothing written
    with pytest.raises(drawzoo.ConfigError, match="device 'cuda:64' is not available: this machine has cpu"):
        drawzoo.train(tiny_draw(), binary_images(8, SHAPE), device="cuda:64", progress=False)
    # the command itself, as a user runs it: one line, exit status 2, no traceback
    proc = subprocess.run([sys.executable, "-m", "drawzoo", "sample", str(ckpt), "--device", absent[-1]],
                          capture_output=True, text=True, cwd=tmp_path)
    assert proc.returncode == 2 and proc.stderr.startswith(f"drawzoo: error: device {absent[-1]!r} is not available")
    assert len(proc.stderr.strip().splitlines()) == 1


def test_outputs_are_never_the_checkpoint_or_an_input(capsys, npz, good, tmp_path):
    ckpt, best, before = good
    data_bytes = npz.read_bytes()
    link = tmp_path / "link.json"
    link.symlink_to(ckpt)
    cases = [
        (["eval", ckpt, "--data", npz, "--json", ckpt], f"--json {ckpt} is CHECKPOINT {ckpt}"),
        (["eval", ckpt, "--data", npz, "--json", link], f"--json {link} is CHECKPOINT {ckpt}"),
        (["eval", ckpt, "--data", npz, "--json", npz], f"--json {npz} is --data {npz}"),
        (["sample", ckpt, "--out", ckpt], f"--out {ckpt} is CHECKPOINT"),
        (["animate", ckpt, "--out", ckpt], f"--out {ckpt} is CHECKPOINT"),
        (["train", "draw", "--data", npz, "--checkpoint", ckpt, "--best", ckpt], f"--best {ckpt} is --checkpoint"),
        (["train", "draw", "--data", npz, "--checkpoint", ckpt, "--best", npz], f"--best {npz} is --data"),
        (["train", "draw", "--data", npz, "--checkpoint", ckpt, "--log-dir", ckpt], f"--log-dir {ckpt} is --checkpoint"),
    ]
    for argv, message in cases:
        err = one_line_error(capsys, *argv)
        assert message in err and "it would be overwritten" in err, err
    assert contents(ckpt, best, npz) == (*before, data_bytes)
    with pytest.raises(drawzoo.ConfigError, match="best .* is checkpoint"):
        drawzoo.train(tiny_draw(), binary_images(8, SHAPE), checkpoint=ckpt, best=ckpt)
    assert ckpt.read_bytes() == before[0]


def test_a_plain_state_dict_is_refused_as_a_checkpoint(capsys, npz, tmp_path):
    plain = tmp_path / "weights.pt"
    torch.save(tiny_draw().state_dict(), plain)
    before = plain.read_bytes()
    err = one_line_error(capsys, "train", "draw", *TINY, "--data", npz, "--checkpoint", plain)
    assert f"{plain}: not a drawzoo checkpoint" in err
    assert plain.read_bytes() == before


def test_animate_needs_a_model_that_draws_in_steps(capsys, npz, tmp_path):
    ckpt = tmp_path / "vae.pt"
    assert run(capsys, "train", "vae", "--hidden-dim", 8, "--data", npz, "--epochs", 1, "--checkpoint", ckpt,
               "--quiet")[0] == 0
    err = one_line_error(capsys, "animate", ckpt, "--out", tmp_path / "vae.gif")
    assert "holds a 'vae' model, which draws in one step: no canvases through time to animate" in err
    assert not (tmp_path / "vae.gif").exists()


def test_eval_batch_size_zero_is_an_error_not_the_default(capsys, npz, good):
    err = one_line_error(capsys, "eval", good[0], "--data", npz, "--batch-size", 0)
    assert "--batch-size must be >= 1, got 0" in err
    with pytest.raises(ValueError, match="batch_size must be >= 1"):
        drawzoo.evaluate(tiny_draw(), binary_images(4, SHAPE), batch_size=0)


# -- 2. a checkpoint is never replaced by a worse one --------------------------------------------------


def test_a_diverging_run_stops_naming_the_step_and_keeps_the_last_checkpoint(capsys, npz, good, tmp_path):
    ckpt, best, before = good
    # resuming with another learning rate is refused: it would not be the run the checkpoint holds
    err = one_line_error(capsys, "train", "draw", "--data", npz, "--epochs", 2, "--lr", 10, "--checkpoint", ckpt)
    assert "lr: checkpoint has 0.001, given 10.0" in err and contents(ckpt, best) == before
    # resumed, with a loss above the threshold: stopped at the first step, both checkpoints as they were
    err = one_line_error(capsys, "train", "draw", "--data", npz, "--epochs", 2, "--checkpoint", ckpt,
                         "--divergence-threshold", 50, "--quiet")
    assert re.search(rf"diverged at step 6: loss [\d.]+ nats per image, above divergence_threshold 50; "
                     rf"the last checkpoint, {re.escape(str(ckpt))} at step 5, is intact", err), err
    assert contents(ckpt, best) == before
    # lr 10 diverges at once: the weights after step 1 are never written
    fresh = tmp_path / "fresh.pt"
    err = one_line_error(capsys, "train", "draw", *TINY, "--data", npz, "--lr", 10, "--every-steps", 1,
                         "--checkpoint", fresh, "--quiet")
    assert "diverged at step 1: the weights after it have loss" in err and f"nothing was written to {fresh}" in err
    assert not fresh.exists()
    # lr 0.5 diverges after a few steps: training stops with the checkpoint of the step before
    x = binary_images(40, SHAPE)
    with pytest.raises(drawzoo.DivergenceError, match=r"diverged at step (\d+)") as e:
        drawzoo.train(tiny_draw(), x, epochs=3, batch_size=8, lr=0.5, every_steps=1, checkpoint=fresh, progress=False)
    assert isinstance(e.value, drawzoo.TrainingError)
    step = int(re.search(r"step (\d+)", str(e.value)).group(1))
    payload = read_checkpoint(fresh)
    assert 1 < step and payload["progress"]["step"] == step - 1 and f"{fresh} at step {step - 1}" in str(e.value)
    kept = drawzoo.load(checkpoint=fresh)
    assert all(torch.isfinite(p).all() for p in kept.parameters())


def test_non_finite_weights_are_never_written(monkeypatch, tmp_path):
    ckpt = tmp_path / "run.pt"
    x = binary_images(16, SHAPE)
    drawzoo.train(tiny_draw(), x, epochs=1, batch_size=8, checkpoint=ckpt, progress=False)
    before = ckpt.read_bytes()
    model = drawzoo.load(checkpoint=ckpt)
    with torch.no_grad():
        next(model.parameters())[0] = math.nan
    with pytest.raises(drawzoo.CheckpointError, match="not written, the weights are not finite"):
        save_checkpoint(ckpt, model)
    # a step that leaves a weight non-finite stops the run there
    step = torch.optim.Adam.step

    def poisoned(self, *args, **kw):
        result = step(self, *args, **kw)
        if self.state[self.param_groups[0]["params"][0]]["step"] == 3:  # the first step after resuming
            self.param_groups[0]["params"][0].data.fill_(math.inf)
        return result

    monkeypatch.setattr(torch.optim.Adam, "step", poisoned)
    with pytest.raises(drawzoo.DivergenceError, match=f"diverged at step 3: the step left weights that are not "
                                                      f"finite; the last checkpoint, {ckpt} at step 2, is intact"):
        drawzoo.train(drawzoo.load(checkpoint=ckpt), x, epochs=3, batch_size=8, checkpoint=ckpt, progress=False)
    assert read_checkpoint(ckpt)["progress"]["step"] == 2 and ckpt.read_bytes() == before


def test_the_cli_keeps_the_best_checkpoint_beside_the_latest(capsys, npz, trained, good, tmp_path):
    ckpt, best, _ = good
    assert read_checkpoint(ckpt)["train_config"]["best"] == str(trained.with_name("draw.best.pt"))  # by default
    assert drawzoo.load(checkpoint=best).config == drawzoo.load(checkpoint=ckpt).config
    assert read_checkpoint(best)["valid_loss"] == read_checkpoint(ckpt)["progress"]["best_valid"]
    off = tmp_path / "off.pt"
    assert run(capsys, "train", "draw", *TINY, "--data", npz, "--epochs", 1, "--no-best", "--checkpoint", off,
               "--quiet")[0] == 0
    assert read_checkpoint(off)["train_config"]["best"] is None and not (tmp_path / "off.best.pt").exists()


# -- 3. same seed, same run --------------------------------------------------------------------------


def test_one_seed_gives_bit_identical_runs(capsys, npz, tmp_path):
    runs = [tmp_path / "a.pt", tmp_path / "b.pt"]
    for ckpt in runs:
        assert run(capsys, "train", "draw", *TINY, "--data", npz, "--epochs", 1, "--batch-size", 8, "--seed", 7,
                   "--checkpoint", ckpt, "--quiet")[0] == 0
    a, b = (read_checkpoint(p) for p in runs)
    for payload in (a, b):  # all but where they write, the wall times, and the sha256 over them
        del payload["sha256"], payload["train_config"]["best"]
        for record in payload["progress"]["history"]:
            del record["seconds"]
    assert _equal(a, b)
    # in Python: drawzoo.load(..., seed=...) fixes the initial weights, leaving the global RNG as it was
    config = dict(image_shape=SHAPE, T=2, hidden_dim=16, latent_dim=4, read_size=2, write_size=3)
    state = torch.get_rng_state()
    m1, m2, m3 = (drawzoo.load("draw", **config, seed=seed) for seed in (7, 7, 8))
    assert torch.equal(torch.get_rng_state(), state)
    assert _equal(m1.state_dict(), m2.state_dict()) and not _equal(m1.state_dict(), m3.state_dict())
    x = binary_images(16, SHAPE)
    h1, h2 = (drawzoo.train(m, x, epochs=1, batch_size=8, seed=7, progress=False) for m in (m1, m2))
    assert [r["train_loss"] for r in h1] == [r["train_loss"] for r in h2] and _equal(m1.state_dict(), m2.state_dict())


def _equal(a, b) -> bool:
    """Bit-for-bit equality of nested dicts/lists of tensors and builtins."""
    if isinstance(a, torch.Tensor):
        return isinstance(b, torch.Tensor) and a.dtype == b.dtype and torch.equal(a, b)
    if isinstance(a, dict):
        return isinstance(b, dict) and a.keys() == b.keys() and all(_equal(a[k], b[k]) for k in a)
    if isinstance(a, (list, tuple)):
        return isinstance(b, (list, tuple)) and len(a) == len(b) and all(map(_equal, a, b))
    return a == b

"""`drawzoo.TrainConfig`: one source for `drawzoo.train`, the CLI and checkpoints."""

import argparse
import dataclasses
import logging

import numpy as np
import pytest
import torch

import drawzoo
from drawzoo.checkpoints import digest, read_checkpoint
from drawzoo.cli import build_parser, main
from tests.conftest import binary_images

SHAPE = (1, 10, 12)
TINY = ["--T", 2, "--hidden-dim", 12, "--latent-dim", 2, "--write-size", 3]


@pytest.fixture(scope="module")
def npz(tmp_path_factory):
    path = tmp_path_factory.mktemp("data") / "images.npz"
    np.savez(path, images=binary_images(40, SHAPE).numpy())
    return path


def run(capsys, *argv):
    code = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return code, out, err


def one_line_error(capsys, *argv) -> str:
    code, _, err = run(capsys, *argv)
    assert code == 2 and err.startswith("drawzoo: error: "), err
    assert len(err.strip().splitlines()) == 1 and "Traceback" not in err
    return err


def tiny_draw():
    torch.manual_seed(0)
    return drawzoo.load("draw", image_shape=SHAPE, T=3, hidden_dim=12, latent_dim=2, write_size=3)


def same_weights(a: dict, b: dict) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


# -- TrainConfig ----------------------------------------------------------------------------------


def test_the_train_options_are_exactly_the_train_config_fields():
    parser = build_parser("draw")
    train = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction)).choices["train"]
    dests = {a.dest for a in train._actions}
    fields = [f.name for f in dataclasses.fields(drawzoo.TrainConfig)]
    model_fields = [f.name for f in dataclasses.fields(drawzoo.model_class("draw").Config)]
    assert dests == ({f"train.{name}" for name in fields} | {f"config.{name}" for name in model_fields}
                     | {"help", "model", "recipe", "data.train", "data.valid", "data.valid_limit", "data_root",
                        "checkpoint", "no_best", "quiet"})
    options = {a.dest: a for a in train._actions}
    for field in dataclasses.fields(drawzoo.TrainConfig):
        action = options[f"train.{field.name}"]
        assert f"--{field.name.replace('_', '-')}" in action.option_strings
        help_line = field.metadata["help"] + ("" if field.default is None else f" [{field.default}]")
        assert action.help == help_line.replace("%", "%%")  # as argparse's format strings write "%"
    assert options["train.objective"].choices == tuple(drawzoo.evaluation.objectives.OBJECTIVES)
    assert options["train.validate"].choices == ("first", "every")


@pytest.mark.parametrize("settings,message", [
    (dict(batch_size=0), "train config 'batch_size' must be >= 1, got 0"),
    (dict(epochs=2.5), "train config 'epochs' must be an integer, got 2.5"),
    (dict(epochs=-1), "train config 'epochs' must be >= 0, got -1"),
    (dict(lr=float("nan")), "train config 'lr' must be a positive finite number, got nan"),
    (dict(lr=-1e-3), "train config 'lr' must be a positive finite number, got -0.001"),
    (dict(lr=1e-3, lr_min=1e-2), "train config 'lr_min' must be in [0, lr] = [0, 0.001], got 0.01"),
    (dict(lr_min=1e-5, anneal_epochs=0), "train config 'anneal_epochs' must be >= 1, got 0"),
    (dict(anneal_epochs=10), "train config 'anneal_epochs' is the length of lr_min's cosine: give lr_min too"),
    (dict(anneal_from=10), "train config 'anneal_from' is the epoch lr_min's cosine begins at: give lr_min too"),
    (dict(lr_min=1e-5, anneal_from=-1), "train config 'anneal_from' must be >= 0, got -1"),
    (dict(clip_norm=0), "train config 'clip_norm' must be a positive number (inf: off), got 0.0"),
    (dict(max_steps=0), "train config 'max_steps' must be >= 1, got 0"),
    (dict(max_minutes=0), "train config 'max_minutes' must be a positive finite number, got 0.0"),
    (dict(max_minutes=float("inf")), "train config 'max_minutes' must be a positive finite number, got inf"),
    (dict(every_steps="3"), "train config 'every_steps' must be an integer, got '3'"),
    (dict(objective="iwea"), "unknown objective 'iwea'; valid: elbo, elbo-mc, iwae, tail-adaptive"),
    (dict(objective="tail-adaptive"), "objective 'tail-adaptive' needs particles >= 2 (an integer), got 1"),
    (dict(device="gpu"), "train config 'device': device 'gpu' is not a device name (cpu, cuda, cuda:1, ...); "
                           "this machine has cpu"),
    (dict(best=3), "train config 'best' must be a string, got 3"),
    (dict(validate="never"), "train config 'validate' must be one of 'first', 'every', got 'never'"),
    (dict(lrr=1e-3), "unknown train config key: 'lrr'; valid keys are: epochs, max_steps, max_minutes, batch_size, "),
])
def test_train_config_errors_name_the_field_before_any_work(tmp_path, settings, message):
    with pytest.raises(drawzoo.DrawzooError) as e:
        drawzoo.TrainConfig.from_dict(settings)
    assert message in str(e.value)
    model = tiny_draw()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    with pytest.raises(drawzoo.DrawzooError) as e:
        drawzoo.train(model, binary_images(16, SHAPE), checkpoint=tmp_path / "run.pt", progress=False, **settings)
    assert message in str(e.value)
    assert list(tmp_path.iterdir()) == [] and same_weights(before, model.state_dict())


def test_keywords_build_the_config_and_override_a_given_one(tmp_path):
    config = drawzoo.TrainConfig(epochs=1, batch_size=8, lr=3e-3, best=tmp_path / "best.pt", device=torch.device("cpu"))
    assert (config.best, config.device, config.lr_min) == (str(tmp_path / "best.pt"), "cpu", None)
    x = binary_images(16, SHAPE)
    a = drawzoo.train(tiny_draw(), x, x[:8], config, lr=1e-2, checkpoint=tmp_path / "a.pt", progress=False)
    b = drawzoo.train(tiny_draw(), x, x[:8], epochs=1, batch_size=8, lr=1e-2, best=tmp_path / "best.pt", device="cpu",
                      checkpoint=tmp_path / "b.pt", progress=False)
    assert a == [{**b[0], "seconds": a[0]["seconds"]}]
    stored = read_checkpoint(tmp_path / "a.pt")["train_config"]
    assert stored == {**dataclasses.asdict(config), "lr": 1e-2} == read_checkpoint(tmp_path / "b.pt")["train_config"]
    with pytest.raises(drawzoo.ConfigError, match="config must be a drawzoo.TrainConfig .*got dict"):
        drawzoo.train(tiny_draw(), x, None, {"epochs": 1})


# -- resuming ----------------------------------------------------------------------------------------


def test_resuming_with_another_trajectory_names_each_field_and_a_budget_may_change(tmp_path):
    x, path = binary_images(32, SHAPE), tmp_path / "run.pt"
    fixed = dict(batch_size=8, lr=3e-3, seed=1, progress=False)
    drawzoo.train(tiny_draw(), x, epochs=1, checkpoint=path, **fixed)
    written = path.read_bytes()
    with pytest.raises(drawzoo.CheckpointError) as e:
        drawzoo.train(tiny_draw(), x, epochs=2, checkpoint=path, **{**fixed, "seed": 2, "lr": 1e-3, "clip_norm": 5.0})
    message = str(e.value)
    assert message.startswith(f"{path}: given train config contradicts the checkpoint's")
    assert "seed: checkpoint has 1, given 2" in message and "lr: checkpoint has 0.003, given 0.001" in message
    assert "clip_norm: checkpoint has 10.0, given 5.0" in message and "batch_size" not in message
    assert path.read_bytes() == written
    # the budget and where the run writes may change
    history = drawzoo.train(tiny_draw(), x, x[:8], epochs=3, max_steps=10, every_steps=2, max_bad_steps=2,
                            num_preview=4, best=tmp_path / "best.pt", log_dir=tmp_path / "tb", checkpoint=path,
                            **fixed)
    assert history[-1]["step"] == 10 and read_checkpoint(path)["train_config"]["max_steps"] == 10


def test_a_plain_resume_on_the_command_line_keeps_every_setting_of_the_checkpoint(capsys, npz, tmp_path):
    ckpt = tmp_path / "run.pt"
    first = ["--batch-size", 8, "--lr", 3e-3, "--lr-min", 1e-4, "--clip-norm", 5, "--valid-samples", 2, "--seed", 4,
             "--objective", "iwae", "--particles", 2, "--every-steps", 3, "--num-preview", 4, "--validate", "every"]
    code, _, err = run(capsys, "train", "draw", *TINY, "--data", npz, "--valid-data", npz, "--epochs", 1, *first,
                       "--checkpoint", ckpt, "--quiet")
    assert code == 0, err
    before = read_checkpoint(ckpt)["train_config"]
    code, out, err = run(capsys, "train", "draw", "--data", npz, "--valid-data", npz, "--checkpoint", ckpt,
                         "--epochs", 2, "--quiet")
    assert code == 0, err
    assert read_checkpoint(ckpt)["train_config"] == {**before, "epochs": 2}
    assert "objective RenyiELBO(num_particles=2" in out
    # a checkpoint written before a setting existed resumes with its default
    payload = read_checkpoint(ckpt)
    del payload["train_config"]["validate"]
    payload["sha256"] = digest(payload)
    torch.save(payload, ckpt)
    code, out, err = run(capsys, "train", "draw", "--data", npz, "--valid-data", npz, "--checkpoint", ckpt,
                         "--epochs", 3, "--quiet")
    assert code == 0, err
    assert read_checkpoint(ckpt)["train_config"] == {**before, "epochs": 3, "validate": "first"}
    # a contradiction is found before any work: here, before the data (that is not there) is loaded
    err = one_line_error(capsys, "train", "draw", "--data", tmp_path / "gone.npz", "--checkpoint", ckpt, "--seed", 5,
                         "--valid-samples", 1)
    assert "seed: checkpoint has 4, given 5" in err and "valid_samples: checkpoint has 2, given 1" in err


def test_checkpoints_of_older_versions_resume_and_are_checked(tmp_path):
    """A checkpoint that holds a "settings" dict (drawzoo <= 0.1.x) instead of "train_config"."""
    x, path = binary_images(32, SHAPE), tmp_path / "run.pt"
    kw = dict(batch_size=8, lr=3e-3, seed=1, progress=False)
    straight = tiny_draw()
    drawzoo.train(straight, x, epochs=2, **kw)
    drawzoo.train(tiny_draw(), x, epochs=1, checkpoint=path, **kw)
    payload = read_checkpoint(path)
    del payload["train_config"], payload["elbo"]
    payload["settings"] = {"batch_size": 8, "lr": 3e-3, "lr_min": None, "seed": 1, "clip_norm": 10.0,
                           "elbo": "TraceMeanField_ELBO"}
    payload["sha256"] = digest(payload)
    torch.save(payload, path)
    with pytest.raises(drawzoo.CheckpointError, match="batch_size: checkpoint has 8, given 16"):
        drawzoo.train(tiny_draw(), x, epochs=2, checkpoint=path, **{**kw, "batch_size": 16})
    with pytest.raises(drawzoo.CheckpointError, match="objective: checkpoint has 'elbo', given 'iwae'"):
        drawzoo.train(tiny_draw(), x, epochs=2, checkpoint=path, objective="iwae", **kw)
    resumed = tiny_draw()
    drawzoo.train(resumed, x, epochs=2, checkpoint=path, valid_samples=3, **kw)  # it did not record valid_samples
    assert same_weights(resumed.state_dict(), straight.state_dict())
    assert "settings" not in read_checkpoint(path)


# -- messages go through logging ----------------------------------------------------------------------


def test_the_library_logs_and_the_command_prints(capsys, caplog, npz, tmp_path):
    caplog.set_level(logging.INFO, logger="drawzoo")
    drawzoo.train(tiny_draw(), binary_images(16, SHAPE), epochs=2, batch_size=8, progress=False)
    assert capsys.readouterr() == ("", "")  # the library prints nothing
    lines = [r.getMessage() for r in caplog.records if r.name == "drawzoo.training"]
    assert [line.split(":")[0] for line in lines] == ["epoch 1", "epoch 2"] and "nats/image" in lines[0]
    caplog.clear()
    code, out, err = run(capsys, "train", "draw", *TINY, "--data", npz, "--epochs", 2, "--checkpoint",
                         tmp_path / "run.pt")
    assert code == 0, err
    shown = [line for line in out.splitlines() if line.startswith("epoch ")]
    assert [line.split(":")[0] for line in shown] == ["epoch 1", "epoch 2", "epoch 2"]  # the last: the summary
    assert shown[0].endswith(" s)") and shown[2].endswith(f"checkpoint {tmp_path / 'run.pt'}")
    assert logging.getLogger("drawzoo").handlers == []  # the command's console output ends with it

"""Recipes: one TOML file for `drawzoo train --recipe` and benchmarks/nll_mnist.py, which train the same weights."""

from pathlib import Path

import pytest
import torch

import drawzoo
from drawzoo.checkpoints import read_checkpoint
from drawzoo.data import binarized_mnist
from drawzoo.training.recipes import load_recipe
from tests.test_benchmark_script import _script, real_data  # noqa: F401 (a fixture)
from tests.test_train_config import npz, one_line_error, run, same_weights  # noqa: F401 (a fixture)

SMOKE = Path(__file__).resolve().parents[1] / "benchmarks" / "recipes" / "smoke"


def write(path: Path, text: str) -> Path:
    path.write_text(text)
    return path


def tiny_recipe(tmp_path, npz) -> Path:
    return write(tmp_path / "tiny.toml", f'''
model = "draw"
[config]
T = 3
hidden_dim = 12
latent_dim = 2
write_size = 3
[train]
epochs = 2
batch_size = 8
lr = 3e-3
lr_min = 1e-4
seed = 4
[data]
train = "{npz}"
''')


# -- a recipe through the CLI and through benchmarks/nll_mnist.py --------------------------------


def test_a_recipe_trains_the_same_weights_through_the_cli_and_the_benchmark_script(real_data, tmp_path, capsys):
    recipe = SMOKE / "draw_attention.toml"  # T=2, LSTM 16, 3 steps of 50 images, 100 valid images
    cli, best = tmp_path / "cli.pt", tmp_path / "cli.best.pt"
    torch.manual_seed(321)  # whatever the RNG was before, both seed the initial weights from the recipe
    code, out, err = run(capsys, "train", "--recipe", recipe, "--checkpoint", cli, "--best", best, "--quiet")
    assert code == 0, err
    script, out_dir = _script(), tmp_path / "bench"
    out_dir.mkdir()
    torch.manual_seed(123)
    data = {split: binarized_mnist(None, split) for split in ("train", "valid", "test")}
    row = script.benchmark(script.read_row(recipe), data, out_dir, device=None, resume=False)
    assert row["label"] == "DRAW (attention)" and row["recipe"] == str(recipe)
    by_cli, by_script = read_checkpoint(cli), read_checkpoint(out_dir / "draw_attention.pt")
    assert by_cli["progress"]["step"] == by_script["progress"]["step"] == 3
    assert same_weights(by_cli["state_dict"], by_script["state_dict"])
    assert same_weights(read_checkpoint(best)["state_dict"],
                        read_checkpoint(out_dir / "draw_attention.best.pt")["state_dict"])
    assert {**by_cli["train_config"], "best": None} == {**by_script["train_config"], "best": None}
    assert by_cli["progress"]["best_valid"] == by_script["progress"]["best_valid"]


# -- recipes and the command line -----------------------------------------------------------------


def test_command_line_options_override_the_recipe(capsys, npz, tmp_path):
    recipe, ckpt = tiny_recipe(tmp_path, npz), tmp_path / "run.pt"
    # no MODEL: the recipe's, whose config options (--T) the parser then knows
    code, out, err = run(capsys, "train", "--recipe", recipe, "--T", 2, "--lr", 2e-3, "--epochs", 1,
                         "--checkpoint", ckpt, "--quiet")
    assert code == 0, err
    assert "T=2, hidden_dim=12" in out and "image_shape=(1, 10, 12)" in out
    stored = read_checkpoint(ckpt)
    assert stored["config"]["T"] == 2 and stored["config"]["latent_dim"] == 2
    config = stored["train_config"]
    assert (config["lr"], config["epochs"]) == (2e-3, 1)  # given
    assert (config["batch_size"], config["lr_min"], config["seed"]) == (8, 1e-4, 4)  # the recipe's
    assert (config["clip_norm"], config["objective"]) == (10.0, "elbo")  # defaults
    # MODEL, when given, must be the recipe's
    assert "MODEL 'vae' contradicts model 'draw' of the recipe" in one_line_error(
        capsys, "train", "vae", "--recipe", recipe, "--checkpoint", tmp_path / "vae.pt")


@pytest.mark.parametrize("text,message", [
    ('model = "draw\n', "not a valid TOML file: "),
    ('model = "draw"\n[trian]\nepochs = 1\n', "unknown table or key 'trian'; valid: model, config, train, data, "
     "benchmark"),
    ('model = "draw"\n[train]\nlrr = 1\n', "unknown train config key: 'lrr'; valid keys are: epochs, max_steps, "),
    ('model = "draw"\n[train]\nlr = "fast"\n', "train config 'lr' must be a number, got 'fast'"),
    ('model = "draw"\n[train]\nvalidate = "never"\n', "train config 'validate' must be one of 'first', 'every', "
     "got 'never'"),
    ('model = "draw"\n[config]\nTee = 3\n', "unknown config key for 'draw': 'Tee'"),
    ('model = "draw"\n[config]\nT = 0\n', "config 'T' must be >= 1, got 0"),
    ('model = "draw"\n[data]\nvalid_limit = 0\n', "data 'valid_limit' must be >= 1, got 0"),
    ('model = "draw"\n[data]\ntrian = "x.npz"\n', "unknown data key: 'trian'; valid keys are: train, valid, "
     "valid_limit"),
    ('model = "drwa"\n', f"unknown model 'drwa'; available: {', '.join(drawzoo.available())}"),
    ('model = 3\n', "'model' must be a registered model's name, got 3"),
    ('train = 3\n', "'train' must be a table ([train]), got 3"),
    ('[config]\nT = 3\n', "[config] holds a model's config fields: it needs model = \"...\""),
], ids=["syntax", "table", "train-key", "train-value", "train-choice", "config-key", "config-value", "data-value",
        "data-key", "model", "model-type", "not-a-table", "config-without-model"])
def test_broken_recipes_are_one_line_errors_naming_file_and_key(capsys, tmp_path, text, message):
    recipe = write(tmp_path / "r.toml", text)
    with pytest.raises(drawzoo.RecipeError) as e:
        load_recipe(recipe)
    assert str(e.value).startswith(f"{recipe}: ") and message in str(e.value)
    err = one_line_error(capsys, "train", "draw", "--recipe", recipe, "--checkpoint", tmp_path / "x.pt")
    assert f"{recipe}: " in err and message in err
    assert not (tmp_path / "x.pt").exists()


def test_a_missing_recipe_and_a_recipe_without_a_model(capsys, tmp_path):
    assert f"{tmp_path / 'nope.toml'}: no such recipe file" in one_line_error(
        capsys, "train", "--recipe", tmp_path / "nope.toml")
    budget = write(tmp_path / "budget.toml", '[train]\nepochs = 1\nvalidate = "every"\n')
    assert f"give MODEL ({', '.join(drawzoo.available())}), or a --recipe that names one" in one_line_error(capsys, "train", "--recipe", budget)
    assert load_recipe(budget).train_config(lr=2e-3) == drawzoo.TrainConfig(epochs=1, lr=2e-3, validate="every")

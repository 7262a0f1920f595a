"""Pretrained tags: every shipped one loads offline and scores what its manifest says; a wrong,
truncated or missing file, an unknown tag or a tag of another model is an error that names it."""

import dataclasses
import hashlib
import json
import os
import shutil
import sys
import urllib.request
from pathlib import Path

import pytest
import torch

import drawzoo
from drawzoo import pretrained
from drawzoo.checkpoints import read_checkpoint
from drawzoo.config import as_dict
from drawzoo.errors import PretrainedError

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
import pretrain  # noqa: E402  (benchmarks/pretrain.py: the check figure's definition)

SHIPPED = pretrained.manifest(pretrained.MANIFEST)
DATA = os.environ.get("DRAWZOO_DATA")


@pytest.fixture
def offline(monkeypatch):
    """No network: a download attempt fails the test."""
    monkeypatch.setattr(urllib.request, "urlopen", lambda *a, **k: pytest.fail("tried to download"))


def test_the_manifest_ships_a_tag_for_each_promised_model():
    models = {e.model for e in SHIPPED.values()}
    assert {"draw", "vae"} <= models, SHIPPED.keys()
    for model in models:  # exactly one default each, for pretrained=True
        assert sum(e.default for e in SHIPPED.values() if e.model == model) == 1, model
    assert drawzoo.list_pretrained() == list(SHIPPED)
    assert all(tag.startswith(f"{SHIPPED[tag].model}.") for tag in SHIPPED)


@pytest.mark.parametrize("tag", list(SHIPPED))
def test_shipped_tag_loads_offline_and_scores_its_manifest_figure(tag, offline):
    entry = SHIPPED[tag]
    assert entry.url is None and (pretrained.WEIGHTS / entry.file).is_file(), "shipped weights are package data"
    model = drawzoo.load(pretrained=tag)
    assert model.zoo_name == entry.model and as_dict(model.config) == entry.config
    stored = read_checkpoint(pretrained.WEIGHTS / entry.file)["state_dict"]
    assert {str(v.dtype) for v in stored.values() if v.is_floating_point()} == {f"torch.{entry.dtype}"}
    if DATA is None:
        pytest.skip("DRAWZOO_DATA is not set: no test images to score")
    figure = pretrain.check_figure(model.eval(), pretrain.test_split(entry))
    assert entry.check["images"] == pretrain.CHECK_IMAGES and entry.check["seed"] == pretrain.CHECK_SEED
    assert abs(figure - entry.check["neg_elbo"]) < 0.5, (figure, entry.check)


def test_pretrained_true_is_the_default_tag_or_the_one_agreeing_with_the_config(offline):
    for model in {e.model for e in SHIPPED.values()}:
        default = next(e for e in SHIPPED.values() if e.model == model and e.default)
        assert pretrained.choose(model, True, {}) == default
        for e in SHIPPED.values():
            if e.model == model:
                differing = {k: v for k, v in e.config.items() if default.config.get(k) != v}
                if differing:
                    others = [o for o in SHIPPED.values() if o.model == model
                              and all(o.config.get(k) == v for k, v in differing.items())]
                    if len(others) == 1:
                        assert pretrained.choose(model, True, differing) == e


# -- a tiny tag of the test's own: files, downloads and errors -------------------------------------


@pytest.fixture
def tiny(tmp_path, monkeypatch):
    """A manifest in `tmp_path/weights` with one tag, vae.tiny, whose file ships there."""
    weights = tmp_path / "weights"
    weights.mkdir()
    monkeypatch.setattr(pretrained, "WEIGHTS", weights)
    monkeypatch.setattr(pretrained, "MANIFEST", weights / "manifest.json")
    monkeypatch.setenv("DRAWZOO_CACHE", str(tmp_path / "cache"))
    monkeypatch.delenv(pretrained.ENV, raising=False)
    model = drawzoo.load("vae", hidden_dim=8, latent_dim=2, seed=3)
    file = pretrained.save_weights(model, weights / "vae.tiny.pt")
    entry = pretrained.Pretrained(
        tag="vae.tiny", model="vae", config=as_dict(model.config), data="binarized_mnist", recipe="r.toml",
        file=file.name, sha256=pretrained.file_sha256(file), size=file.stat().st_size, dtype="float16",
        test={"neg_elbo": 500.0, "images": 10}, check={}, trained={}, default=True)
    write(weights, entry)
    return model, entry


def write(weights: Path, *entries) -> None:
    (weights / "manifest.json").write_text(json.dumps([dataclasses.asdict(e) for e in entries]))


def test_a_tag_loads_its_weights_rounded_to_the_stored_dtype(tiny, offline):
    model, entry = tiny
    for loaded in (drawzoo.load("vae", pretrained="tiny"), drawzoo.load("vae", pretrained=True),
                   drawzoo.load(pretrained="vae.tiny"), drawzoo.load("vae", pretrained="vae.tiny", hidden_dim=8)):
        for (name, p), q in zip(model.named_parameters(), loaded.parameters()):
            assert q.dtype == torch.float32 and torch.equal(q, p.detach().half().float()), name


@pytest.mark.parametrize("call, message", [
    (dict(pretrained="vae.nope"), "unknown pretrained tag 'vae.nope'; available: vae.tiny"),
    (dict(name="draw", pretrained="vae.tiny"), "pretrained tag 'vae.tiny' is a 'vae' model, not 'draw'"),
    (dict(name="draw", pretrained=True), "model 'draw' has no pretrained weights; pretrained models: vae.tiny"),
    (dict(name="vae", pretrained=True, hidden_dim=9), "no pretrained 'vae' has the config given (hidden_dim=9)"),
    (dict(name="vae", pretrained="tiny", hidden_dim=9), "pretrained vae.tiny: "),
    (dict(pretrained=True), "pretrained=True needs a model name"),
    (dict(name="vae", pretrained=3), "pretrained must be a tag (str) or True, got 3"),
])
def test_bad_tags_are_one_line_errors_naming_them(tiny, call, message):
    name = call.pop("name", None)
    with pytest.raises(PretrainedError) as e:
        drawzoo.load(name, **call)
    assert message in str(e.value) and "\n" not in str(e.value)


def test_a_checkpoint_and_a_tag_together_are_refused(tiny, tmp_path):
    with pytest.raises(drawzoo.ConfigError, match="a checkpoint or a pretrained tag, not both"):
        drawzoo.load("vae", pretrained="tiny", checkpoint=tmp_path / "x.pt")


@pytest.mark.parametrize("damage", ["flip", "truncate", "swap"])
def test_a_wrong_or_truncated_file_is_refused_naming_the_tag_and_the_file(tiny, tmp_path, damage):
    model, entry = tiny
    file = pretrained.WEIGHTS / entry.file
    data = bytearray(file.read_bytes())
    if damage == "flip":
        data[len(data) // 2] ^= 0x40
    elif damage == "truncate":
        data = data[: len(data) - 100]
    else:  # a valid weight file of other weights
        other = pretrained.save_weights(drawzoo.load("vae", hidden_dim=8, latent_dim=2, seed=4), tmp_path / "o.pt")
        data = bytearray(other.read_bytes())
    file.write_bytes(bytes(data))
    with pytest.raises(PretrainedError, match=r"pretrained vae\.tiny: .*vae\.tiny\.pt") as e:
        drawzoo.load("vae", pretrained="tiny")
    assert "truncated" in str(e.value) or "sha256" in str(e.value)


def test_offline_machines_put_the_file_in_DRAWZOO_WEIGHTS(tiny, tmp_path, monkeypatch, offline):
    model, entry = tiny
    folder = tmp_path / "mine"
    folder.mkdir()
    shutil.move(pretrained.WEIGHTS / entry.file, folder / entry.file)
    with pytest.raises(PretrainedError, match="weight file vae.tiny.pt not found in .*the manifest gives no URL"):
        drawzoo.load("vae", pretrained="tiny")
    monkeypatch.setenv(pretrained.ENV, str(folder))
    drawzoo.load("vae", pretrained="tiny")


def test_a_large_tag_is_downloaded_once_into_the_cache_and_checked(tiny, tmp_path, monkeypatch):
    model, entry = tiny
    served = tmp_path / "served.pt"
    shutil.move(pretrained.WEIGHTS / entry.file, served)
    write(pretrained.WEIGHTS, dataclasses.replace(entry, url=served.as_uri()))
    drawzoo.load("vae", pretrained="tiny")
    cached = tmp_path / "cache" / "weights" / entry.file
    assert cached.read_bytes() == served.read_bytes()
    monkeypatch.setattr(urllib.request, "urlopen", lambda *a, **k: pytest.fail("downloaded again"))
    drawzoo.load("vae", pretrained="tiny")


def test_a_download_that_is_not_the_manifests_file_is_not_kept(tiny, tmp_path):
    model, entry = tiny
    served = tmp_path / "served.pt"
    served.write_bytes(b"not the weights" * 100)
    (pretrained.WEIGHTS / entry.file).unlink()
    write(pretrained.WEIGHTS, dataclasses.replace(entry, url=served.as_uri()))
    with pytest.raises(PretrainedError, match=r"pretrained vae\.tiny: .*served\.pt is not the manifest's file"):
        drawzoo.load("vae", pretrained="tiny")
    assert not (tmp_path / "cache" / "weights" / entry.file).exists()
    assert not list((tmp_path / "cache" / "weights").iterdir())  # no temporary file left either


def test_a_failed_download_says_where_an_offline_machine_puts_the_file(tiny, tmp_path):
    model, entry = tiny
    (pretrained.WEIGHTS / entry.file).unlink()
    write(pretrained.WEIGHTS, dataclasses.replace(entry, url=(tmp_path / "nowhere.pt").as_uri()))
    with pytest.raises(PretrainedError, match=r"downloading .*nowhere\.pt failed .*put vae\.tiny\.pt in \$DRAWZOO_WEIGHTS"):
        drawzoo.load("vae", pretrained="tiny")


def test_the_manifest_sha256_is_of_the_whole_file(tiny):
    model, entry = tiny
    assert entry.sha256 == hashlib.sha256((pretrained.WEIGHTS / entry.file).read_bytes()).hexdigest()


# -- the command line ------------------------------------------------------------------------------


def cli(capsys, *argv):
    from drawzoo.cli import main

    code = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return code, out, err


def test_drawzoo_pretrained_lists_each_tag_with_its_figures_and_recipe(tiny, capsys):
    code, out, _ = cli(capsys, "pretrained")
    assert code == 0
    assert out.splitlines() == [
        "vae.tiny (default)", "    binarized_mnist: test -ELBO 500.00 nats (10 images)",
        "    vae(image_shape=[1, 28, 28], hidden_dim=8, latent_dim=2, likelihood=bernoulli)", "    trained by: drawzoo train --recipe r.toml"]
    assert cli(capsys, "pretrained", "draw")[:2] == (0, "")


def test_the_commands_on_a_trained_model_take_a_tag(tiny, capsys, tmp_path, monkeypatch, offline):
    images = (torch.rand(20, 1, 28, 28) < 0.3).float().numpy()
    npz = tmp_path / "x.npz"
    import numpy as np

    np.savez(npz, images=images)
    code, out, err = cli(capsys, "sample", "vae.tiny", "--n", 4, "--out", tmp_path / "s.png")
    assert code == 0 and (tmp_path / "s.png").is_file(), err
    code, out, err = cli(capsys, "eval", "vae.tiny", "--data", npz, "-k", 3, "--quiet")
    assert code == 0 and "vae.tiny on" in out and "negative ELBO" in out, err
    code, out, err = cli(capsys, "inpaint", "vae.tiny", "--data", npz, "--n", 2, "-k", 3, "--out", tmp_path / "i.png")
    assert code == 0 and (tmp_path / "i.png").is_file(), err


def test_a_tag_without_data_reads_its_own_data_set(tiny, capsys, tmp_path):
    code, _, err = cli(capsys, "eval", "vae.tiny", "--data-root", tmp_path / "empty", "-k", 2)
    assert code == 2 and "binarized_mnist_test.amat" in err  # the tag's data set, looked for where asked


@pytest.mark.parametrize("spec, message", [
    ("vae.nope", "vae.nope: no such checkpoint file, nor a pretrained tag (vae.tiny; `drawzoo pretrained` lists them)"),
    ("vae.tiny", "'vae.tiny' is both a file here and a pretrained tag: write ./vae.tiny for the file"),
])
def test_bad_tags_on_the_command_line_are_one_line_errors(tiny, capsys, tmp_path, monkeypatch, spec, message):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "vae.tiny").write_bytes(b"")
    code, out, err = cli(capsys, "sample", spec, "--out", tmp_path / "s.png")
    assert code == 2 and err == f"drawzoo: error: {message}\n"


def test_a_corrupted_weight_file_on_the_command_line_is_a_one_line_error(tiny, capsys, tmp_path):
    model, entry = tiny
    file = pretrained.WEIGHTS / entry.file
    file.write_bytes(file.read_bytes()[:-10])
    code, _, err = cli(capsys, "sample", "vae.tiny", "--out", tmp_path / "s.png")
    assert code == 2 and err.startswith("drawzoo: error: pretrained vae.tiny: ") and err.count("\n") == 1
    assert "vae.tiny.pt has" in err and "truncated" in err

import json
import re
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image

from pyro.infer import TraceGraph_ELBO

import drawzoo
from drawzoo.checkpoints import digest, read_checkpoint
from drawzoo.cli import main
from drawzoo.evaluation.objectives import describe, make_elbo
from tests.conftest import binary_images

TINY = ["--T", "3", "--hidden-dim", "12", "--latent-dim", "2", "--write-size", "3"]


@pytest.fixture(scope="module")
def npz(tmp_path_factory):
    path = tmp_path_factory.mktemp("data") / "images.npz"
    np.savez(path, images=binary_images(40, (1, 10, 12)).numpy())
    return path


def run(capsys, *argv):
    code = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return code, out, err


def test_list(capsys):
    code, out, _ = run(capsys, "list")
    assert code == 0
    assert [line.split()[0] for line in out.splitlines()] == drawzoo.available()
    assert "T=64" in next(line for line in out.splitlines() if line.startswith("draw "))


def test_help_explains_every_option(capsys):
    for argv in (["--help"], ["train", "draw", "--help"], ["sample", "--help"], ["animate", "--help"],
                 ["eval", "--help"]):
        with pytest.raises(SystemExit) as e:
            main(argv)
        assert e.value.code == 0
    out = capsys.readouterr().out
    for option in ("--attention", "--no-attention", "--T", "--hidden-dim", "--read-size", "--write-size",
                   "--image-shape", "--data", "--epochs", "--checkpoint", "--every", "--n", "--out",
                   "--num-samples", "--duration-ms", "--objective", "--particles", "--lr-min", "--max-steps",
                   "--validate"):
        assert option in out
    assert "glimpses (time steps)" in out  # the config fields' own help lines
    assert f"a data set ({', '.join(drawzoo.data.DATASETS)})" in " ".join(out.split())  # --data names them all
    for name, objective in drawzoo.evaluation.objectives.OBJECTIVES.items():  # each objective's help line
        assert f"\n  {name:14s} {objective.help}\n" in out


def test_train_resume_sample_animate_eval(capsys, npz, tmp_path):
    ckpt = tmp_path / "draw.pt"
    code, out, err = run(capsys, "train", "draw", *TINY, "--data", npz, "--epochs", 1, "--batch-size", 8,
                         "--checkpoint", ckpt, "--quiet", "--log-dir", tmp_path / "tb")
    assert code == 0, err
    assert "image_shape=(1, 10, 12)" in out and "epoch 1: train" in out  # the shape came from the data
    # resume: the stored config is used without repeating the options
    code, out, err = run(capsys, "train", "draw", "--data", npz, "--epochs", 2, "--batch-size", 8,
                         "--checkpoint", ckpt, "--quiet")
    assert code == 0, err
    assert "resuming" in out and "epoch 2: train" in out
    assert drawzoo.load(checkpoint=ckpt).config.T == 3

    code, out, _ = run(capsys, "sample", ckpt, "--n", 6, "--nrow", 3, "--out", tmp_path / "grid.png")
    assert code == 0 and Image.open(tmp_path / "grid.png").size == (3 * 14 + 2, 2 * 12 + 2)

    code, out, _ = run(capsys, "animate", ckpt, "--n", 4, "--out", tmp_path / "draw.gif")
    assert code == 0 and "wrote 4 frames" in out  # T + 1
    with Image.open(tmp_path / "draw.gif") as gif:
        assert gif.n_frames == 4

    code, out, _ = run(capsys, "eval", ckpt, "--data", npz, "--split", "all", "-k", 5, "--limit", 10, "--json",
                       tmp_path / "r.json", "--quiet")
    assert code == 0 and "negative ELBO" in out and "K=5" in out
    result = json.loads((tmp_path / "r.json").read_text())
    assert result["num_images"] == 10 and result["nll"] <= result["neg_elbo"]
    assert (f"{result['neg_elbo']:.2f} nats ({result['neg_elbo_bits_per_dim']:.4f} bits/dim)" in out
            and f"{result['nll']:.2f} nats ({result['nll_bits_per_dim']:.4f} bits/dim" in out)


def test_a_resumed_run_writes_its_best_weights_where_the_first_run_did(capsys, npz, tmp_path, monkeypatch):
    (tmp_path / "a").mkdir(), (tmp_path / "b").mkdir()
    monkeypatch.chdir(tmp_path / "a")
    code, _, err = run(capsys, "train", "draw", *TINY, "--data", npz, "--epochs", 1, "--batch-size", 8,
                       "--checkpoint", "runs/draw.pt", "--quiet")
    assert code == 0, err
    best = tmp_path / "a" / "runs" / "draw.best.pt"
    assert best.exists() and read_checkpoint("runs/draw.pt")["train_config"]["best"] == str(best)
    best.unlink()
    monkeypatch.chdir(tmp_path / "b")  # resumed from elsewhere: still beside the checkpoint
    code, out, err = run(capsys, "train", "draw", "--data", npz, "--epochs", 2, "--checkpoint",
                         tmp_path / "a" / "runs" / "draw.pt", "--quiet")
    assert code == 0, err
    assert f"best weights to {best}" in out and best.exists() and not (tmp_path / "b" / "runs").exists()


def test_an_older_checkpoints_relative_best_path_goes_beside_it(capsys, npz, tmp_path, monkeypatch):
    """Before best paths were stored absolute, `runs/draw.best.pt` was relative to the first run's
    working directory; resumed from elsewhere it goes beside the checkpoint, not under the new one."""
    import torch
    monkeypatch.chdir(tmp_path)
    code, _, err = run(capsys, "train", "draw", *TINY, "--data", npz, "--epochs", 1, "--batch-size", 8,
                       "--checkpoint", "runs/draw.pt", "--quiet")
    assert code == 0, err
    payload = read_checkpoint("runs/draw.pt")
    payload["train_config"]["best"] = "runs/draw.best.pt"
    payload["sha256"] = digest(payload)
    torch.save(payload, "runs/draw.pt")
    (tmp_path / "runs" / "draw.best.pt").unlink()
    (tmp_path / "elsewhere").mkdir()
    monkeypatch.chdir(tmp_path / "elsewhere")
    code, out, err = run(capsys, "train", "draw", "--data", npz, "--epochs", 2, "--checkpoint",
                         tmp_path / "runs" / "draw.pt", "--quiet")
    assert code == 0, err
    assert (tmp_path / "runs" / "draw.best.pt").exists() and not (tmp_path / "elsewhere" / "runs").exists()


def colour_pictures(folder, n=24, size=20, seed=0):
    """`n` colour PNGs size x size: a disc of one random colour on a background of another."""
    rng = np.random.default_rng(seed)
    folder.mkdir()
    yy, xx = np.mgrid[:size, :size]
    for i in range(n):
        foreground, background = rng.integers(0, 256, (2, 3))
        cy, cx = rng.integers(size // 4, size - size // 4, 2)
        disc = (yy - cy) ** 2 + (xx - cx) ** 2 <= rng.integers(size // 8 + 1, size // 4 + 1) ** 2
        Image.fromarray(np.where(disc[..., None], foreground, background).astype(np.uint8), "RGB").save(
            folder / f"{i:02d}.png")
    return folder


COLOUR = ["--T", "2", "--hidden-dim", "16", "--latent-dim", "4", "--read-size", "3", "--write-size", "3"]


def test_colour_pictures_train_resume_sample_animate_eval(capsys, tmp_path):
    folder, ckpt = colour_pictures(tmp_path / "pictures"), tmp_path / "colour.pt"  # 20x20, resized to 16x16
    common = ["--data", folder, "--batch-size", 8, "--checkpoint", ckpt, "--quiet"]
    code, out, err = run(capsys, "train", "draw", *COLOUR, "--image-shape", 3, 16, 16, *common, "--epochs", 1)
    assert code == 0, err
    assert "image_shape=(3, 16, 16)" in out and re.search(r"epoch 1: train [\d.]+, valid [\d.]+ nats", out)
    # resumed without --image-shape: the pictures load at the checkpoint's shape, not at their own
    code, out, err = run(capsys, "train", "draw", *common, "--epochs", 2)
    assert code == 0 and "epoch 2: train" in out, err

    code, _, err = run(capsys, "sample", ckpt, "--n", 6, "--nrow", 3, "--out", tmp_path / "grid.png")
    assert code == 0, err
    with Image.open(tmp_path / "grid.png") as grid:
        assert grid.mode == "RGB" and grid.size == (3 * 18 + 2, 2 * 18 + 2)
        pixels = np.asarray(grid)
    assert (pixels[..., 0] != pixels[..., 1]).any()  # colour, not grey thrice

    code, out, err = run(capsys, "animate", ckpt, "--n", 4, "--scale", 2, "--out", tmp_path / "draw.gif")
    assert code == 0 and "wrote 3 frames" in out, err  # T + 1
    with Image.open(tmp_path / "draw.gif") as gif:
        assert gif.n_frames == 3 and gif.size == (2 * 38, 2 * 38)  # 2 x 2 images of 16 + 2 padding, scaled 2x
        gif.seek(2)
        last = np.asarray(gif.convert("RGB")).reshape(-1, 3).astype(int)
    red = (last == (255, 0, 0)).all(1)
    assert ((last[:, 0] != last[:, 1]) & ~red).any()  # coloured canvases beside the red write windows

    code, out, err = run(capsys, "eval", ckpt, "--data", folder, "-k", 3, "--quiet")
    assert code == 0 and f"on {folder}/valid (2 images)" in out, err  # the 10% held out from training
    code, out, err = run(capsys, "eval", ckpt, "--data", folder, "--split", "all", "-k", 3, "--quiet")
    assert code == 0 and f"on {folder}/all (24 images)" in out, err


def test_pictures_of_their_own_shape_need_no_image_shape(capsys, tmp_path):
    folder = colour_pictures(tmp_path / "pictures", n=12, size=12)
    code, out, err = run(capsys, "train", "vae", "--hidden-dim", 8, "--latent-dim", 2, "--data", folder,
                         "--valid-data", folder, "--epochs", 1, "--checkpoint", tmp_path / "vae.pt", "--quiet")
    assert code == 0 and "image_shape=(3, 12, 12)" in out, err


@pytest.mark.parametrize("argv,message", [
    (["train", "drwa", "--epochs", "1"], f"unknown model 'drwa'; available: {', '.join(drawzoo.available())}"),
    (["sample", "missing.pt"], "missing.pt: no such checkpoint file"),
    (["train", "draw", "--epochs", "1", "--data", "nowhere.npz"], "neither a known data set"),
    (["train", "draw", "--epochs", "1", "--image-shape", "3", "32", "32"],
     "binarized_mnist images are [1, 28, 28], not the image_shape [3, 32, 32] asked for"),
    (["train", "draw", "--T", "0", "--epochs", "1", "--data", "{npz}"], "'T' must be >= 1"),
    (["train", "draw", "--particles", "0", "--epochs", "1", "--data", "{npz}"], "'elbo' needs particles >= 1"),
    (["train", "draw", "--objective", "tail-adaptive", "--epochs", "1", "--data", "{npz}"],
     "'tail-adaptive' needs particles >= 2"),
])
def test_errors_are_one_line(capsys, npz, tmp_path, argv, message):
    argv = [a.format(npz=npz) for a in argv]
    code, out, err = run(capsys, *argv, *(["--checkpoint", tmp_path / "x.pt"] if argv[0] == "train" else []))
    assert code == 2 and err.startswith("drawzoo: error:") and message in err
    assert len(err.strip().splitlines()) == 1 and "Traceback" not in err


@pytest.mark.parametrize("setup,options,message", [
    (lambda d: None, [], "holds no PNG or JPEG images"),
    (lambda d: (colour_pictures(d / "a", n=2), Image.new("L", (20, 20)).save(d / "grey.png")), [],
     "grey.png is grey 20x20 (H x W); give the shape to load them at: --image-shape C H W"),
    (lambda d: (colour_pictures(d / "a", n=2), (d / "broken.png").write_bytes(b"junk")), ["--image-shape", "1", "8", "8"],
     "broken.png: not a readable PNG or JPEG image"),
    (lambda d: colour_pictures(d / "a", n=2), ["--image-shape", "2", "8", "8"],
     "image_shape (2, 8, 8): pictures load as (C, H, W) with C = 1 (grey) or 3 (colour)"),
    (lambda d: colour_pictures(d / "a", n=2), ["--image-shape", "3", "8", "8", "--read-size", "9"],
     "'read_size'=9 is larger than the image (8x8)"),
], ids=["empty", "mixed", "unreadable", "two-channels", "shape-the-model-cannot-take"])
def test_bad_pictures_are_one_line_errors(capsys, tmp_path, setup, options, message):
    folder = tmp_path / "pictures"
    folder.mkdir()
    setup(folder)
    code, _, err = run(capsys, "train", "draw", *options, "--data", folder, "--epochs", 1,
                       "--checkpoint", tmp_path / "x.pt")
    assert code == 2 and message in err and len(err.strip().splitlines()) == 1, err
    assert not (tmp_path / "x.pt").exists()


def test_the_objective_is_stored_and_kept_on_resume(capsys, npz, tmp_path):
    ckpt, iwae = tmp_path / "draw.pt", describe(make_elbo("iwae", 3))
    common = ["--data", npz, "--checkpoint", ckpt, "--quiet"]
    code, out, err = run(capsys, "train", "draw", *TINY, *common, "--epochs", 1, "--batch-size", 40,  # a step an epoch
                         "--objective", "iwae", "--particles", 3)
    assert code == 0, err
    assert "objective RenyiELBO(num_particles=3, vectorize_particles=True, alpha=0)" in out
    assert read_checkpoint(ckpt)["elbo"] == iwae
    # resumed without --objective/--particles/--batch-size: the checkpoint's, not the defaults
    code, out, err = run(capsys, "train", "draw", *common, "--epochs", 2)
    assert code == 0, err
    assert "objective RenyiELBO(num_particles=3" in out and "epoch 2: train" in out
    payload = read_checkpoint(ckpt)
    assert payload["elbo"] == iwae and payload["progress"]["step"] == 2
    assert (payload["train_config"]["objective"], payload["train_config"]["batch_size"]) == ("iwae", 40)
    # an option given that changes the trajectory is an error naming it (the other one is the checkpoint's)
    code, _, err = run(capsys, "train", "draw", *common, "--epochs", 3, "--objective", "elbo")
    assert code == 2 and "objective: checkpoint has 'iwae', given 'elbo'" in err and "particles" not in err
    assert read_checkpoint(ckpt)["progress"]["step"] == 2


def test_resuming_an_objective_no_name_stands_for_asks_for_one(capsys, npz, tmp_path):
    ckpt = tmp_path / "draw.pt"
    model = drawzoo.load("draw", image_shape=(1, 10, 12), T=3, hidden_dim=12, latent_dim=2, write_size=3)
    drawzoo.train(model, np.load(npz)["images"], epochs=1, batch_size=40, lr=1e-3, checkpoint=ckpt,
                  elbo=TraceGraph_ELBO(), progress=False)
    code, _, err = run(capsys, "train", "draw", "--data", npz, "--epochs", 2, "--checkpoint", ckpt, "--quiet")
    assert code == 2 and "trained with TraceGraph_ELBO(num_particles=1, vectorize_particles=False), which no " \
        "--objective names; resume it in Python: drawzoo.train(..., elbo=...)" in err
    code, _, err = run(capsys, "train", "draw", "--data", npz, "--epochs", 2, "--checkpoint", ckpt, "--quiet",
                       "--objective", "elbo-mc")
    assert code == 2 and "objective: checkpoint has TraceGraph_ELBO(num_particles=1, vectorize_particles=False), " \
        "given Trace_ELBO(num_particles=1, vectorize_particles=False)" in err


def test_max_steps_and_a_cosine_learning_rate(capsys, npz, tmp_path):
    ckpt = tmp_path / "draw.pt"
    code, out, err = run(capsys, "train", "draw", *TINY, "--data", npz, "--epochs", 2, "--batch-size", 8,
                         "--max-steps", 2, "--lr", 3e-3, "--lr-min", 1e-4, "--checkpoint", ckpt, "--quiet")
    assert code == 0, err
    assert "epoch 0.4: train" in out  # 2 of the 5 steps of an epoch
    payload = read_checkpoint(ckpt)
    assert payload["progress"]["step"] == 2
    assert payload["optimizer"]["param_groups"][0]["lr"] == pytest.approx(1e-4)  # the cosine's end


def test_rerunning_a_finished_training_command_is_a_no_op(capsys, npz, tmp_path):
    ckpt = tmp_path / "draw.pt"
    args = ["train", "draw", *TINY, "--data", npz, "--epochs", 2, "--batch-size", 8, "--max-steps", 2,
            "--checkpoint", ckpt, "--quiet"]
    assert run(capsys, *args)[0] == 0
    before = ckpt.read_bytes(), ckpt.with_name("draw.best.pt").read_bytes()
    code, out, err = run(capsys, *args)
    assert code == 0, err
    assert "the run is already complete (epoch 0.4, step 2; epochs=2, max_steps=2)" in out + err
    assert (ckpt.read_bytes(), ckpt.with_name("draw.best.pt").read_bytes()) == before


def test_resuming_with_a_contradicting_config_names_the_fields(capsys, npz, tmp_path):
    ckpt = tmp_path / "draw.pt"
    assert run(capsys, "train", "draw", *TINY, "--data", npz, "--epochs", 1, "--checkpoint", ckpt, "--quiet")[0] == 0
    code, _, err = run(capsys, "train", "draw", "--no-attention", "--T", "4", "--data", npz, "--epochs", 2,
                       "--checkpoint", ckpt)
    assert code == 2
    assert "attention: checkpoint has True, given False" in err and "T: checkpoint has 3, given 4" in err


def test_the_console_script_is_installed():
    out = subprocess.run([sys.executable, "-m", "drawzoo", "list"], capture_output=True, text=True, check=True)
    assert "draw" in out.stdout


def test_compile_switches_train_and_eval_to_the_fast_path(capsys, tmp_path, monkeypatch):
    """`--compile` reaches `drawzoo.train` (stored as a budget setting) and `drawzoo.evaluate`, and
    the figures are the eager ones up to float rounding. (The sizes of tests/test_fast_path.py, whose
    compiled graphs this process may then reuse.)"""
    npz = tmp_path / "images.npz"
    np.savez(npz, images=binary_images(8).numpy())
    tiny = ["--T", 3, "--hidden-dim", 16, "--latent-dim", 4, "--read-size", 3, "--write-size", 3]
    calls = []
    from drawzoo.models import ZooModel

    real = ZooModel.compile_steps
    monkeypatch.setattr(ZooModel, "compile_steps",
                        lambda self, *a, **kw: calls.append((a, kw)) or real(self, *a, **kw))
    figures = {}
    for mode in ("eager", "fast"):
        ckpt = tmp_path / f"{mode}.pt"
        fast = ["--compile"] if mode == "fast" else []
        code, out, err = run(capsys, "train", "draw", *tiny, "--data", npz, "--epochs", 1, "--batch-size", 4,
                             "--checkpoint", ckpt, "--quiet", *fast)
        assert code == 0, err
        assert read_checkpoint(ckpt)["train_config"]["compile"] == (mode == "fast")
        code, out, err = run(capsys, "eval", ckpt, "--data", npz, "--split", "all", "-k", 2, "--limit", 2,
                             "--json", tmp_path / f"{mode}.json", "--quiet", *fast)
        assert code == 0, err
        assert "images/s" in out
        figures[mode] = json.loads((tmp_path / f"{mode}.json").read_text())
    assert len(calls) == 2  # train, then the evaluation of a freshly loaded model
    for key in ("neg_elbo", "nll"):
        assert figures["fast"][key] == pytest.approx(figures["eager"][key], rel=1e-4)

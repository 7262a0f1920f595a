"""Issue 29's promises: outputs that never replace a checkpoint or an input, sizes refused before
they are allocated, benchmark scripts that speak one line, and the smaller cases (binary bytes,
stale temporaries, broken pipes, .npz keys, model mismatches, subsets of dynamic binarization)."""

import importlib.util
import json
import os
import re
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
import torch

import drawzoo
from drawzoo import data, memory
from drawzoo.data.batching import epoch_data
from drawzoo.checkpoints import save_checkpoint
from drawzoo.cli import main
from drawzoo.files import atomic_write, write_output
from drawzoo.figures.pictures import animate, save_grid
from drawzoo.figures.plots import kl_plot, save_figure
from tests.conftest import binary_images
from tests.test_train_config import one_line_error, run

SHAPE = (1, 10, 12)
BENCHMARKS = Path(__file__).resolve().parents[1] / "benchmarks"
HUGE = 100_000_000_000


def tiny_draw():
    return drawzoo.load("draw", image_shape=SHAPE, T=2, hidden_dim=16, latent_dim=4, read_size=2, write_size=3, seed=0)


@pytest.fixture
def run_dir(tmp_path):
    """A checkpoint, its best weights, a plain state dict and a data file: (folder, their bytes)."""
    model = tiny_draw()
    save_checkpoint(tmp_path / "draw.pt", model)
    save_checkpoint(tmp_path / "draw.best.pt", model)
    torch.save(model.state_dict(), tmp_path / "weights.pt")
    np.save(tmp_path / "images.npy", binary_images(12, SHAPE).numpy())
    return tmp_path, snapshot(tmp_path)


def snapshot(folder: Path) -> dict:
    return {p.name: p.read_bytes() for p in sorted(folder.iterdir()) if p.is_file()}


def script(name: str):
    spec = importlib.util.spec_from_file_location(name, BENCHMARKS / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    sys.path.insert(0, str(BENCHMARKS))  # speed.py imports its neighbours
    try:
        spec.loader.exec_module(module)
    finally:
        sys.path.remove(str(BENCHMARKS))
    return module


# -- 1. an output never replaces a checkpoint, weights or a file that is read ------------------------


def test_no_output_replaces_a_checkpoint_or_weights(capsys, run_dir):
    folder, before = run_dir
    ckpt, best, plain, npy = (folder / n for n in ("draw.pt", "draw.best.pt", "weights.pt", "images.npy"))
    for argv, option, target in [
        (["eval", ckpt, "--data", npy, "--json", best], "--json", best),
        (["eval", ckpt, "--data", npy, "--json", plain], "--json", plain),
        (["eval", ckpt, "--data", npy, "--plot", best], "--plot", best),
        (["sample", ckpt, "--out", best], "--out", best),
        (["animate", ckpt, "--out", best], "--out", best),
        (["inpaint", ckpt, "--data", npy, "--out", best], "--out", best),
    ]:
        err = one_line_error(capsys, *argv)
        assert f"{option} {target} holds model weights (a checkpoint or pretrained weights): refusing to replace it" in err
    images = binary_images(2, SHAPE)
    for write in (lambda: save_grid(images, best), lambda: save_figure(kl_plot([1.0, 2.0], 3.0), best),
                  lambda: animate(torch.stack([images, images]), best), lambda: write_output(plain, "{}")):
        with pytest.raises(drawzoo.ConfigError, match="holds model weights"):
            write()
    assert snapshot(folder) == before


def test_no_output_replaces_a_file_the_run_reads(tmp_path):
    npy, recipe = tmp_path / "images.npy", tmp_path / "run.toml"
    np.save(npy, binary_images(12, SHAPE).numpy())
    recipe.write_text('model = "vae"\n')
    data.load(str(npy), "all")
    drawzoo.load_recipe(recipe)
    before = snapshot(tmp_path)
    with pytest.raises(drawzoo.ConfigError, match=f"{npy} is the data this run reads: refusing to replace it"):
        save_grid(binary_images(2, SHAPE), npy)
    with pytest.raises(drawzoo.ConfigError, match="is the recipe this run reads"):
        write_output(recipe, "x")
    assert snapshot(tmp_path) == before


def test_benchmark_outputs_never_replace_a_checkpoint(capsys, run_dir):
    folder, before = run_dir
    best = folder / "draw.best.pt"
    assert script("speed").main(["--quick", "--out", str(best)]) == 2
    assert script("paper_curve").main([f"run={folder / 'draw.pt'}", "--out", str(best)]) == 2
    errors = capsys.readouterr().err.splitlines()
    assert errors == [f"speed: error: --out {best} holds model weights (a checkpoint or pretrained weights): refusing "
                      "to replace it with the output; write to another path",
                      f"paper_curve: error: --out {best} holds model weights (a checkpoint or pretrained weights): "
                      "refusing to replace it with the output; write to another path"]
    assert snapshot(folder) == before


# -- 3. sizes that cannot fit are refused before they are allocated ---------------------------------


@pytest.mark.parametrize("model,option", [("vae", ["--latent-dim", HUGE]), ("draw", ["--latent-dim", HUGE]),
                                          ("conv_vae", ["--latent-dim", HUGE]), ("hvae", ["--latent-dims", HUGE, 5]),
                                          ("conv_draw", ["--hidden-channels", 100_000_000])])
def test_a_config_that_cannot_fit_is_one_line_before_it_is_built(capsys, tmp_path, model, option):
    npy = tmp_path / "images.npy"
    np.save(npy, binary_images(8, (1, 8, 8)).numpy())
    field = option[0][2:].replace("-", "_")
    err = one_line_error(capsys, "train", model, *option, "--data", npy, "--checkpoint", tmp_path / "run.pt")
    assert f"{model}: {field}=" in err and "makes a model whose weights need" in err and "available on cpu" in err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["images.npy"]


def test_a_config_that_fits_is_built_and_the_field_is_named_in_python(monkeypatch):
    assert drawzoo.load("vae", hidden_dim=4000, latent_dim=2000).num_parameters() > 10_000_000  # big, but it fits
    with pytest.raises(drawzoo.MemoryLimitError, match=r"vae: latent_dim=100000000000 makes a model whose weights "
                       r"need [\d,]+ bytes \(.*\), more than the [\d,]+ bytes \(.*\) available on cpu"):
        drawzoo.load("vae", latent_dim=HUGE)
    monkeypatch.setattr(memory, "available_bytes", lambda device="cpu": 10_000)
    with pytest.raises(drawzoo.MemoryLimitError, match="vae: hidden_dim=100000 makes"):
        drawzoo.load("vae", hidden_dim=100_000, latent_dim=3)  # latent_dim's default would make it bigger
    with pytest.raises(drawzoo.MemoryLimitError, match="vae: its config makes"):
        drawzoo.load("vae")


def test_requests_that_cannot_fit_are_one_line_before_any_work(capsys, run_dir):
    folder, before = run_dir
    ckpt, npy = folder / "draw.pt", folder / "images.npy"
    for argv, message in [
        (["sample", ckpt, "--n", HUGE, "--out", folder / "s.png"], f"--n {HUGE}: {HUGE:,} samples and their picture need"),
        (["animate", ckpt, "--n", HUGE, "--out", folder / "s.gif"], f"--n {HUGE}: {HUGE:,} samples through time and"),
        (["eval", ckpt, "--data", npy, "--num-samples", HUGE], f"num_samples={HUGE}: one image's {HUGE:,} importance"),
        (["inpaint", ckpt, "--data", npy, "--num-samples", HUGE, "--out", folder / "i.png"], f"num_samples={HUGE}:"),
    ]:
        err = one_line_error(capsys, *argv)
        assert message in err and "available on cpu" in err, err
    assert snapshot(folder) == before


def test_a_request_that_fits_only_in_parts_is_done_in_passes(capsys, monkeypatch, run_dir):
    folder, _ = run_dir
    monkeypatch.setattr("drawzoo.cli.pictures.ROWS_PER_PASS", 3)
    assert run(capsys, "sample", folder / "draw.pt", "--n", 7, "--out", folder / "s.png")[0] == 0
    assert run(capsys, "animate", folder / "draw.pt", "--n", 7, "--out", folder / "s.gif")[0] == 0
    model, x = tiny_draw(), binary_images(10, SHAPE)
    passes = []
    monkeypatch.setattr(memory, "ROWS_PER_PASS", 4)
    monkeypatch.setattr(memory, "available_bytes", lambda device="cpu": 3 * 2 * memory.allocated_bytes(
        lambda: drawzoo.models.importance.traces(model, x[:1], 1)) * 5)  # 3 images of K=5 in half of it
    real = drawzoo.evaluation.scoring.traces
    monkeypatch.setattr(drawzoo.evaluation.scoring, "traces", lambda m, xs, k, *a: passes.append(len(xs)) or real(m, xs, k, *a))
    assert drawzoo.evaluate(model, x, num_samples=5, batch_size=10)["num_images"] == 10
    assert passes[0] == 1 and sum(passes[1:]) == 10 and 1 < len(passes[1:]) <= 5  # the probe, then passes
    assert model.inpaint(x, drawzoo.data.masks.named_mask("bottom", SHAPE, 10), num_samples=5).shape == x.shape


def test_an_allocation_that_fails_anyway_is_one_line(capsys, monkeypatch, run_dir):
    folder, _ = run_dir

    def fail(*args, **kwargs):
        raise RuntimeError("[enforce fail at alloc_cpu.cpp:117] data. DefaultCPUAllocator: can't allocate memory: "
                           "you tried to allocate 400000000000 bytes. Error code 12 (Cannot allocate memory)")
    monkeypatch.setattr("drawzoo.cli.pictures.generate", fail)
    err = one_line_error(capsys, "sample", folder / "draw.pt", "--out", folder / "s.png")
    assert err.startswith("drawzoo: error: out of memory: [enforce fail at alloc_cpu.cpp:117]")


# -- 4. the benchmark scripts speak one line ---------------------------------------------------------


def test_benchmark_scripts_say_a_bad_path_in_one_line_with_exit_2(capsys, tmp_path):
    cases = [("nll_mnist", ["--out", "/etc/passwd/x"], "nll_mnist: error: not a directory: /etc/passwd/x"),
             ("nll_mnist", ["--out", "/proc/drawzoo/x"], "nll_mnist: error: no such file or directory: /proc/drawzoo"),
             ("speed", ["--out", "/etc/passwd/x/speed.json"], "speed: error: not a directory: /etc/passwd/x"),
             ("colour_mnist", ["--out", "/etc/passwd/x"], "colour_mnist: error: not a directory: /etc/passwd/x"),
             ("paper_curve", [f"run={tmp_path / 'missing.pt'}", "--out", str(tmp_path / "c.png")],
              f"paper_curve: error: {tmp_path / 'missing.pt'}: no such checkpoint file"),
             ("pretrain", ["vae.x", "--recipe", str(tmp_path / "no.toml"), "--run", "r.pt"],
              f"pretrain: error: {tmp_path / 'no.toml'}: no such recipe file")]
    for name, argv, message in cases:
        assert script(name).main(argv) == 2, name
        err = capsys.readouterr().err
        assert err.splitlines() == [err.strip()] and err.startswith(message), err


def test_nll_mnist_interrupted_while_it_scores_keeps_the_rows_done_and_exits_130(capsys, monkeypatch, tmp_path):
    nll_mnist = script("nll_mnist")
    monkeypatch.setattr(nll_mnist, "load_splits", lambda name, root: None)
    done = []

    def benchmark(run, splits, out, **kw):
        if done:
            raise KeyboardInterrupt  # Ctrl-C while the second row scores
        done.append(run.label)
        return {"label": run.label, "config_summary": "", "objective": "elbo", "particles": 1, "protocol": "",
                "parameters": 1, "epochs": 1, "train_seconds": 1, "test_neg_elbo": 90.0, "test_nll": 85.0,
                "num_samples": 2, "test_cond_nll": 40.0, "reference": None, "test_images": 10}
    monkeypatch.setattr(nll_mnist, "benchmark", benchmark)
    assert nll_mnist.main(["--preset", "smoke", "--out", str(tmp_path)]) == 130
    assert capsys.readouterr().err.splitlines() == ["nll_mnist: interrupted"]
    saved = json.loads((tmp_path / "results.json").read_text())
    assert [r["label"] for r in saved["rows"]] == done and "interrupted after 1 of" in saved["summary"]


# -- 5. smaller ones -----------------------------------------------------------------------------------


def test_binary_images_saved_as_bytes_are_refused_naming_the_fix(capsys, tmp_path):
    bits = binary_images(8, SHAPE).numpy().astype(np.uint8)  # 0 and 1, which bytes read as 0 and 1/255
    np.save(tmp_path / "bits.npy", bits)
    fix = "save binary images as bool or float (x.astype(bool)), or bytes as 0 and 255"
    with pytest.raises(drawzoo.DataError, match=f"bits.npy holds uint8 values 0 and 1 only: .*almost black.*{re.escape(fix)}"):
        data.load_array_file(tmp_path / "bits.npy")
    with pytest.raises(drawzoo.InputError, match="images holds uint8 values 0 and 1 only"):
        data.ImageDataset(torch.from_numpy(bits))
    err = one_line_error(capsys, "train", "vae", "--data", tmp_path / "bits.npy", "--checkpoint", tmp_path / "r.pt")
    assert "holds uint8 values 0 and 1 only" in err
    assert len(data.ImageDataset(torch.from_numpy(bits * 255))) == 8  # bytes 0 and 255 are fine


def test_a_temporary_left_by_a_killed_writer_is_removed_by_the_next_write(tmp_path):
    target = tmp_path / "draw.best.pt"
    killed = subprocess.run([sys.executable, "-c", textwrap.dedent(f"""
        import os, signal
        from drawzoo.files import atomic_write
        with atomic_write({str(target)!r}) as f:
            f.write(b"x" * 100_000)
            f.flush()
            os.kill(os.getpid(), signal.SIGKILL)
    """)])
    assert killed.returncode == -signal.SIGKILL
    (stale,) = tmp_path.iterdir()
    assert stale.name.startswith(".draw.best.pt.") and stale.stat().st_size == 100_000
    other = tmp_path / ".other.pt.0123abcd.tmp"
    other.write_bytes(b"another file's")
    with atomic_write(target) as f:
        with atomic_write(target) as g:  # a writer still writing keeps its temporary
            g.write(b"inner")
        assert len(list(tmp_path.glob(".draw.best.pt.*.tmp"))) == 1
        f.write(b"outer")
    assert sorted(os.listdir(tmp_path)) == [".other.pt.0123abcd.tmp", "draw.best.pt"]
    assert target.read_bytes() == b"outer"


def test_a_closed_pipe_ends_drawzoo_quietly():
    read, write = os.pipe()
    os.close(read)  # `drawzoo list | head -1` once head has exited
    done = subprocess.run([sys.executable, "-m", "drawzoo", "list"], stdout=write, stderr=subprocess.PIPE)
    os.close(write)
    assert done.returncode == 128 + signal.SIGPIPE and done.stderr == b""


def test_an_npz_without_the_images_key_names_what_it_holds_and_looks_for(tmp_path):
    np.savez(tmp_path / "two.npz", pixels=binary_images(4, SHAPE).numpy(), labels=np.arange(4))
    with pytest.raises(drawzoo.DataError, match=r"two.npz holds the arrays 'pixels', 'labels', none of the keys "
                       r"looked for \('images' or 'x'\)"):
        data.load_array_file(tmp_path / "two.npz")
    np.savez(tmp_path / "one.npz", labels=np.arange(4))
    with pytest.raises(drawzoo.DataError, match=r"one.npz's only array, 'labels' \(none named 'images' or 'x'\), "
                       r"holds an array of shape \[4\]"):
        data.load_array_file(tmp_path / "one.npz")
    np.savez(tmp_path / "arr.npz", binary_images(4, SHAPE).numpy())  # its only array, arr_0: taken
    assert len(data.load_array_file(tmp_path / "arr.npz")) == 4


def test_a_recipe_for_another_model_says_the_model_mismatch_first(capsys, tmp_path):
    npy = tmp_path / "images.npy"
    np.save(npy, binary_images(8, (1, 8, 8)).numpy())
    ckpt = tmp_path / "conv_vae.pt"
    assert run(capsys, "train", "conv_vae", "--latent-dim", 2, "--channels", 2, 2, "--data", npy, "--epochs", 1,
               "--batch-size", 4, "--checkpoint", ckpt, "--no-best", "--quiet")[0] == 0
    recipe = tmp_path / "hvae.toml"
    recipe.write_text('model = "hvae"\n[train]\nlr = 0.01\nbatch_size = 2\n')
    before = ckpt.read_bytes()
    err = one_line_error(capsys, "train", "--recipe", recipe, "--data", npy, "--checkpoint", ckpt)
    assert err.strip() == f"drawzoo: error: {ckpt}: checkpoint is of model 'conv_vae', not 'hvae'"
    assert ckpt.read_bytes() == before


def test_a_subset_of_dynamically_binarized_data_keeps_the_draw_of_each_epoch():
    grey = data.ImageDataset(torch.rand(20, *SHAPE), binarize="dynamic")
    subset = torch.utils.data.Subset(grey, [1, 4, 7])
    nested = torch.utils.data.ConcatDataset([torch.utils.data.Subset(subset, [0, 2]), grey])
    for epoch in (0, 1):
        draw = grey.epoch_draw(3, epoch)
        assert torch.equal(epoch_data(subset, 3, epoch)[1], draw[4])
        assert torch.equal(epoch_data(nested, 3, epoch)[1], draw[7])
    assert not torch.equal(epoch_data(subset, 3, 0)[1], epoch_data(subset, 3, 1)[1])
    plain = torch.utils.data.Subset(binary_images(5, SHAPE), [0, 1])
    assert epoch_data(plain, 3, 1) is plain

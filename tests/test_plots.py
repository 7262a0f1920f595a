"""The plots are matplotlib figures (`drawzoo.figures.plots`): what they show, how they are saved (PNG, SVG
or PDF by the suffix, atomically), that no figure leaks, and one clear line without matplotlib."""

import gc
import json
import re
import subprocess
import sys
import weakref
from pathlib import Path

import pytest
from matplotlib.colors import to_rgb
from matplotlib.figure import Figure
from PIL import Image

import drawzoo
from drawzoo.figures import plots
from drawzoo.checkpoints import save_checkpoint
from tests.conftest import binary_images, load_script
from tests.test_cli import npz, run  # noqa: F401 (npz: 40 images of SHAPE)

ROOT = Path(__file__).resolve().parents[1]
SHAPE = (1, 10, 12)
TINY = dict(T=3, hidden_dim=16, latent_dim=4, read_size=2, write_size=3, image_shape=SHAPE)
KL, RECONSTRUCTION = [5.0, 3.0, 2.0], 70.0
EXTRA = 'pip install "drawzoo[plots]"'


def test_kl_plot_is_a_figure_of_the_kl_per_step_and_its_sum_against_the_negative_elbo():
    figure = plots.kl_plot(KL, RECONSTRUCTION, title="a run")
    assert isinstance(figure, Figure) and figure.get_suptitle() == "a run"
    assert tuple(figure.get_size_inches() * figure.dpi) == (900, 390)
    bars, total = figure.axes
    assert [b.get_height() for b in bars.patches] == KL
    assert bars.get_title() == "KL(q(z_t | ...) || p(z_t)) per step"
    for axes in (bars, total):
        assert axes.get_ylabel() == "nats per image" and axes.get_xlabel() == "step t (latent site z_t)"
    cumulative, elbo, gap = total.get_lines()
    assert list(cumulative.get_xdata()) == [0, 1, 2] and list(cumulative.get_ydata()) == [5.0, 8.0, 10.0]
    assert list(elbo.get_ydata()) == [80.0, 80.0] and elbo.get_linestyle() == "--"  # the negative ELBO, dashed
    assert to_rgb(elbo.get_color()) == (1.0, 0.0, 0.0)
    assert list(gap.get_ydata()) == [10.0, 80.0]  # the reconstruction term
    assert [t.get_text() for t in figure.legends[0].get_texts()] == [
        "KL, and its cumulative sum (10.00 nats)", "negative ELBO (80.00 nats)",
        "gap: reconstruction -log p(x | z) (70.00 nats)"]
    assert total.get_ylim()[1] > 80  # the dashed line inside the axes


def test_curve_plot_draws_the_curves_and_the_references_dashed():
    curves = {"run a": [(1, 120.0), (2, 110.0), (3, 105.0)], "run b": [(1, 130.0), (2, 125.0)]}
    figure = plots.curve_plot(curves, references={"paper": 80.97, "reproduction": 90.5}, title="curves")
    (axes,) = figure.axes
    assert axes.get_title() == "curves" and axes.get_xlabel() == "epoch"
    assert axes.get_ylabel() == "validation -ELBO, nats per image"
    paper, reproduction, a, b = axes.get_lines()
    assert [list(line.get_ydata()) for line in (paper, reproduction)] == [[80.97] * 2, [90.5] * 2]
    assert paper.get_linestyle() == reproduction.get_linestyle() == "--"
    assert list(a.get_xdata()) == [1, 2, 3] and list(a.get_ydata()) == [120.0, 110.0, 105.0]
    assert a.get_linestyle() == "-" and list(b.get_ydata()) == [130.0, 125.0]
    assert [t.get_text() for t in figure.legends[0].get_texts()] == [
        "paper (80.97)", "reproduction (90.5)", "run a (last 105.00)", "run b (last 125.00)"]
    assert axes.get_xlim()[0] == 0 and axes.get_xlim()[1] >= 3


@pytest.mark.parametrize("bad", [dict(kl_per_step=[], reconstruction=1.0),
                                 dict(kl_per_step=[1.0, float("nan")], reconstruction=1.0),
                                 dict(kl_per_step=[1.0], reconstruction=float("inf"))])
def test_kl_plot_refuses_values_it_cannot_draw(bad):
    with pytest.raises(drawzoo.InputError, match="kl_plot needs finite"):
        plots.kl_plot(**bad)


def test_curve_plot_refuses_values_it_cannot_draw():
    with pytest.raises(drawzoo.InputError, match="curve_plot needs finite points"):
        plots.curve_plot({})
    with pytest.raises(drawzoo.InputError, match="curve_plot needs finite points"):
        plots.curve_plot({"a": [(1, 2.0)]}, references={"b": float("nan")})


def test_save_figure_picks_the_format_by_the_suffix(tmp_path):
    figure = plots.kl_plot(KL, RECONSTRUCTION)
    for name in ("kl.png", "kl.svg", "kl.pdf", "KL.PNG"):
        plots.save_figure(figure, tmp_path / name)
    with Image.open(tmp_path / "kl.png") as png:
        assert png.format == "PNG" and png.size == (900, 390)
        assert (255, 0, 0) in {colour for _, colour in png.convert("RGB").getcolors(1 << 16)}  # the -ELBO line
    assert Image.open(tmp_path / "KL.PNG").format == "PNG"
    svg = (tmp_path / "kl.svg").read_text()
    assert svg.startswith("<?xml") and "<svg" in svg
    assert (tmp_path / "kl.pdf").read_bytes().startswith(b"%PDF")
    # the same figure, the same bytes: no dates, no random ids
    for name in ("kl.svg", "kl.pdf", "kl.png"):
        plots.save_figure(figure, tmp_path / f"again_{name}")
        assert (tmp_path / f"again_{name}").read_bytes() == (tmp_path / name).read_bytes(), name


@pytest.mark.parametrize("name", ["kl.jpg", "kl", "kl.png.txt"])
def test_other_suffixes_are_a_one_line_error_naming_the_accepted_ones(tmp_path, name):
    with pytest.raises(drawzoo.ConfigError) as error:
        plots.save_figure(plots.kl_plot(KL, RECONSTRUCTION), tmp_path / name)
    assert str(error.value).count("\n") == 0 and ".png, .svg, .pdf" in str(error.value)
    assert list(tmp_path.iterdir()) == []


def test_a_failed_save_leaves_the_file_that_was_there(tmp_path, monkeypatch):
    path = tmp_path / "kl.png"
    path.write_bytes(b"the previous plot")
    figure = plots.kl_plot(KL, RECONSTRUCTION)

    def broken(f, **kwargs):
        f.write(b"half a plot")
        raise RuntimeError("the renderer failed")

    monkeypatch.setattr(figure, "savefig", broken)
    with pytest.raises(RuntimeError, match="the renderer failed"):
        plots.save_figure(figure, path)
    assert path.read_bytes() == b"the previous plot" and [p.name for p in tmp_path.iterdir()] == ["kl.png"]


def test_figure_to_array_is_the_rgb_picture_tensorboard_takes():
    picture = plots.figure_to_array(plots.kl_plot(KL, RECONSTRUCTION))
    assert picture.shape == (390, 900, 3) and picture.dtype.name == "uint8"
    assert (picture == [255, 0, 0]).all(-1).any() and (picture == 255).all(-1).any()  # red line, white ground


def test_figures_are_freed_and_never_reach_pyplot(tmp_path):
    figure = plots.curve_plot({"a": [(1, 3.0), (2, 2.0)]})
    plots.figure_to_array(figure)
    plots.save_figure(figure, tmp_path / "a.png")
    freed = weakref.ref(figure)
    del figure
    gc.collect()
    assert freed() is None  # no global list of figures holds it: none leak, epoch after epoch
    # drawing, rendering and saving never import pyplot (its backend choice, its figure manager)
    code = ("import sys, drawzoo.figures.plots as p; f = p.kl_plot([1.0, 2.0], 3.0, title='t'); p.figure_to_array(f); "
            "p.save_figure(f, sys.argv[1]); assert 'matplotlib.pyplot' not in sys.modules")
    subprocess.run([sys.executable, "-c", code, str(tmp_path / "kl.pdf")], check=True, cwd=ROOT)


def test_importing_drawzoo_does_not_import_matplotlib():
    code = ("import sys, drawzoo, drawzoo.cli, drawzoo.figures.plots, drawzoo.figures.pictures, drawzoo.training; "
            "assert 'matplotlib' not in sys.modules")
    subprocess.run([sys.executable, "-c", code], check=True, cwd=ROOT)


# -- without matplotlib ---------------------------------------------------------------------------------


@pytest.fixture
def no_matplotlib(monkeypatch):
    """As if matplotlib were not installed: importing it fails."""
    monkeypatch.setitem(sys.modules, "matplotlib", None)


def test_without_matplotlib_a_plot_says_which_extra_to_install(no_matplotlib):
    with pytest.raises(drawzoo.DrawzooError) as error:
        plots.kl_plot(KL, RECONSTRUCTION)
    assert str(error.value) == f"kl_plot needs matplotlib, which is not installed: {EXTRA}"
    with pytest.raises(drawzoo.DrawzooError, match=EXTRA.replace("[", r"\[").replace("]", r"\]")):
        plots.curve_plot({"a": [(1, 2.0)]})


def test_eval_per_step_without_matplotlib_is_one_line_before_any_work(no_matplotlib, capsys, npz, tmp_path):
    ckpt = tmp_path / "draw.pt"
    save_checkpoint(ckpt, drawzoo.load("draw", **TINY))
    code, out, err = run(capsys, "eval", ckpt, "--data", npz, "--split", "all", "-k", 1, "--per-step",
                         "--json", tmp_path / "r.json", "--quiet")
    assert code == 2 and out == ""
    assert err == f"drawzoo: error: the plot of --per-step (--plot) needs matplotlib, which is not installed: {EXTRA}\n"
    assert not (tmp_path / "r.json").exists() and not (tmp_path / "kl_per_step.png").exists()
    # without --per-step, eval needs no matplotlib
    code, _, err = run(capsys, "eval", ckpt, "--data", npz, "--split", "all", "-k", 1, "--json", tmp_path / "r.json",
                       "--quiet")
    assert code == 0, err
    assert "neg_elbo" in json.loads((tmp_path / "r.json").read_text())


def test_summaries_with_validation_without_matplotlib_are_an_error_before_training(no_matplotlib, tmp_path):
    model = drawzoo.load("draw", **TINY)
    with pytest.raises(drawzoo.DrawzooError) as error:
        drawzoo.train(model, binary_images(8, SHAPE), binary_images(4, SHAPE), epochs=1, batch_size=4,
                      log_dir=tmp_path / "tb", progress=False)
    assert str(error.value).endswith(f"needs matplotlib, which is not installed: {EXTRA}")
    assert str(error.value).startswith("log_dir ") and not (tmp_path / "tb").exists()
    # without validation there is no KL per step to picture: summaries need no matplotlib
    drawzoo.train(model, binary_images(8, SHAPE), epochs=1, batch_size=4, log_dir=tmp_path / "tb", num_preview=2,
                  progress=False)
    assert (tmp_path / "tb").is_dir()


# -- the command line and the benchmark -------------------------------------------------------------------


def test_eval_plot_takes_svg_and_pdf_and_refuses_other_suffixes_before_any_work(capsys, npz, tmp_path):
    ckpt = tmp_path / "draw.pt"
    save_checkpoint(ckpt, drawzoo.load("draw", **TINY))
    for name, start in (("kl.svg", b"<?xml"), ("kl.pdf", b"%PDF")):
        code, out, err = run(capsys, "eval", ckpt, "--data", npz, "--split", "all", "-k", 1, "--plot", tmp_path / name,
                             "--quiet")
        assert code == 0, err
        assert (tmp_path / name).read_bytes().startswith(start)
    code, out, err = run(capsys, "eval", ckpt, "--data", npz, "--per-step", "--plot", tmp_path / "kl.jpg",
                         "--json", tmp_path / "r.json")
    assert code == 2 and out == "" and err.count("\n") == 1 and ".png, .svg, .pdf" in err and "kl.jpg" in err
    assert not (tmp_path / "kl.jpg").exists() and not (tmp_path / "r.json").exists()


RUN = ROOT / "benchmarks" / "campaign" / "draw_attention.pt"  #: the committed paper run (read only)


def paper_curve():
    return load_script("paper_curve")


def test_paper_curve_plots_a_checkpoint_and_a_pretrained_tags_curve(tmp_path, capsys):
    script, out = paper_curve(), tmp_path / "curve.svg"
    assert script.main([f"with={RUN}", "without=draw.paper_no_attention_bmnist", "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert re.search(r"^with: \d+ epochs", printed, re.M) and "     16        93.96        93.55      449" in printed
    valid = drawzoo.pretrained.info("draw.paper_no_attention_bmnist").trained["valid_neg_elbo"]  # as the tag now holds
    assert f"without: {len(valid)} epochs, validation -ELBO only" in printed
    assert f"  {len(valid):5d}            -  {valid[-1]:11.2f}        -\n" in printed
    assert printed.endswith(f"wrote {out}\n") and out.read_text().startswith("<?xml")
    assert script.history("draw.paper_no_attention_bmnist") == [
        {"epoch": e, "train_loss": None, "valid_loss": v, "seconds": None} for e, v in enumerate(valid, 1)]


@pytest.mark.parametrize("out, message", [(str(RUN), "it would be overwritten"), ("curve.jpg", ".png, .svg, .pdf")])
def test_paper_curve_refuses_an_output_that_is_a_run_or_no_plot_format(out, message, capsys, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    before = RUN.stat().st_mtime_ns
    assert paper_curve().main([f"a={RUN}", "--out", out]) == 2  # one line, as every benchmark script ends
    err = capsys.readouterr().err
    assert message in err and err.count("\n") == 1
    assert RUN.stat().st_mtime_ns == before and list(tmp_path.iterdir()) == []


def test_tensorboard_gets_the_kl_plot_as_a_picture(tmp_path):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    model = drawzoo.load("draw", **TINY)
    drawzoo.train(model, binary_images(8, SHAPE), binary_images(4, SHAPE, seed=1), epochs=1, batch_size=4,
                  log_dir=tmp_path / "tb", num_preview=2, progress=False)
    events = EventAccumulator(str(tmp_path / "tb"), size_guidance={"images": 0}).Reload()
    (image,) = events.Images("kl_per_step")
    assert (image.width, image.height) == (900, 390)  # kl_plot's figure, rendered by Agg


def test_the_campaign_without_matplotlib_stops_before_any_work(no_matplotlib, tmp_path, capsys):
    script = load_script("campaign")
    args = ["--repo", str(tmp_path / "repo"), "--runs", str(tmp_path / "runs")]
    assert script.main([*args, "--status"]) == 0  # its status draws nothing
    capsys.readouterr()
    for more in ([], ["--table"]):
        assert script.main([*args, *more]) == 2
        out, err = capsys.readouterr()
        assert out == "" and err == ("campaign: error: campaign.py (its learning curves, docs/campaign/) needs "
                                     f"matplotlib, which is not installed: {EXTRA}\n")
    assert not (tmp_path / "repo").exists() and not (tmp_path / "runs").exists()

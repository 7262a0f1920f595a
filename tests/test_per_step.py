"""How much each glimpse tells (`evaluate(..., per_step=True)`, `drawzoo eval --per-step`, TensorBoard)
and DRAW reading real images (`drawzoo animate --reconstruct`)."""

import json
import sys
import textwrap

import numpy as np
import pyro
import pyro.distributions as dist
import pytest
import torch
from PIL import Image
from pyro.infer import TraceMeanField_ELBO

import drawzoo
from drawzoo.checkpoints import save_checkpoint
from drawzoo.models import VAE
from drawzoo.models.importance import log_prob_sum
from drawzoo.figures.pictures import GREEN, RED
from tests.conftest import binary_images, fake_distribution
from tests.test_cli import npz, run  # noqa: F401 (npz: 40 images of SHAPE)

SHAPE = (1, 10, 12)
TINY = dict(T=3, hidden_dim=16, latent_dim=4, read_size=2, write_size=3, image_shape=SHAPE)


def normal_kl(mu, sigma):
    """KL(N(mu, sigma^2) || N(0, 1)) summed over the last dimension, by its formula."""
    return (0.5 * (mu ** 2 + sigma ** 2 - 1) - sigma.log()).sum(-1)


def test_draw_reports_each_steps_kl_and_they_add_up_to_the_negative_elbo():
    model, x = drawzoo.load("draw", **TINY), binary_images(12, SHAPE)
    result = drawzoo.evaluate(model, x, per_step=True, seed=3)
    assert result["latent_sites"] == ["z_0", "z_1", "z_2"] and result["kl_estimate"] == ["analytic"] * 3
    # each step's KL, from the guide's own mu_t and sigma_t for the z's it draws after the same seeding
    torch.manual_seed(3)
    with torch.no_grad():
        guide = pyro.poutine.trace(model.guide).get_trace(x)
    expected = [normal_kl(guide.nodes[f"z_{t}"]["fn"].base_dist.loc, guide.nodes[f"z_{t}"]["fn"].base_dist.scale)
                .mean().item() for t in range(3)]
    assert result["kl_per_step"] == pytest.approx(expected, rel=1e-5)
    # reconstruction + KLs = the mean-field ELBO Pyro computes (DRAW's L^x + L^z) on the same z's
    torch.manual_seed(3)
    with torch.no_grad():
        loss = TraceMeanField_ELBO().loss(model.model, model.guide, x) / len(x)
    assert result["reconstruction"] + sum(result["kl_per_step"]) == pytest.approx(loss, rel=1e-5)
    # and the figures the evaluation gave before are unchanged
    plain = drawzoo.evaluate(model, x, seed=3)
    assert (plain["neg_elbo"], plain["nll"]) == (result["neg_elbo"], result["nll"])


def test_the_vae_reports_its_one_kl_averaged_over_the_k_samples():
    model, x = VAE(image_shape=SHAPE, hidden_dim=8, latent_dim=3), binary_images(10, SHAPE)
    result = drawzoo.evaluate(model, x, num_samples=4, per_step=True, batch_size=3)
    with torch.no_grad():
        expected = normal_kl(*model.encode(x)).mean().item()
    assert result["latent_sites"] == ["z"] and result["kl_per_step"] == pytest.approx([expected], rel=1e-5)


class StudentGuide(VAE):
    """A VAE whose guide is a Student t: no analytic KL from the Normal prior."""

    def guide(self, x, *, num_data=None):
        x = self.check_images(x)
        self.register()
        with self.data_plate(x.shape[0], num_data):
            mu, sigma = self.encode(x)
            pyro.sample("z", dist.StudentT(4.0, mu, sigma).to_event(1))


def test_a_pair_without_analytic_kl_gets_the_monte_carlo_estimate():
    model, x = StudentGuide(image_shape=SHAPE, hidden_dim=8, latent_dim=3), binary_images(10, SHAPE)
    result = drawzoo.evaluate(model, x, per_step=True, seed=1)
    torch.manual_seed(1)
    with torch.no_grad():
        mu, sigma = model.encode(x)
        z = dist.StudentT(4.0, mu, sigma).sample()
    expected = (dist.StudentT(4.0, mu, sigma).log_prob(z) - dist.Normal(0, 1).log_prob(z)).sum(-1).mean().item()
    assert result["kl_estimate"] == ["monte carlo"] and result["kl_per_step"] == pytest.approx([expected], rel=1e-5)
    assert result["reconstruction"] + result["kl_per_step"][0] == pytest.approx(result["neg_elbo"], rel=1e-6)


PIXELS = textwrap.dedent('''
    from dataclasses import dataclass
    import pyro, torch
    from drawzoo.config import param
    from drawzoo.models.base import ZooModel, pixel_likelihood

    @dataclass(frozen=True)
    class PixelsConfig:
        image_shape: tuple[int, int, int] = param((1, 10, 12), "image size (C, H, W)")

    class Pixels(ZooModel):
        """x ~ Bernoulli(sigmoid(logits)): no latent site."""
        Config, zoo_name = PixelsConfig, "pixels"

        def __init__(self, config=None, **overrides):
            super().__init__(config, **overrides)
            self.logits = torch.nn.Parameter(torch.zeros(self.config.image_shape))

        def model(self, x=None, *, batch_size=None, num_data=None):
            x, B = self._data(x, batch_size)
            self.register()
            with self.data_plate(B, num_data):
                pyro.sample("x", pixel_likelihood(self.logits.expand(B, *self.image_shape)), obs=x)

        def guide(self, x, *, num_data=None):
            self.register()

        def generate(self, n):
            return torch.sigmoid(self.logits).expand(1, n, *self.image_shape).detach()
''')


@pytest.fixture
def pixels(tmp_path, monkeypatch):
    """A checkpoint of a registered third-party model without latent sites."""
    fake_distribution(tmp_path / "site", "pixels", source=PIXELS, target="Pixels")
    monkeypatch.syspath_prepend(str(tmp_path / "site"))
    monkeypatch.delitem(sys.modules, "zoo_extra", raising=False)  # another test's package of that name
    model = drawzoo.load("pixels")
    save_checkpoint(tmp_path / "pixels.pt", model)
    yield model, tmp_path / "pixels.pt"
    sys.modules.pop("zoo_extra", None)


def test_a_model_without_latent_sites_is_a_clear_error_before_any_work(pixels, capsys, npz, tmp_path, monkeypatch):
    model, ckpt = pixels
    with pytest.raises(drawzoo.NoLatentSitesError, match="model 'pixels' has no latent site"):
        drawzoo.evaluate(model, binary_images(4, SHAPE), per_step=True)
    assert drawzoo.evaluate(model, binary_images(4, SHAPE))["nll"] > 0  # its NLL is there
    monkeypatch.chdir(tmp_path)
    code, out, err = run(capsys, "eval", ckpt, "--data", npz, "--split", "all", "--per-step", "--quiet")
    assert code == 2 and out == "" and err.count("\n") == 1
    assert err == "drawzoo: error: model 'pixels' has no latent site (its guide samples none): no KL per step to report\n"
    code, out, err = run(capsys, "eval", ckpt, "--data", npz, "--split", "all", "--active-units", "--quiet")
    assert code == 2 and out == "" and err.endswith("no latent site (its guide samples none): no active units to report\n")
    assert not (tmp_path / "kl_per_step.png").exists()
    # training it with TensorBoard summaries still works: no KL per step to log
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    drawzoo.train(model, binary_images(8, SHAPE), binary_images(4, SHAPE), epochs=1, batch_size=4,
                  log_dir=tmp_path / "tb", num_preview=2)
    scalars = EventAccumulator(str(tmp_path / "tb")).Reload().Tags()["scalars"]
    assert "loss/valid" in scalars and not any(tag.startswith("kl_per_step") for tag in scalars)


# -- the command line ----------------------------------------------------------------------------------


def test_active_units_are_the_units_whose_posterior_mean_varies_over_the_images():
    model, x = VAE(image_shape=SHAPE, hidden_dim=8, latent_dim=4), binary_images(10, SHAPE)
    with torch.no_grad():  # units 0 and 1 read the images strongly, units 2 and 3 not at all: mu = 0
        model.posterior.weight[:2] *= 30
        model.posterior.weight[2:4] = 0
        model.posterior.bias[2:4] = 0
        expected = model.encode(x)[0].double().var(0, unbiased=False)
    assert expected[:2].min() > 0.01
    # q(z | x) depends on x only: the mean over the K samples is mu(x) itself, batch by batch
    result = drawzoo.evaluate(model, x, num_samples=4, batch_size=3, active_units=True)
    assert result["latent_sites"] == ["z"] and result["latent_units"] == [4] and result["active_units"] == [2]
    assert result["unit_activity"][0] == pytest.approx(expected.tolist(), rel=1e-6, abs=1e-12)
    assert result["unit_activity"][0][2:] == [0.0, 0.0]
    assert drawzoo.evaluation.ACTIVE_UNIT_THRESHOLD == 0.01
    # the other figures are those without it
    plain = drawzoo.evaluate(model, x, num_samples=4, batch_size=3)
    assert (plain["neg_elbo"], plain["nll"]) == (result["neg_elbo"], result["nll"]) and "active_units" not in plain


def test_a_two_layer_models_top_units_average_their_means_over_the_samples_below():
    model, x = drawzoo.load("hvae", image_shape=SHAPE, latent_dims=(3, 2), hidden_dims=(8, 6)), binary_images(7, SHAPE)
    result = drawzoo.evaluate(model, x, num_samples=5, seed=2, active_units=True, per_step=True)
    assert result["latent_sites"] == ["z_1", "z_2"] and result["latent_units"] == [3, 2]
    # E_q[z_2 | x] = E_{z_1 ~ q(z_1 | x)} mu_2(z_1): the mean of mu_2 over the 5 z_1's the same seeding draws
    torch.manual_seed(2)
    with torch.no_grad():
        guide = pyro.poutine.trace(model.guide).get_trace(x.repeat(5, 1, 1, 1))
    for site, activity in zip(("z_1", "z_2"), result["unit_activity"]):
        means = guide.nodes[site]["fn"].mean.double().view(5, 7, -1).mean(0)
        assert activity == pytest.approx(means.var(0, unbiased=False).tolist(), rel=1e-6)
    assert result["active_units"] == [sum(a > 0.01 for a in activity) for activity in result["unit_activity"]]
    assert len(result["kl_per_step"]) == 2  # with the KL per step, from the same passes


def test_draw_has_latent_dim_units_a_step():
    result = drawzoo.evaluate(drawzoo.load("draw", **TINY), binary_images(6, SHAPE), num_samples=2, active_units=True)
    assert result["latent_sites"] == ["z_0", "z_1", "z_2"] and result["latent_units"] == [4, 4, 4]
    assert all(0 <= a <= 4 for a in result["active_units"]) and all(len(u) == 4 for u in result["unit_activity"])


def checkpoint(path, name="draw", **config):
    save_checkpoint(path, drawzoo.load(name, **config))
    return path


def test_a_site_outside_the_data_plate_is_named_with_its_shape():
    """K=2 samples of 4 images are 8 rows; a site of batch shape (3,) gives no figure per image."""
    def guide():
        pyro.sample("z", dist.Normal(torch.zeros(3, 2), 1.0).to_event(1))

    trace = pyro.poutine.trace(guide).get_trace()
    with pytest.raises(ValueError, match=r"^site 'z' has batch shape \(3,\); expected one value per image \(\[8\]\): "
                       r"put it inside pyro.plate\('data', B\)"):
        drawzoo.evaluation.posterior_means(trace, num_samples=2, batch=4)
    with pytest.raises(ValueError, match=r"^site 'z' has log_prob shape \(3,\); expected one value per image \(\[8\]\)"):
        log_prob_sum(trace, 8)


def test_eval_per_step_prints_each_step_and_writes_the_plot_and_json(capsys, npz, tmp_path):
    ckpt = checkpoint(tmp_path / "draw.pt", **TINY)
    code, out, err = run(capsys, "eval", ckpt, "--data", npz, "--split", "all", "-k", 2, "--plot",
                         tmp_path / "kl.png", "--json", tmp_path / "r.json", "--quiet")
    assert code == 0, err
    result = json.loads((tmp_path / "r.json").read_text())
    kl = result["kl_per_step"]
    assert len(kl) == 3 and all(v > 0 for v in kl) and result["num_images"] == 40
    lines = out.splitlines()
    assert lines[1] == "KL(q(z_t | ...) || p(z_t)) per step, nats per image (analytic):"
    assert lines[2] == f"  step 0 z_0 {kl[0]:8.3f}   cumulative {kl[0]:8.3f}"
    assert lines[4] == f"  step 2 z_2 {kl[2]:8.3f}   cumulative {sum(kl):8.3f}"
    assert f"negative ELBO (analytic KL) {result['reconstruction'] + sum(kl):.2f}" in lines[5]
    assert lines[6] == f"wrote the plot of the KL per step to {tmp_path / 'kl.png'}"
    with Image.open(tmp_path / "kl.png") as plot:
        assert plot.format == "PNG" and plot.size == (900, 390)
        assert RED in {colour for _, colour in plot.convert("RGB").getcolors(1 << 16)}  # the -ELBO line

    # --active-units: one line a latent site, their total, and the figures in the JSON
    code, out, err = run(capsys, "eval", ckpt, "--data", npz, "--split", "all", "-k", 2, "--active-units",
                         "--json", tmp_path / "a.json", "--quiet")
    assert code == 0, err
    result = json.loads((tmp_path / "a.json").read_text())
    active = result["active_units"]
    assert result["latent_units"] == [4, 4, 4] and len(result["unit_activity"]) == 3
    lines = out.splitlines()
    assert lines[1] == ("active units (Burda et al. 2016: the variance over the images of E_q[u | x] above 0.01; "
                        "E_q from K=2):")
    assert lines[2:] == [f"  z_0 {active[0]:5d} of 4", f"  z_1 {active[1]:5d} of 4", f"  z_2 {active[2]:5d} of 4",
                         f"  all {sum(active):5d} of 12"]
    # without --per-step: neither the lines nor the figures
    code, out, _ = run(capsys, "eval", ckpt, "--data", npz, "--split", "all", "-k", 2, "--json", tmp_path / "p.json",
                       "--quiet")
    assert code == 0 and "per step" not in out and "kl_per_step" not in json.loads((tmp_path / "p.json").read_text())
    # the plot is an output like the others: never the checkpoint
    code, _, err = run(capsys, "eval", ckpt, "--data", npz, "--per-step", "--plot", ckpt)
    assert code == 2 and "--plot" in err and "CHECKPOINT" in err


def frames_of(path):
    """The frames of a GIF as RGB images."""
    with Image.open(path) as gif:
        frames = []
        for k in range(gif.n_frames):
            gif.seek(k)
            frames.append(gif.convert("RGB"))
        return frames


def colours(frame):
    return {colour for _, colour in frame.getcolors(1 << 20)}


def test_animate_reconstruct_shows_real_images_beside_their_canvases(capsys, npz, tmp_path):
    ckpt = checkpoint(tmp_path / "draw.pt", **TINY)
    code, out, err = run(capsys, "animate", ckpt, "--reconstruct", "--data", npz, "--split", "all", "--n", 3,
                         "--out", tmp_path / "rec.gif")
    assert code == 0, err
    assert out == f"wrote 4 frames of 3 {npz}/all images and their reconstructions to {tmp_path / 'rec.gif'}\n"
    frames = frames_of(tmp_path / "rec.gif")
    # 3 pairs, 2 per row: a 4 x 2 grid of 10 x 12 images, 2 pixels apart, 9 times upscaled (>= 84 pixels tall)
    assert len(frames) == 4 and frames[0].size == ((2 + 4 * 14) * 9, (2 + 2 * 12) * 9)
    assert not {GREEN, RED} & colours(frames[0])  # before the first step: no windows
    for frame in frames[1:]:
        assert {GREEN, RED} <= colours(frame)
    # the inputs are the data set's images (a seeded subset of it) in the left cell of each pair
    images = np.load(npz)["images"]
    cell = np.asarray(frames[0])[2 * 9:12 * 9:9, 2 * 9:14 * 9:9, 0] / 255  # first cell, one pixel per image pixel
    assert any(np.array_equal(cell, image[0]) for image in images)


def test_animate_reconstruct_without_attention_draws_no_windows(capsys, npz, tmp_path):
    ckpt = checkpoint(tmp_path / "full.pt", **{**TINY, "attention": False})
    code, out, err = run(capsys, "animate", ckpt, "--reconstruct", "--data", npz, "--split", "all", "--n", 2,
                         "--out", tmp_path / "rec.gif")
    assert code == 0, err
    frames = frames_of(tmp_path / "rec.gif")
    assert len(frames) == 4 and not any({GREEN, RED} & colours(frame) for frame in frames)


def test_animate_reconstruct_on_a_vae_points_at_sample(capsys, npz, tmp_path):
    ckpt = checkpoint(tmp_path / "vae.pt", "vae", image_shape=SHAPE, hidden_dim=8)
    code, out, err = run(capsys, "animate", ckpt, "--reconstruct", "--data", npz, "--out", tmp_path / "v.gif")
    assert code == 2 and err.count("\n") == 1
    assert "holds a 'vae' model, which draws in one step: no reconstruction through time to animate " \
           "(drawzoo sample saves its samples)" in err
    assert not (tmp_path / "v.gif").exists()
    # while eval --per-step reports its one KL
    code, out, err = run(capsys, "eval", ckpt, "--data", npz, "--split", "all", "-k", 1, "--per-step", "--plot",
                         tmp_path / "v.png", "--quiet")
    assert code == 0 and "  step 0 z " in out and (tmp_path / "v.png").exists()


# -- TensorBoard -----------------------------------------------------------------------------------------


def test_tensorboard_gets_the_kl_per_step_of_every_validation(tmp_path):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    model = drawzoo.load("draw", **TINY)
    valid = binary_images(6, SHAPE, seed=1)
    history = drawzoo.train(model, binary_images(16, SHAPE), valid, epochs=2, batch_size=8, log_dir=tmp_path / "tb",
                            num_preview=2)
    events = EventAccumulator(str(tmp_path / "tb"), size_guidance={"scalars": 0, "images": 0}).Reload()
    tags = events.Tags()
    assert {"kl_per_step/t_00", "kl_per_step/t_01", "kl_per_step/t_02"} <= set(tags["scalars"])
    assert [e.step for e in events.Scalars("kl_per_step/t_00")] == [2, 4]  # after each epoch's validation
    assert "kl_per_step" in tags["images"] and len(events.Images("kl_per_step")) == 2
    # the last values are the validation's KL per step of the final weights (the same seed)
    expected = drawzoo.evaluate(model, valid, per_step=True, seed=0)["kl_per_step"]
    assert [events.Scalars(f"kl_per_step/t_{t:02d}")[-1].value for t in range(3)] == pytest.approx(expected, rel=1e-5)
    assert history[-1]["valid_loss"] == pytest.approx(drawzoo.evaluate(model, valid, seed=0)["neg_elbo"])


def test_data_options_without_reconstruct_are_an_error_not_ignored(capsys, npz, tmp_path):
    ckpt = checkpoint(tmp_path / "draw.pt", **TINY)
    code, out, err = run(capsys, "animate", ckpt, "--data", npz, "--out", tmp_path / "a.gif")
    assert code == 2 and err.count("\n") == 1 and "--data, --split and --data-root choose the images of " \
        "--reconstruct" in err and not (tmp_path / "a.gif").exists()

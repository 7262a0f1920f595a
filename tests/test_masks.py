"""Partially observed images: masked likelihoods, guides that ignore unobserved pixels, inpainting by
importance resampling, the conditional NLL, and their command-line forms."""

import json
import math

import numpy as np
import pyro
import pytest
import torch
import torch.nn.functional as F
from PIL import Image
from pyro import poutine
from pyro.infer import SVI, Predictive, Trace_ELBO

import drawzoo
from drawzoo.cli import main
from drawzoo.errors import InputError
from drawzoo.data.masks import NAMES, named_mask
from drawzoo.models import VAE, likelihoods
from drawzoo.figures.pictures import MISSING, PADDING, save_inpainting
from tests.conftest import binary_images
from tests.test_readme import run_snippets
from tests.zoo_models import tiny_models

SHAPE = (1, 6, 7)
MODELS = tiny_models(SHAPE)


def random_mask(n, shape=SHAPE, seed=1):
    return torch.rand(n, 1, *shape[1:], generator=torch.Generator().manual_seed(seed)) < 0.6


def traces(m, x, **kwargs):
    guide_trace = poutine.trace(m.guide).get_trace(x, **kwargs)
    model_trace = poutine.trace(poutine.replay(m.model, trace=guide_trace)).get_trace(x, **kwargs)
    return guide_trace, model_trace


# -- 1. the masked likelihood and the guide --------------------------------------------------------


@pytest.mark.parametrize("name", MODELS)
def test_the_masked_log_likelihood_is_the_sum_of_the_observed_pixels_terms(name):
    """With K vectorised particles and num_data: site "x" scores sum over observed pixels of
    log Bernoulli(x | logits), times N / B, with the logits the model returns (for a model with
    another likelihood, of its per-pixel log-probability, `drawzoo.models.likelihoods`)."""
    m, x, mask, K, N = MODELS[name](), binary_images(3, SHAPE), random_mask(3), 4, 30
    with pyro.plate("particles", K, dim=-2):
        _, model_trace = traces(m, x, mask=mask, num_data=N)
    model_trace.compute_log_prob()
    out = model_trace.nodes["_RETURN"]["value"]
    likelihood = m.likelihood or likelihoods.get("bernoulli")
    assert out.shape == (K, 3, likelihood.params_per_channel * SHAPE[0], *SHAPE[1:])
    if likelihood.name == "bernoulli":
        per_pixel = -F.binary_cross_entropy_with_logits(out, x.expand_as(out), reduction="none")
    else:
        per_pixel = likelihood.distribution(out).base_dist.log_prob(x.expand(K, *x.shape))
    expected = torch.where(mask, per_pixel, 0.0).sum((-3, -2, -1)) * N / 3
    torch.testing.assert_close(model_trace.nodes["x"]["log_prob"], expected)
    assert model_trace.nodes["x"]["scale"] == N / 3


@pytest.mark.parametrize("name", MODELS)
def test_the_guide_never_uses_the_values_of_unobserved_pixels(name):
    m, x, mask = MODELS[name](), binary_images(3, SHAPE), random_mask(3)
    scrambled = torch.where(mask, x, 1 - x)
    results = []
    for images in (x, scrambled):
        pyro.set_rng_seed(5)
        guide_trace, model_trace = traces(m, images, mask=mask)
        results.append((guide_trace.log_prob_sum(), model_trace.log_prob_sum()))
    assert results[0] == results[1]
    pyro.set_rng_seed(5)  # and a mask that observes everything is no mask (DRAW without attention
    everything = traces(m, x, mask=torch.ones(SHAPE, dtype=torch.bool))  # sums its terms in another order)
    pyro.set_rng_seed(5)
    plain = traces(m, x)
    for a, b in zip(everything, plain):
        torch.testing.assert_close(a.log_prob_sum(), b.log_prob_sum())


def test_draws_guide_reads_its_own_canvas_where_nothing_is_observed(monkeypatch):
    m, x, mask = MODELS["draw-no-attention"](), binary_images(3, SHAPE), random_mask(3)
    seen = []
    original = m.reader.forward
    monkeypatch.setattr(m.reader, "forward", lambda x, x_hat, h: seen.append((x, x_hat)) or original(x, x_hat, h))
    with m._recording() as trajectory:
        m.guide(x, mask=mask)
    assert len(seen) == m.config.T
    for (read_x, x_hat), canvas in zip(seen, trajectory.canvases):  # the read of step t sees c_{t-1}
        torch.testing.assert_close(read_x, torch.where(mask, x, torch.sigmoid(canvas)))
        assert torch.equal(x_hat[~mask.expand_as(x_hat)], torch.zeros(int((~mask.expand_as(x_hat)).sum())))


def test_the_vae_encodes_unobserved_pixels_as_zero():
    m, x, mask = MODELS["vae"](), binary_images(3, SHAPE), random_mask(3)
    pyro.set_rng_seed(2)
    masked = poutine.trace(m.guide).get_trace(x, mask=mask).nodes["z"]["fn"]
    pyro.set_rng_seed(2)
    zero_filled = poutine.trace(m.guide).get_trace(torch.where(mask, x, 0.0)).nodes["z"]["fn"]
    assert torch.equal(masked.mean, zero_filled.mean) and torch.equal(masked.stddev, zero_filled.stddev)


@pytest.mark.parametrize("attention", [True, False])
def test_with_a_mask_the_model_still_reuses_the_guides_decoder_bit_for_bit(attention, monkeypatch):
    m, x, mask = drawzoo.load("draw", image_shape=SHAPE, T=3, hidden_dim=16, latent_dim=4, read_size=2,
                              write_size=3, attention=attention), binary_images(3, SHAPE), random_mask(3)
    guide_trace = poutine.trace(m.guide).get_trace(x, mask=mask)
    calls = []
    original = m.decoder.forward
    monkeypatch.setattr(m.decoder, "forward", lambda *a: calls.append(1) or original(*a))
    fast = poutine.trace(poutine.replay(m.model, trace=guide_trace)).get_trace(x, mask=mask).log_prob_sum()
    assert calls == []  # the guide's decoder pass was reused
    m.reuse_guide_decoder = False
    plain = poutine.trace(poutine.replay(m.model, trace=guide_trace)).get_trace(x, mask=mask).log_prob_sum()
    assert len(calls) == 3 and torch.equal(fast, plain)


@pytest.mark.parametrize("name", ["draw", "vae"])
def test_masks_flow_through_svi_elbos_and_predictive(name):
    m, x, mask = MODELS[name](), binary_images(4, SHAPE), random_mask(4)
    loss = SVI(m.model, m.guide, pyro.optim.Adam({"lr": 1e-2}), Trace_ELBO(num_particles=3, vectorize_particles=True,
                                                                            max_plate_nesting=1)).step(x, mask=mask)
    assert math.isfinite(loss) and loss < Trace_ELBO().loss(m.model, m.guide, x)  # fewer pixels to explain
    samples = Predictive(m.model, guide=m.guide, num_samples=3, parallel=True)(x, mask=mask)
    assert samples["x"].shape == (3, 4, *SHAPE)


# -- the named masks, and bad masks ----------------------------------------------------------------


def test_named_masks():
    shape = (3, 5, 6)
    m = {name: named_mask(name, shape, 2) for name in ("top", "bottom", "left", "right", "centre")}
    assert all(v.shape == (2, 1, 5, 6) and v.dtype == torch.bool for v in m.values())
    assert torch.equal(m["top"], ~m["bottom"]) and torch.equal(m["left"], ~m["right"])
    assert not m["top"][0, 0, :2].any() and m["top"][0, 0, 2:].all()
    assert not m["right"][0, 0, :, 3:].any() and m["right"][0, 0, :, :3].all()
    assert (~m["centre"][0, 0]).sum() == 2 * 3 and not m["centre"][0, 0, 1:3, 1:4].any()
    random = named_mask("random:0.3", (1, 28, 28), 50, seed=4)
    assert torch.equal(random, named_mask("random:0.3", (1, 28, 28), 50, seed=4))
    assert not torch.equal(random[0], random[1]) and abs((~random).float().mean() - 0.3) < 0.01
    assert "random:P" in NAMES
    for bad, match in (("middle", "unknown mask 'middle'"), ("random:1", r"P in \(0, 1\)"), ("random:x", "random:P")):
        with pytest.raises(InputError, match=match):
            named_mask(bad, shape)


@pytest.mark.parametrize("bad,match", [
    (torch.ones(3, 1, 6, 7), "must be a bool tensor .* got dtype torch.float32 .*mask > 0.5"),
    (torch.ones(3, 1, 7, 6, dtype=torch.bool), r"mask of shape \[3, 1, 7, 6\] does not broadcast to the images "
                                               r"\[3, 1, 6, 7\]"),
    (torch.ones(2, 1, 6, 7, dtype=torch.bool), r"shape \[2, 1, 6, 7\] does not broadcast"),
    (torch.ones(1, 3, 1, 6, 7, dtype=torch.bool), "does not broadcast"),
    ([[True]], "must be a bool tensor .* got list"),
])
def test_bad_masks_are_one_line_errors_naming_the_problem(bad, match):
    m, x = MODELS["vae"](), binary_images(3, SHAPE)
    for call in (lambda: m.model(x, mask=bad), lambda: m.guide(x, mask=bad), lambda: m.inpaint(x, bad),
                 lambda: drawzoo.evaluate(m, x, mask=bad)):
        with pytest.raises(InputError, match=match) as e:
            call()
        assert "\n" not in str(e.value)


def test_masks_need_a_model_that_takes_them():
    class NoMasks(VAE):
        zoo_name = "nomasks"

        def guide(self, x, *, num_data=None):
            return super().guide(x, num_data=num_data)

    m = NoMasks(image_shape=SHAPE, hidden_dim=8, latent_dim=2)
    with pytest.raises(InputError, match="NoMasks.guide takes no mask="):
        drawzoo.evaluate(m, binary_images(2, SHAPE), mask="bottom")
    assert "cond_nll" not in drawzoo.evaluate(m, binary_images(2, SHAPE))


# -- 2. and 3.: against exact conditionals of models with one latent dimension ---------------------

EXACT_SHAPE = (1, 3, 4)
EXACT = {"vae": (lambda: drawzoo.load("vae", image_shape=EXACT_SHAPE, hidden_dim=8, latent_dim=1), "z"),
         "draw": (lambda: drawzoo.load("draw", image_shape=EXACT_SHAPE, T=1, hidden_dim=8, latent_dim=1,
                                       attention=False), "z_0")}


def _sharp(name):
    """A tiny model whose pixels depend strongly on its one latent z (its decoder's weights scaled
    up), so that p(x_miss | x_obs) is far from p(x_miss); its guide, as initialised, is broad."""
    make, site = EXACT[name]
    torch.manual_seed(0)
    m = make()
    with torch.no_grad():
        for n, p in m.named_parameters():
            if n.startswith(("decoder", "writer")):
                p.mul_(4)
    return m, site


@torch.no_grad()
def _on_a_grid(m, site, x, mask=None):
    """Per image: ``log p(x_obs, z_g) + log dz`` and the pixel means of p(x | z_g) on a grid of z, by
    conditioning the model on each grid value (quadrature over the one latent dimension)."""
    grid = torch.linspace(-9, 9, 6001)
    log_joint, means = [], []
    for b in range(len(x)):
        images = x[b:b + 1].expand(len(grid), *x.shape[1:])
        kwargs = {} if mask is None else {"mask": mask[b:b + 1].expand(len(grid), *mask.shape[1:])}
        trace = poutine.trace(poutine.condition(m.model, data={site: grid[:, None]})).get_trace(images, **kwargs)
        trace.compute_log_prob()
        log_joint.append(trace.nodes["x"]["log_prob"] + trace.nodes[site]["log_prob"] + math.log(grid[1] - grid[0]))
        means.append(trace.nodes["x"]["fn"].mean)
    return torch.stack(log_joint), torch.stack(means)  # [B, G], [B, G, C, H, W]


@pytest.mark.parametrize("name", EXACT)
def test_the_conditional_nll_converges_to_the_exact_one(name):
    m, site = _sharp(name)
    x, mask = binary_images(4, EXACT_SHAPE, seed=3), named_mask("bottom", EXACT_SHAPE, 4)
    exact_log_p = torch.logsumexp(_on_a_grid(m, site, x)[0], 1)
    exact_log_p_observed = torch.logsumexp(_on_a_grid(m, site, x, mask)[0], 1)
    exact = -(exact_log_p - exact_log_p_observed).mean().item()
    result = drawzoo.evaluate(m, x, num_samples=4000, mask="bottom")
    assert result["nll"] == pytest.approx(-exact_log_p.mean().item(), abs=0.05)
    assert result["nll_observed"] == pytest.approx(-exact_log_p_observed.mean().item(), abs=0.05)
    assert result["cond_nll"] == pytest.approx(exact, abs=0.05)
    assert result["missing_fraction"] == pytest.approx(2 / 3)  # rows 1 and 2 of 3


@pytest.mark.parametrize("name", EXACT)
def test_inpainting_fills_in_draws_from_the_exact_conditional(name):
    """Importance resampling's filled-in pixel means, averaged over many resamplings, are the exact
    E[x_miss | x_obs]; the observed pixels come back exactly as they were."""
    m, site = _sharp(name)
    x, mask = binary_images(2, EXACT_SHAPE, seed=3), named_mask("top", EXACT_SHAPE, 2)
    log_joint, means = _on_a_grid(m, site, x, mask)
    exact = (log_joint.softmax(1)[..., None, None, None] * means).sum(1)  # [B, C, H, W]
    prior = means.mean(1)  # what ignoring x_obs would give, near enough
    R = 1500
    repeated, masks = x.repeat(R, 1, 1, 1), mask.repeat(R, 1, 1, 1)
    filled = m.inpaint(repeated, masks, num_samples=200)
    assert torch.equal(filled[masks.expand_as(filled)], repeated[masks.expand_as(filled)])
    estimate = filled.view(R, *x.shape).mean(0)
    hidden = ~mask.expand_as(x)
    assert (exact - prior)[hidden].abs().max() > 0.05  # the test tells conditioning on x_obs from not
    torch.testing.assert_close(estimate[hidden], exact[hidden], atol=0.02, rtol=0)
    binary = m.inpaint(x, mask, num_samples=5, sample=True)
    assert set(binary.unique().tolist()) <= {0.0, 1.0} and torch.equal(binary[~hidden], x[~hidden])


@pytest.mark.parametrize("name", ["draw", "conv_draw", "vae"])
def test_inpaint_keeps_the_observed_pixels_of_grey_images_exactly(name):
    m, mask = MODELS[name](), random_mask(5)
    x = torch.rand(5, *SHAPE, generator=torch.Generator().manual_seed(0))
    filled = m.inpaint(x, mask, num_samples=7)
    observed = mask.expand_as(x)
    assert filled.shape == x.shape and torch.equal(filled[observed], x[observed])
    assert ((filled >= 0) & (filled <= 1)).all() and not torch.equal(filled[~observed], x[~observed])
    assert torch.equal(m.inpaint(x, torch.ones(1, 1, 1, dtype=torch.bool)), x)  # nothing to fill
    with pytest.raises(InputError, match="needs a mask"):
        m.inpaint(x, None)


def test_the_conditional_nll_at_its_extremes_and_alongside_the_plain_figures():
    m, x = MODELS["vae"](), binary_images(5, SHAPE)
    plain = drawzoo.evaluate(m, x, num_samples=6, batch_size=2, seed=3)
    masked = drawzoo.evaluate(m, x, num_samples=6, batch_size=2, seed=3, mask="random:0.5")
    assert {k: masked[k] for k in ("neg_elbo", "nll")} == {k: plain[k] for k in ("neg_elbo", "nll")}
    assert masked["cond_nll"] == pytest.approx(masked["nll"] - masked["nll_observed"])
    assert 0 < masked["cond_nll"] < masked["nll"]
    nothing = drawzoo.evaluate(m, x, num_samples=6, batch_size=2, seed=3, mask=torch.zeros(SHAPE, dtype=torch.bool))
    assert (nothing["nll_observed"], nothing["missing_fraction"]) == (0, 1)
    assert nothing["cond_nll"] == pytest.approx(plain["nll"], rel=1e-12)
    # image 0 observed in full (its cond. NLL is 0), image 1 not at all (its NLL): swapping the two
    # masks swaps what each part sums
    two = x[:2]
    full, empty = torch.ones(SHAPE, dtype=torch.bool), torch.zeros(SHAPE, dtype=torch.bool)
    a = drawzoo.evaluate(m, two, num_samples=6, seed=3, mask=torch.stack([full, empty]))
    b = drawzoo.evaluate(m, two, num_samples=6, seed=3, mask=torch.stack([empty, full]))
    assert a["nll_observed"] + b["nll_observed"] == pytest.approx(a["nll"])
    assert a["cond_nll"] + b["cond_nll"] == pytest.approx(a["nll"])
    with pytest.raises(InputError, match="observes every pixel of every image"):
        drawzoo.evaluate(m, x, mask=torch.ones(5, *SHAPE, dtype=torch.bool))


# -- the picture and the command line -------------------------------------------------------------


def test_the_inpainting_picture_has_rows_observed_filled_original(tmp_path):
    x, mask = binary_images(5, SHAPE), named_mask("bottom", SHAPE, 5)
    filled = torch.full_like(x, 0.5)
    save_inpainting(x, mask, filled, tmp_path / "p.png", nrow=3)
    pixels = np.asarray(Image.open(tmp_path / "p.png").convert("RGB"))
    H, W = SHAPE[1:]
    assert pixels.shape == (2 * 3 * (H + PADDING) + PADDING, 3 * (W + PADDING) + PADDING, 3)

    def cell(row, col):
        y, x0 = PADDING + row * (H + PADDING), PADDING + col * (W + PADDING)
        return pixels[y:y + H, x0:x0 + W]

    missing = np.round(np.array(MISSING) * 255)
    assert np.abs(cell(0, 0)[H // 2:] - missing).max() <= 1  # observed row: the missing half coloured
    assert np.array_equal(cell(0, 0)[:H // 2, :, 0], np.asarray(x[0, 0, :H // 2] * 255, dtype=np.uint8))
    assert (cell(1, 0) == 128).all()  # filled in
    assert np.array_equal(cell(2, 0)[..., 0], np.asarray(x[0, 0] * 255, dtype=np.uint8))  # original
    assert np.array_equal(cell(5, 1)[..., 0], np.asarray(x[4, 0] * 255, dtype=np.uint8))  # second run of 3
    assert (cell(5, 2) == 0).all()  # the last run's empty place


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    folder = tmp_path_factory.mktemp("masks")
    np.savez(folder / "images.npz", images=binary_images(40, SHAPE).numpy())
    assert main(["train", "draw", "--T", "2", "--hidden-dim", "12", "--latent-dim", "2", "--read-size", "2",
                 "--write-size", "3", "--data", str(folder / "images.npz"), "--epochs", "1", "--batch-size", "10",
                 "--checkpoint", str(folder / "draw.pt"), "--quiet"]) == 0
    return folder


def run(capsys, *argv):
    code = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return code, out, err


def test_cli_inpaint_and_eval_with_a_mask(checkpoint, capsys):
    data = ["--data", checkpoint / "images.npz", "--split", "all"]
    code, out, err = run(capsys, "inpaint", checkpoint / "draw.pt", *data, "--mask", "centre", "--n", 5, "--nrow", 3,
                         "-k", 4, "--out", checkpoint / "inpaint.png")
    assert code == 0, err
    assert "wrote 5 images" in out and "mask centre" in out and "rows observed, filled in, original" in out
    H, W = SHAPE[1:]
    assert Image.open(checkpoint / "inpaint.png").size == (3 * (W + PADDING) + PADDING, 6 * (H + PADDING) + PADDING)

    code, out, err = run(capsys, "eval", checkpoint / "draw.pt", *data, "-k", 5, "--limit", 10, "--mask", "bottom",
                         "--json", checkpoint / "r.json", "--quiet")
    assert code == 0, err
    result = json.loads((checkpoint / "r.json").read_text())
    assert result["mask"] == "bottom" and result["missing_fraction"] == pytest.approx(3 / 6)
    assert f"conditional NLL of the missing pixels (mask bottom, 50% of the pixels) {result['cond_nll']:.2f} nats" in out
    assert f"= NLL {result['nll']:.2f} - NLL of the observed pixels {result['nll_observed']:.2f}" in out


@pytest.mark.parametrize("argv,message", [
    (["inpaint", "--mask", "middle"], "unknown mask 'middle'; one of top, bottom, left, right, centre, random:P"),
    (["inpaint", "--mask", "random:0"], "random:P needs P in (0, 1)"),
    (["inpaint", "--n", "0"], "--n must be >= 1"),
    (["eval", "--mask", "random:1.5"], "random:P needs P in (0, 1)"),
])
def test_cli_bad_masks_are_one_line_errors(checkpoint, capsys, argv, message):
    output = ["--out", checkpoint / "x.png"] if argv[0] == "inpaint" else ["--json", checkpoint / "x.json"]
    code, out, err = run(capsys, argv[0], checkpoint / "draw.pt", "--data", checkpoint / "images.npz", *argv[1:],
                         *output)
    assert code == 2 and err.startswith("drawzoo: error: ") and message in err and err.count("\n") == 1
    assert not (checkpoint / "x.png").exists() and not (checkpoint / "x.json").exists()


def test_the_readme_snippets_run_as_written(monkeypatch):
    namespace = run_snippets("## Partially observed images: masks, inpainting, conditional NLL", monkeypatch)
    x, mask, filled, scores = (namespace[k] for k in ("x", "mask", "filled", "scores"))
    assert torch.equal(filled[mask.expand_as(x)], x[mask.expand_as(x)])
    assert scores["missing_fraction"] == 0.5 and math.isfinite(namespace["loss"])


def test_cli_help_names_the_masks(capsys):
    for command in ("inpaint", "eval"):
        with pytest.raises(SystemExit) as e:
            main([command, "--help"])
        assert e.value.code == 0
    out = " ".join(capsys.readouterr().out.split())
    assert out.count("top, bottom, left, right, centre, random:P") == 2 and "rows observed, filled in, original" in out

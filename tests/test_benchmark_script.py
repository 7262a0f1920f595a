"""`benchmarks/nll_mnist.py` end to end on the real data, with its tiny "smoke" preset."""

import json
import os

import pytest
import torch

import drawzoo
from drawzoo.data.batching import random_subset
from drawzoo.checkpoints import read_checkpoint
from drawzoo.evaluation.objectives import describe, make_elbo
from tests.conftest import fake_distribution, load_script

def _script():
    return load_script("nll_mnist")


@pytest.fixture
def real_data():
    if not os.environ.get("DRAWZOO_DATA"):
        if os.environ.get("CI"):
            pytest.fail("DRAWZOO_DATA is not set under CI: the real binarized MNIST is missing")
        pytest.skip("DRAWZOO_DATA is not set")


def test_smoke_preset_prints_the_table_and_writes_its_files(real_data, tmp_path, capsys, monkeypatch):
    fake_distribution(tmp_path / "site")  # a third-party model joins by its registry name
    monkeypatch.syspath_prepend(str(tmp_path / "site"))
    out = tmp_path / "out"
    assert _script().main(["--preset", "smoke", "--out", str(out), "--models", "draw,vae,mymodel", "--iwae"]) == 0
    printed = capsys.readouterr().out
    assert "| test cond. NLL, bottom half missing (K) |" in printed
    for label in ("DRAW (attention)", "DRAW (no attention)", "| VAE |", "| mymodel |", "<= 80.97", "<= 87.40",
                  "| DRAW (attention, IWAE K=3) | T=2, hidden_dim=16, latent_dim=4, write_size=3 | "
                  "iwae (K=3) |", "| DRAW (no attention) | T=2, hidden_dim=16, latent_dim=4, attention=False | elbo |"):
        assert label in printed
    rows = json.loads((out / "results.json").read_text())["rows"]
    assert [r["label"] for r in rows] == ["DRAW (attention)", "DRAW (no attention)", "DRAW (attention, IWAE K=3)",
                                          "VAE", "mymodel"]
    assert [(r["objective"], r["particles"]) for r in rows] == [("elbo", 1)] * 2 + [("iwae", 3)] + [("elbo", 1)] * 2
    assert rows[2]["config"] == rows[0]["config"]
    for r in rows:
        assert r["test_images"] == 200 and r["num_samples"] == 3
        assert r["test_nll"] <= r["test_neg_elbo"] and r["parameters"] > 0
        assert r["mask"] == "bottom" and r["test_cond_nll"] == pytest.approx(r["test_nll"] - r["test_nll_observed"])
        assert 0 < r["test_cond_nll"] < r["test_nll"]
        assert (out / f"samples_{_script().slug(r['label'])}.png").exists()
    assert read_checkpoint(out / "draw_attention_iwae_k_3.pt")["elbo"] == describe(make_elbo("iwae", 3))
    assert (out / "results.md").read_text().count("\n|") == 7  # header, rule, 5 rows


def test_resume_leaves_a_finished_row_as_it_was(real_data, tmp_path, capsys):
    """--resume after a complete run: no step, no new figure (the smoke VAE moved 519.59 -> 511.34 nats when
    a rerun retrained it); a row whose run then trains further is scored anew."""
    script, out = _script(), tmp_path / "out"
    args = ["--preset", "smoke", "--out", str(out), "--models", "vae", "--test-limit", "50"]
    assert script.main(args) == 0
    first = json.loads((out / "results.json").read_text())["rows"]
    weights = (out / "vae.pt").read_bytes(), (out / "vae.best.pt").read_bytes()
    capsys.readouterr()
    assert script.main([*args, "--resume"]) == 0
    assert "VAE: already trained and scored" in capsys.readouterr().out
    assert json.loads((out / "results.json").read_text())["rows"] == first
    assert ((out / "vae.pt").read_bytes(), (out / "vae.best.pt").read_bytes()) == weights
    # other scoring, or no --resume: scored (and trained) anew
    assert script.main([*args, "--resume", "--num-samples", "2"]) == 0
    assert "already trained" not in capsys.readouterr().out
    assert (out / "vae.pt").read_bytes() == weights[0]
    assert json.loads((out / "results.json").read_text())["rows"][0]["num_samples"] == 2


def test_the_iwae_rows_are_opt_in_and_twin_an_elbo_row():
    script = _script()
    quick = script.load_preset("quick")
    assert [r.label for r in script.select_runs(quick, None)] == ["DRAW (attention)", "DRAW (no attention)", "VAE"]
    runs = script.select_runs(quick, None, iwae=True)
    assert [r.label for r in runs] == ["DRAW (attention)", "DRAW (no attention)", "DRAW (attention, IWAE K=5)",
                                       "DRAW (attention, IWAE K=5, same time)", "VAE"]
    elbo, iwae, same_time = runs[0], runs[2], runs[3]
    for row in (iwae, same_time):
        assert (row.train.objective, row.train.particles, elbo.train.objective) == ("iwae", 5, "elbo")
        assert (row.recipe.model, row.recipe.config, row.train.lr, row.train.lr_min) == (
            elbo.recipe.model, elbo.recipe.config, elbo.train.lr, elbo.train.lr_min)
    # the same epochs; or ~2.4x dearer steps in ~the same wall time
    assert (iwae.train.epochs, iwae.train.max_steps) == (elbo.train.epochs, None)
    assert same_time.train.max_steps < elbo.train.epochs * 50_000 // elbo.train.batch_size
    with pytest.raises(drawzoo.DrawzooError, match="no IWAE row for vae"):
        script.select_runs(quick, ["vae"], iwae=True)
    # the paper preset's IWAE rows (the campaign's) are --iwae extras after their model's ELBO rows
    paper = script.select_runs(script.load_preset("paper"), ["hvae"], iwae=True)
    assert [r.label for r in paper] == ["VAE, 1 stochastic layer", "VAE, 2 stochastic layers",
                                        "IWAE k=5, 1 stochastic layer", "IWAE k=5, 2 stochastic layers"]


def test_subsets_are_seeded_random_samples_not_the_first_rows():
    sorted_split = torch.arange(10_000)  # like the test split, sorted by label
    subset = random_subset(sorted_split, 2000, seed=0)
    assert len(subset) == 2000 and len(set(subset.tolist())) == 2000
    assert subset.max() > 9000 and not torch.equal(subset, sorted_split[:2000])
    assert torch.equal(subset, random_subset(sorted_split, 2000, seed=0))


def test_unknown_models_are_refused(real_data, capsys):
    with pytest.raises(Exception, match="unknown model 'nope'"):
        _script().select_runs(_script().load_preset("smoke"), ["draw", "nope"])


LITERATURE = ["HVAE, 1 layer, VAE k=1", "HVAE, 1 layer, IWAE k=50", "HVAE, 2 layers, VAE k=1",
              "HVAE, 2 layers, IWAE k=5", "HVAE, 2 layers, IWAE k=50", "DRAW (attention, T=6)",
              "DRAW (no attention, T=6)", "Conv DRAW (T=8, 1 layer)"]


def test_the_literature_preset_runs_its_iwae_rows_by_default_each_against_its_paper():
    script = _script()
    runs = script.select_runs(script.load_preset("literature"), ["hvae", "draw", "conv_draw"])
    assert [r.label for r in runs] == LITERATURE
    assert [(r.train.objective, r.train.particles) for r in runs] == [
        ("elbo", 1), ("iwae", 50), ("elbo", 1), ("iwae", 5), ("iwae", 50), ("elbo", 1), ("elbo", 1), ("elbo", 1)]
    assert [r.recipe.data.train for r in runs] == ["mnist"] * 5 + ["binarized_mnist"] * 3
    assert [r.scoring.reference.split()[0] for r in runs] == ["86.76", "84.78", "85.33", "83.89", "82.90",
                                                              "<=", "<=", "<="]
    assert [r.recipe.config.get("latent_dims") for r in runs[:5]] == [[50], [50], None, None, None]  # None: 2 layers
    with pytest.raises(drawzoo.DrawzooError, match="no IWAE row"):  # none is an --iwae extra
        script.select_runs(script.load_preset("literature"), None, iwae=True)


def test_literature_preset_end_to_end_at_a_tiny_budget(real_data, tmp_path, capsys, monkeypatch):
    """Every row of the preset as it is, but 2 steps of training, 20 validation and test images, K=2."""
    script = _script()
    read_row = script.read_row

    def tiny(path):
        row = read_row(path)
        recipe = row.recipe
        train = {**recipe.train, "epochs": 1, "max_steps": 2, "batch_size": 20, "compile": False}
        data = script.dataclasses.replace(recipe.data, valid_limit=20)
        return script.Row(script.dataclasses.replace(recipe, train=train, data=data), row.scoring)

    monkeypatch.setattr(script, "read_row", tiny)
    out = tmp_path / "out"
    assert script.main(["--preset", "literature", "--out", str(out), "--num-samples", "2", "--test-limit", "20"]) == 0
    printed = capsys.readouterr().out
    assert "| model | config | objective | data |" in printed
    assert "| HVAE, 1 layer, IWAE k=50 | latent_dims=[50], hidden_dims=[200] | iwae (K=50) | " \
           "mnist, dynamic binarization |" in printed
    assert "| DRAW (no attention, T=6) | T=6, latent_dim=50, attention=False | elbo | binarized_mnist |" in printed
    rows = json.loads((out / "results.json").read_text())["rows"]
    # the registry's order: conv_draw, draw, hvae
    assert [r["label"] for r in rows] == [LITERATURE[7], *LITERATURE[5:7], *LITERATURE[:5]]
    assert [r["data"] for r in rows] == ["binarized_mnist"] * 3 + ["mnist"] * 5
    assert all(r["test_images"] == 20 and r["test_nll"] <= r["test_neg_elbo"] for r in rows)

"""`benchmarks/campaign.py` end to end on the real data, with tiny rows: trains each row to its plan in
its own process, scores it in parts, ships its tag, regenerates the tables; then a rerun changes nothing."""

import argparse
import dataclasses
import json
import math
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

import drawzoo
from drawzoo.checkpoints import read_checkpoint
from drawzoo.pretrained import file_sha256, manifest
from tests.conftest import load_script
from tests.test_data import real_data

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "benchmarks" / "campaign.py"

ROWS = {
    # a cosine learning rate over its plan, trained on at lr_min while it has no plateau (2 epochs
    # are too few to judge): scored at its end only
    "tiny_vae": '''model = "hvae"
[config]
latent_dims = [2]
hidden_dims = [8]
[train]
epochs = 2
batch_size = 500
lr = 3e-3
lr_min = 1e-4
[data]
valid_limit = 300
[benchmark]
label = "tiny VAE"
reference = "99.00 (a made-up figure)"
num_samples = 10
test_limit = 60
[campaign]
tag = "hvae.tiny_test"
priority = 2
published = 99.0
target = 150.0
extend = 1
max_epochs = 3
''',
    # a constant learning rate: scored at epoch 1 too; a milestone every epoch
    "tiny_draw": '''model = "draw"
[config]
T = 2
hidden_dim = 8
latent_dim = 2
read_size = 2
write_size = 3
[train]
epochs = 2
batch_size = 500
lr = 3e-3
[data]
valid_limit = 300
[benchmark]
label = "tiny DRAW"
num_samples = 4
test_limit = 40
[campaign]
tag = "draw.tiny_test"
priority = 1
compare = "neg_elbo"
score_at = [1]
milestone_every = 1
''',
}


def _script():
    return load_script("campaign")


@pytest.fixture
def setup(tmp_path):
    real_data()  # skipped without it (failed under CI)
    recipes, repo, runs = tmp_path / "recipes", tmp_path / "repo", tmp_path / "runs"
    recipes.mkdir()
    for name, text in ROWS.items():
        (recipes / f"{name}.toml").write_text(text)
    (recipes / "plain.toml").write_text('model = "vae"\n[benchmark]\nlabel = "not a campaign row"\n')
    (repo / "benchmarks").mkdir(parents=True)
    (repo / "drawzoo" / "weights").mkdir(parents=True)
    (repo / "drawzoo" / "weights" / "manifest.json").write_text("[]\n")
    for path in (repo / "README.md", repo / "benchmarks" / "README.md"):
        path.write_text("before\n<!-- campaign-table -->\nold\n<!-- /campaign-table -->\n"
                        "<!-- campaign-curves -->\n<!-- /campaign-curves -->\n"
                        "<!-- campaign-orderings -->\n<!-- /campaign-orderings -->\nafter\n")
    args = ["--recipes", str(recipes), "--repo", str(repo), "--runs", str(runs)]
    return recipes, repo, runs, args


def _files(*folders):
    return {p: p.read_bytes() for folder in folders for p in sorted(folder.rglob("*")) if p.is_file()
            and p.suffix != ".log" and p.name != "running.json" and not p.name.endswith(".lock")}


def test_a_campaign_trains_scores_and_ships_each_row_then_a_rerun_changes_nothing(setup, capsys):
    recipes, repo, runs, args = setup
    script = _script()
    assert script.main([*args, "--status"]) == 0
    status = capsys.readouterr().out.splitlines()
    assert [line.split()[0] for line in status] == ["tiny_draw", "tiny_vae"]  # priority order; no plain row
    assert "epoch    0.0/2" in status[0] and "waiting to train to 1" in status[0]

    assert script.main([*args, "--jobs", "2"]) == 0
    out = capsys.readouterr().out
    assert "every row is done" in out
    committed = repo / "benchmarks" / "campaign"
    entries = manifest(repo / "drawzoo" / "weights" / "manifest.json")
    assert sorted(entries) == ["draw.tiny_test", "hvae.tiny_test"]
    for name, tag, end in (("tiny_draw", "draw.tiny_test", 2), ("tiny_vae", "hvae.tiny_test", 3)):
        record = json.loads((committed / f"{name}.json").read_text())
        assert record["epochs"] == end and len(record["history"]) == end
        # the final stop is scored on its test_limit first, then (after every row's other jobs) on all images
        assert [j["job"] for j in record["jobs"]] == (["train", "score", "train", "score", "score"]
                                                       if name == "tiny_draw" else ["train", "train", "score", "score"])
        assert all(j["exit"] == 0 and j["threads"] == 1 and j["code"] for j in record["jobs"])
        final = record["scores"][str(end)]
        assert list(record["scores"]) == (["1", "2"] if name == "tiny_draw" else ["3"])
        limit = 40 if name == "tiny_draw" else 60
        assert final["neg_elbo"]["images"] == 10_000 and final["nll"]["images"] == 10_000  # grown to all at the end
        assert final["nll"]["mean"] <= final["neg_elbo_k_samples"] and final["nll"]["se"] > 0
        ks = final["nll_k"]
        assert list(ks) == (["1", "4"] if name == "tiny_draw" else ["1", "10"])  # K' = 1, 10, ..., K
        assert ks["1"] == pytest.approx(final["neg_elbo_k_samples"], abs=2e-3) and ks[list(ks)[-1]] == final["nll"]["mean"]
        # the tag: the scored weights, with the record's figures, measured on the stored file
        entry = entries[tag]
        weights = repo / "drawzoo" / "weights" / entry.file
        assert entry.sha256 == file_sha256(weights) and entry.test["nll"] == final["nll"]["mean"]
        assert entry.test["nll_images"] == 10_000 and entry.test["nll_samples"] == (4 if name == "tiny_draw" else 10)
        assert entry.trained["epochs"] == end and entry.trained["best_epoch"] == final["best_epoch"]
        assert entry.note == ""  # the epoch-1 tag's note (`tag_note`) went with it
        assert entry.describe() == (f"binarized_mnist: test -ELBO {final['neg_elbo']['mean']:.2f} ± "
                                    f"{final['neg_elbo']['se']:.2f} nats (10,000 images), NLL {final['nll']['mean']:.2f} ± "
                                    f"{final['nll']['se']:.2f} (K={entry.test['nll_samples']}, 10,000 images)")
        model = drawzoo.load(checkpoint=weights)
        test = drawzoo.data.load("binarized_mnist", "test")
        assert drawzoo.evaluate(model, drawzoo.data.batching.random_subset(test, 500, seed=0))["neg_elbo"] == \
            pytest.approx(entry.check["neg_elbo"], abs=1e-3)
        assert not (committed / f"{name}.pt").exists()  # a finished row keeps no milestone
        assert (repo / "docs" / "campaign" / f"{name}.png").exists()
        assert limit < 10_000
    draw = json.loads((committed / "tiny_draw.json").read_text())
    assert draw["scores"]["1"]["nll"]["images"] == 40  # an intermediate stop: its test_limit only
    # the VAE's cosine took its plan's 2 epochs; its third, the extension, was at lr_min
    vae = json.loads((committed / "tiny_vae.json").read_text())
    assert vae["end"] == 3 and vae["extensions"] == [{"at": 2, "to": 3, "improvement": None}]
    run = read_checkpoint(runs / "tiny_vae.pt")
    assert run["train_config"]["anneal_epochs"] == 2 and run["optimizer"]["param_groups"][0]["lr"] == 1e-4
    assert "tiny_vae: epoch 2 without a plateau" in out and "training on to 3 at lr_min 0.0001" in out
    for readme in (repo / "README.md", repo / "benchmarks" / "README.md"):
        text = readme.read_text()
        assert text.startswith("before\n<!-- campaign-table -->\n| model | parameters |") and text.endswith("after\n")
        assert "| tiny DRAW |" in text and "| final" in text and "old" not in text
        assert "| final; lr: a cosine from 0.003 down to 0.0001 over 2 epochs, then 0.0001 to epoch 3 |" in text
        assert "| hvae.tiny_test | `python benchmarks/campaign.py --rows tiny_vae` | final" in text  # the row's command
    assert "![tiny VAE: -ELBO per epoch](../docs/campaign/tiny_vae.png)" in (repo / "benchmarks" / "README.md").read_text()
    # the two rows image by image, the VAE first: the only published figure (tiny DRAW has none)
    assert "\n| tiny VAE - tiny DRAW | " in (repo / "benchmarks" / "README.md").read_text()
    assert "tiny VAE - tiny DRAW" not in (repo / "README.md").read_text() and "tiny VAE - tiny DRAW" in out

    before = _files(repo, runs)
    assert script.main([*args, "--jobs", "2"]) == 0
    out = capsys.readouterr().out
    assert "every row is done" in out and "| tiny VAE |" in out and "train to" not in out
    assert _files(repo, runs) == before  # not a weight, not a figure moved
    assert script.main([*args, "--status"]) == 0
    assert all("done" in line for line in capsys.readouterr().out.splitlines() if line.startswith("tiny"))

    # a fresh machine: the runs are gone with the old one (a finished row keeps no milestone); its
    # record and tag stand for the row, which is neither trained nor scored again
    shutil.rmtree(runs)
    before = _files(repo)
    assert script.main([*args, "--jobs", "2"]) == 0
    out = capsys.readouterr().out
    assert "every row is done" in out and "train to" not in out and "score" not in out.split("| model |")[0]
    assert _files(repo) == before
    # one row's command (the table's own) regenerates the tables with every row
    assert script.main([*args, "--rows", "tiny_vae"]) == 0 and script.main([*args, "--rows", "tiny_draw", "--table"]) == 0
    assert _files(repo) == before
    capsys.readouterr()
    assert script.main([*args, "--status"]) == 0
    status = capsys.readouterr().out.splitlines()
    assert "epoch    2.0/2" in status[0] and "epoch    3.0/3" in status[1] and all("[waiting: done]" in line for line in status)


def test_a_row_without_a_plateau_at_its_end_trains_on_until_it_has_one_or_reaches_max_epochs(setup):
    recipes, repo, runs, args = setup
    script = _script()
    row = script.read_rows(recipes, ["tiny_vae"])[0]  # plan 2 epochs, extend 1, max_epochs 3

    def history(last):  # 20 epochs whose best validation -ELBO falls by `last` over the last 2
        return [{"epoch": e, "valid": 100.0 - (e > 18) * last * (e - 18) / 2} for e in range(1, 21)]

    record = {"history": history(0.04)}  # a plateau: stays at its end
    assert not script.extended(row, record, 2) and row.end(record) == 2
    record = {"history": history(0.06)}
    assert not script.extended(row, record, 1.5)  # not at its end yet
    assert script.extended(row, record, 2) and row.end(record) == 3 and row.stops(record) == [3]
    assert record["extensions"] == [{"at": 2, "to": 3, "improvement": 0.06}]
    assert not script.extended(row, record, 3) and row.end(record) == 3  # max_epochs
    for campaign, error in (("extend = 1\nmax_epochs = 2", "extend needs max_epochs above the plan's 2 epochs"),
                            ("extend = 1", "extend needs max_epochs above the plan's 2 epochs, got None")):
        (recipes / "bad.toml").write_text(ROWS["tiny_vae"].replace("extend = 1\nmax_epochs = 3", campaign))
        with pytest.raises(drawzoo.RecipeError, match=error):
            script.read_rows(recipes)
    (recipes / "bad.toml").write_text(ROWS["tiny_vae"].replace("lr_min = 1e-4\n", ""))
    with pytest.raises(drawzoo.RecipeError, match="extend trains on at the cosine's floor: it needs"):
        script.read_rows(recipes)


def test_a_new_k_rescores_the_latest_stop_from_its_tag_and_leaves_earlier_ones(setup):
    recipes, repo, runs, args = setup
    script = _script()
    row = script.read_rows(recipes, ["tiny_draw"])[0]  # score_at 1, plan 2, K=4 now
    places = script.Places(runs, repo)
    tag = repo / "drawzoo" / "weights" / "draw.tiny_test.pt"
    tag.write_bytes(b"the weights of epoch 2")
    record = {"scores": {"1": {"nll": {"K": 2}, "weights_sha256": "gone"},
                         "2": {"nll": {"K": 2}, "weights_sha256": file_sha256(tag)}}}
    assert script.pending_score(row, record, 2, every_image=False, places=places) == 2  # epoch 1's weights are gone: kept
    # a fresh machine, its run gone: the tag's weights are scored again all the same, and no stop is
    # trained to again (both are scored); a stop scored and gone from the tag is passed over
    assert script.pending_score(row, record, 0, every_image=False, places=places) == 2
    assert row.next_stop(0, record) is None
    assert row.next_stop(0, {"scores": {"1": record["scores"]["1"]}}) == 2
    script.restore_weights(row, 2, places, record)
    assert places.weights(row, 2).read_bytes() == tag.read_bytes()
    script.restore_weights(row, 1, places, record)
    assert not places.weights(row, 1).exists()


def test_saved_score_parts_go_on_only_with_the_same_weights_k_and_figures_code(tmp_path, monkeypatch):
    script = _script()
    package = tmp_path / "drawzoo"
    for name in ("__init__.py", "models/draw.py", "training/loop.py", "cli/train.py"):
        (package / name).parent.mkdir(parents=True, exist_ok=True)
        (package / name).write_text(f"# {name}\n")
    monkeypatch.setattr(script.drawzoo, "__file__", str(package / "__init__.py"))
    code = script.figures_code()
    (package / "training" / "loop.py").write_text("# the training loop, changed\n")
    (package / "cli" / "train.py").write_text("# the CLI, changed\n")
    assert script.figures_code() == code  # code that computes no figure
    (package / "models" / "draw.py").write_text("# the model, changed\n")
    assert script.figures_code() != code
    code = script.figures_code()
    (package / "evaluation").mkdir()
    (package / "evaluation" / "scoring.py").write_text("# a new estimator\n")
    assert script.figures_code() != code

    how = {"code": script.figures_code(), "seed": 0, "compile": False, "parts": [["nll", 10, [1, 10], 200]]}
    path = tmp_path / "row.e10.scores.pt"
    parts = script.saved_parts(path, "sha", 10, how)
    assert parts == {"weights_sha256": "sha", "K": 10, "how": how, "elbo": {}, "nll": {}}
    parts["nll"]["neg_elbo"] = torch.ones(200, dtype=torch.float64)
    script.save_scores(path, parts)
    assert torch.equal(script.saved_parts(path, "sha", 10, how)["nll"]["neg_elbo"], parts["nll"]["neg_elbo"])
    for other in (dict(sha="other weights"), dict(K=20), dict(how={**how, "code": code}),
                  dict(how={**how, "parts": [["nll", 10, [1, 10], 100]]})):
        args = {"sha": "sha", "K": 10, "how": how, **other}
        assert script.saved_parts(path, args["sha"], args["K"], args["how"])["nll"] == {}, other


def _scored(tmp_path, monkeypatch, published):
    """Both tiny rows scored by the real `_score` on 1,000 made-up test images, with an evaluate
    whose per-image figures name the image: NLL = the image's index + the row's offset (its
    "model"), -ELBO one more; each row's record as `publish` writes it. DRAW (offset 0) is scored
    on its test_limit only (40), the VAE (offset 5) on its 60, then on every image."""
    script = _script()
    recipes, repo = tmp_path / "recipes", tmp_path / "repo"
    recipes.mkdir(parents=True)
    for name, text in ROWS.items():
        text = "".join(line for line in text.splitlines(keepends=True) if not line.startswith("published ="))
        (recipes / f"{name}.toml").write_text(text.replace("[campaign]\n", f"[campaign]\npublished = {published[name]}\n"))
    test = drawzoo.data.ImageDataset(torch.rand(1000, 1, 28, 28), binarize="threshold")
    monkeypatch.setattr(script.datasets, "load", lambda *args: test)
    monkeypatch.setattr(script.drawzoo, "load", lambda checkpoint: 5.0 * ("tiny_vae" in checkpoint.name))

    def evaluate(offset, data, num_samples, seed, nested_k, per_image, compile):
        nll = data.keys.double() + offset
        return {"per_image": {"neg_elbo": nll + 1, "nll": nll, "nll_k": {k: nll for k in nested_k}}}

    monkeypatch.setattr(script.drawzoo, "evaluate", evaluate)
    monkeypatch.setattr(script.pretrain, "check_figure", lambda model, test: 0.0)
    states = {}
    monkeypatch.setattr(script, "publish", lambda row, stop, places, state, check, record: states.update({row.name: state}))
    places = script.Places(tmp_path / "runs", repo)
    rows = script.read_rows(recipes)
    for row, passes in zip(rows, (1, 2)):  # the VAE's second pass: on from its test_limit to every image
        places.weights(row, 2).parent.mkdir(parents=True, exist_ok=True)
        places.weights(row, 2).write_bytes(row.name.encode())
        record = {"scores": {"2": {}}}
        for _ in range(passes):
            script.save_record(places, row, record)
            assert script._score(row, 2, places, math.inf, None) == 0
            state = states[row.name]
            record["scores"]["2"] = {"weights_sha256": state["weights_sha256"],
                                     "neg_elbo": {**script.mean_se(state["elbo"]["neg_elbo"]), "K": 1},
                                     "nll": {**script.mean_se(state["nll"]["nll"]), "K": state["K"]}}
        script.save_record(places, row, record)
    return script, rows, places, states


def test_each_saved_per_image_figure_is_known_by_its_test_image(tmp_path, monkeypatch):
    script, rows, places, states = _scored(tmp_path, monkeypatch, {"tiny_draw": 90.0, "tiny_vae": 99.0})
    for row, offset, images in zip(rows, (0, 5), (40, 1000)):
        state = states[row.name]
        for stage, done in (("elbo", 1000), ("nll", images)):
            order = script.scored_images_of(row, state, stage)
            assert len(order) == done and len(set(order.tolist())) == done
            assert torch.equal(state[stage]["nll"], order.double() + offset)
            old = {k: v for k, v in state.items() if k != "how"}  # as saved before "how" was kept
            assert torch.equal(script.scored_images_of(row, old, stage), order)
        limit = row.scoring.test_limit  # 40 and 60, the first part; not a multiple of the part size, 200
        first = script.scored_images_of(row, state, "nll")[:limit]
        assert set(first.tolist()) == set(script.scoring_order(row.train.seed, 1000)[:limit].tolist())
        figures = script.per_image_figures(row, places, script.load_record(places, row))
        assert torch.equal(figures["nll"].isnan().logical_not().nonzero().flatten(),
                           script.scored_images_of(row, state, "nll").sort().values)
        assert torch.equal(figures["neg_elbo"], torch.arange(1000).double() + offset + 1)


def test_the_orderings_pair_the_rows_image_by_image_against_the_published_figures(tmp_path, monkeypatch):
    script, rows, places, _ = _scored(tmp_path, monkeypatch, {"tiny_draw": 90.0, "tiny_vae": 99.0})
    text = script.orderings_section(rows, places)
    # DRAW's NLL on its 40 images against the VAE's on the same 40: 5 nats better on every one
    assert text.splitlines()[2] == ("| tiny DRAW - tiny VAE | -5.00 ± 0.00 (K=4 and 10; 40) | <= -9.00 | as published "
                                    "| -5.00 ± 0.00 (1,000) | <= -9.00 | as published |")
    # a published DRAW -ELBO of 100 bounds its NLL from above only, and a published VAE NLL of 99 its
    # -ELBO from below only: neither figure is ordered; the VAE, the lower published figure, is a
    script, rows, places, states = _scored(tmp_path / "2", monkeypatch, {"tiny_draw": 100.0, "tiny_vae": 99.0})
    line = script.orderings_section(rows, places).splitlines()[2]
    assert line.startswith("| tiny VAE - tiny DRAW | +5.00 ± 0.00 (K=10 and 4; 40) | >= -1.00 | b better "
                           "| +5.00 ± 0.00 (1,000) | >= -1.00 | b better |"), line
    # rows whose NLLs are of other images (other seeds): said so, their -ELBOs still paired
    draw_images = script.scored_images_of(rows[0], states["tiny_draw"], "nll")
    real = script.per_image_figures

    def elsewhere(row, places, record):
        figures = real(row, places, record)
        if row.name == "tiny_vae":
            figures["nll"][draw_images] = math.nan
        return figures

    monkeypatch.setattr(script, "per_image_figures", elsewhere)
    assert script.orderings_section(rows, places).splitlines()[2] == (
        "| tiny VAE - tiny DRAW | - (no images both scored) | >= -1.00 | - | +5.00 ± 0.00 (1,000) | >= -1.00 | b better |")
    monkeypatch.setattr(script, "per_image_figures", real)
    record = script.load_record(places, rows[1])
    record["scores"]["2"]["nll"]["K"] = 20  # scored again with a new K, not yet done: no figures to pair
    script.save_record(places, rows[1], record)
    assert script.orderings_section(rows, places) == "(no two rows scored yet)"


def test_each_rows_learning_rate_is_said_and_where_its_cosine_begins_is_marked_on_its_curve(tmp_path, monkeypatch):
    script = _script()
    recipes, places = tmp_path / "recipes", script.Places(tmp_path / "runs", tmp_path / "repo")
    recipes.mkdir()
    for name, text in ROWS.items():
        (recipes / f"{name}.toml").write_text(text)
    assert [script.schedule_words(row) for row in script.read_rows(recipes)] == [
        "lr 0.003, constant", "lr: a cosine from 0.003 down to 0.0001 over 2 epochs"]
    draw = recipes / "tiny_draw.toml"
    draw.write_text(draw.read_text().replace("lr = 3e-3\n", "lr = 3e-3\nlr_min = 1e-4\nanneal_from = 1\n"))
    rows = script.read_rows(recipes)
    assert script.schedule_words(rows[0]) == "lr 0.003 to epoch 1, then a cosine down to 0.0001 at epoch 2"
    assert script.schedule_words(rows[1], 3) == ("lr: a cosine from 0.003 down to 0.0001 over 2 epochs, "
                                                 "then 0.0001 to epoch 3")  # an extension's
    history = [{"epoch": 1, "train": 120.0, "valid": 121.0}, {"epoch": 2, "train": 110.0, "valid": 111.0}]
    for row in rows:
        places.record(row).parent.mkdir(parents=True, exist_ok=True)
        script.save_record(places, row, {"history": history})
    figures = {}
    monkeypatch.setattr(script.plots, "save_figure", lambda figure, path: figures.update({path.stem: figure}))
    text = script.curves_section(rows, places)
    assert "; lr 0.003 to epoch 1, then a cosine down to 0.0001 at epoch 2; the dotted line: the cosine begins)" in text
    assert "; lr: a cosine from 0.003 down to 0.0001 over 2 epochs)" in text

    # a tag scored before the row's end says that the campaign replaces it, and when
    assert script.tag_note(rows[0], 1, {}) == ("epoch 1 of the 2 that benchmarks/campaign.py trains its row "
                                               "tiny_draw to: the campaign replaces this tag at epoch 2")
    assert script.tag_note(rows[0], 1, {"end": 4}).endswith("of the 4 that benchmarks/campaign.py trains its row "
                                                            "tiny_draw to: the campaign replaces this tag at epoch 4")
    assert script.tag_note(rows[0], 2, {}) == "" and script.tag_note(rows[1], 3, {"end": 3}) == ""

    def dotted(figure):
        return [line.get_xdata()[0] for line in figure.axes[0].lines if line.get_linestyle() == ":"]

    assert dotted(figures[places.curve(rows[0]).stem]) == [1] and dotted(figures[places.curve(rows[1]).stem]) == []


def test_a_row_whose_recipe_changed_is_refused_naming_the_fields(setup, capsys):
    recipes, repo, runs, args = setup
    script = _script()
    assert script.main([*args, "--rows", "tiny_vae", "--max-minutes", "0.01"]) == 75  # begins, no time for a job
    recipe = recipes / "tiny_vae.toml"
    recipe.write_text(recipe.read_text().replace("lr = 3e-3", "lr = 1e-3").replace("latent_dims = [2]",
                                                                                     "latent_dims = [3]"))
    assert script.main([*args, "--rows", "tiny_vae"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and err.startswith(f"campaign: error: row tiny_vae: its recipe {recipe} changed "
                                                   "after its run began (config.latent_dims: [2] -> [3]; train.lr: "
                                                   "0.003 -> 0.001)")
    assert script.main([*args, "--rows", "nope"]) == 2
    assert "no campaign row nope; rows: tiny_draw, tiny_vae" in capsys.readouterr().err


def test_a_running_row_may_change_its_schedule_only_where_its_run_has_not_been(setup, monkeypatch, capsys):
    recipes, repo, runs, _ = setup
    script = _script()
    places, recipe = script.Places(runs, repo), recipes / "tiny_draw.toml"
    stands = {"epoch": 1, "step": 100, "step_in_epoch": 0, "history": [], "best_valid": math.inf}  # 100 steps an epoch
    monkeypatch.setattr(script, "progress_of", lambda path: stands)
    row = script.read_rows(recipes, ["tiny_draw"])[0]
    script.save_record(places, row, script.prepare(row, places))  # its run began at a constant lr; at epoch 1 now

    def amend(old, new):
        recipe.write_text(recipe.read_text().replace(old, new))
        return script.read_rows(recipes, ["tiny_draw"])[0]

    # a cosine from epoch 1 on, over the plan's last epoch: the same run so far, its amendment recorded
    row = amend("lr = 3e-3\n", "lr = 3e-3\nlr_min = 1e-4\nanneal_from = 1\n")
    record = script.prepare(row, places)
    changes = ["train.anneal_from: None -> 1", "train.lr_min: None -> 0.0001"]
    assert [(a["epoch"], a["changes"], a["recipe"]) for a in record["amended"]] == \
        [(1, changes, script.recipe_snapshot(row))]
    assert "tiny_draw: its learning rate's schedule changes at epoch 1, before any step on a cosine" in \
        capsys.readouterr().out
    script.save_record(places, row, record)
    assert len(script.prepare(row, places)["amended"]) == 1  # the amended recipe is the run's now
    job = script.Job(row, "train", 2)
    command = script.job_command(job, places, argparse.Namespace(data_root=None), math.inf)
    assert command[-2:] == ["--anneal-epochs", "1"]  # the cosine's length, whatever the job's stop
    # halfway through epoch 2 the run is on its cosine: no other schedule, and no other field ever
    stands.update(step=150, step_in_epoch=50)
    for old, new, change in (("anneal_from = 1", "anneal_from = 2", "train.anneal_from: 1 -> 2"),
                             ("lr_min = 1e-4", "lr_min = 1e-5", "train.lr_min: 0.0001 -> 1e-05")):
        amend(old, new)
        with pytest.raises(script.CampaignError, match=f"changed after its run began \\({change}\\): .*\\(a running "
                                                       "row may change only its learning rate's schedule after lr"):
            script.prepare(script.read_rows(recipes, ["tiny_draw"])[0], places)
        amend(new, old)
    stands.update(step=100, step_in_epoch=0)
    amend("lr = 3e-3", "lr = 1e-3")
    with pytest.raises(script.CampaignError, match=r"\(train.lr: 0.003 -> 0.001\)"):
        script.prepare(script.read_rows(recipes, ["tiny_draw"])[0], places)


def test_sigterm_stops_every_job_with_a_checkpoint_and_the_next_call_resumes(setup, tmp_path):
    recipes, repo, runs, args = setup
    recipe = recipes / "tiny_draw.toml"
    recipe.write_text(recipe.read_text().replace("epochs = 2", "epochs = 50").replace("score_at = [1]",
                                                                                       "score_at = [40]"))
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    process = subprocess.Popen([sys.executable, str(SCRIPT), *args, "--rows", "tiny_draw"], env=env,
                               stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    run = runs / "tiny_draw.pt"
    try:
        deadline = time.time() + 600
        while not (run.exists() and read_checkpoint(run)["progress"]["epoch"] >= 2) and time.time() < deadline:
            assert process.poll() is None, process.stdout.read()
            time.sleep(0.5)  # past epoch 1, whose milestone is committed
        process.send_signal(signal.SIGTERM)
        out = process.communicate(timeout=300)[0]
    finally:  # never left running, whatever failed
        if process.poll() is None:
            process.kill()
            process.wait()
    assert process.returncode == 128 + signal.SIGTERM, out
    assert "stopped by SIGTERM: every job checkpointed; rerun to continue" in out
    progress = read_checkpoint(run)["progress"]
    assert 0 < progress["epoch"] + progress["step_in_epoch"] < 50  # stopped mid-way, at the step reached
    record = json.loads((repo / "benchmarks" / "campaign" / "tiny_draw.json").read_text())
    assert [(j["job"], j["exit"]) for j in record["jobs"]] == [("train", 128 + signal.SIGTERM)]
    milestone = read_checkpoint(repo / "benchmarks" / "campaign" / "tiny_draw.pt")["progress"]
    assert milestone["step"] == progress["step"] and record["milestone_epoch"] == progress["epoch"]
    # its best weights as the tag stores them: half the bytes, the same figures when scored
    best, kept = read_checkpoint(runs / "tiny_draw.best.pt"), read_checkpoint(repo / "benchmarks" / "campaign" /
                                                                              "tiny_draw.best.pt")
    assert (kept["valid_loss"], kept["epoch"]) == (best["valid_loss"], best["epoch"])
    assert all(kept["state_dict"][k].dtype == torch.float16 and torch.equal(kept["state_dict"][k], v.half())
               for k, v in best["state_dict"].items() if v.is_floating_point())
    script, places = _script(), _script().Places(runs, repo)
    row = script.read_rows(recipes, ["tiny_draw"])[0]
    # --status (the run's best) and the table (the record's, rounded) print the same best validation -ELBO
    best = script.valid_text(progress["best_valid"])
    assert f"best valid -ELBO {best:>7s}" in script.status_line(row, places, record)
    assert f"(best valid -ELBO {best})" in script.table([row], places)
    assert script.valid_text(85.5147) == script.valid_text(round(85.5147, 3)) == "85.515"
    # milestone_every = 0: none
    none = dataclasses.replace(row, plan=dataclasses.replace(row.plan, milestone_every=0), name="no_milestones")
    script.milestone(none, places, {}, {"epoch": 40})
    assert not places.milestone(none).exists()
    # the next call goes on from there
    assert _script().main([*args, "--rows", "tiny_draw", "--max-minutes", "0.3"]) == 75
    assert read_checkpoint(run)["progress"]["step"] > progress["step"]


def test_a_second_ctrl_c_still_waits_for_the_jobs_to_record_what_they_did(capsys):
    script = _script()
    with script.CampaignStop(None, time.monotonic()) as stop:
        for _ in range(2):
            os.kill(os.getpid(), signal.SIGINT)  # a training run's second SIGINT would raise Interrupted
            time.sleep(0.1)
        assert stop.signum == signal.SIGINT
    assert "SIGINT again: still waiting for the jobs to checkpoint" in capsys.readouterr().out


def test_a_fresh_machine_resumes_from_the_committed_milestone(setup, capsys):
    recipes, repo, runs, args = setup
    script = _script()
    row = next(r for r in script.read_rows(recipes) if r.name == "tiny_vae")
    places = script.Places(runs, repo)
    milestone = places.milestone(row)
    milestone.parent.mkdir(parents=True)
    torch.manual_seed(0)
    model = drawzoo.load("hvae", latent_dims=[2], hidden_dims=[8])
    images = drawzoo.data.load("binarized_mnist", "valid")[:1000]
    drawzoo.train(model, images, None, row.train, checkpoint=milestone, max_steps=1, progress=False)
    # the record says the run went on to epoch 2 on the old machine (two jobs of 2 and 3 minutes)
    history = [{"epoch": e, "train": 150.0, "valid": 149.0, "seconds": 60.0} for e in (1, 2)]
    jobs = [{"job": "train", "epochs": [0, 1.0], "minutes": 2.0}, {"job": "train", "epochs": [1.0, 2.0], "minutes": 3.0}]
    script.save_record(places, row, {"jobs": jobs, "history": history, "epochs": 2.0, "steps": 200})
    record = script.prepare(row, places)
    assert read_checkpoint(places.run(row))["progress"]["step"] == 1 and record["milestone_epoch"] == 0
    out = capsys.readouterr().out
    assert "resuming from the milestone" in out
    # what went with the old machine is said, kept apart, and out of the row's train time
    assert ("tiny_vae: its run reached epoch 2 on a machine whose checkpoint is not here; this one resumes at "
            "epoch 0.01 (the committed milestone): epochs 0.01-2 (5 min of training) are trained again") in out
    assert [j["lost"] for j in record["jobs"]] == [{"epochs": [0.01, 1.0], "minutes": 1.98},
                                                   {"epochs": [1.0, 2.0], "minutes": 3.0}]
    (lost,) = record["lost"]
    assert lost["epochs"] == [0.01, 2.0] and lost["history"] == history and lost["resumed_from"] == "the committed milestone"
    assert record["history"] == [] and record["epochs"] == 0.01 and record["steps"] == 1
    assert script.train_minutes(record) == pytest.approx(0.02)
    script.save_record(places, row, record)
    (line,) = [line for line in script.table([row], places).splitlines() if line.startswith("| tiny VAE")]
    assert "| 0 min |" in line and "epochs 0-2 went with a machine on " in line and "(5 min of training, not counted)" in line
    record["history"] = [{"epoch": 1, "train": 160.0, "valid": 155.0, "seconds": 60.0}]  # the run trained again
    script.save_record(places, row, record)
    section = script.curves_section([row], places)
    assert "Epochs 0-2 of an earlier run went with a machine on " in section and (
        "(5 min of training), and are trained again; their validation -ELBO is on the plot (best 149.00 at epoch 1)."
        in section)
    record["history"] = []
    script.save_record(places, row, record)
    assert script.prepare(row, places)["lost"] == [lost]  # said once


def test_a_diverging_row_fails_alone_and_keeps_its_last_checkpoint(setup, capsys):
    recipes, repo, runs, args = setup
    recipe = recipes / "tiny_draw.toml"
    recipe.write_text(recipe.read_text().replace("score_at = [1]\n", ""))
    script = _script()
    row = script.read_rows(recipes, ["tiny_draw"])[0]
    train = drawzoo.data.load("binarized_mnist", "train")
    model = drawzoo.load("draw", **row.recipe.config, seed=0)
    runs.mkdir()
    drawzoo.train(model, train, None, row.train, checkpoint=runs / "tiny_draw.pt", epochs=1, progress=False)
    before = (runs / "tiny_draw.pt").read_bytes()
    # the run diverges (here: any loss above 1 nat): the job fails, the checkpoint stays as it was
    recipe.write_text(recipe.read_text().replace("lr = 3e-3", "lr = 3e-3\ndivergence_threshold = 1.0"))
    assert script.main([*args, "--rows", "tiny_draw"]) == 2
    out = capsys.readouterr().out
    assert "tiny_draw: train failed (exit 2): drawzoo: error:" in out and "diverg" in out.lower()
    assert "failed: tiny_draw (see their logs); rerun to retry" in out
    assert (runs / "tiny_draw.pt").read_bytes() == before

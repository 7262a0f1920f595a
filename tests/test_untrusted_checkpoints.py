"""Checkpoints from someone else: refused before they take memory or run code."""

import json
import re
import subprocess
import sys
import textwrap
import tomllib
import zipfile
from importlib.metadata import version
from pathlib import Path

import pytest
import torch
from packaging.requirements import Requirement

import drawzoo
from drawzoo.checkpoints import digest, save_checkpoint
from drawzoo.config import as_dict

TINY = dict(T=2, hidden_dim=16, latent_dim=4, read_size=2, write_size=3)


def forge(path, model, **changes):
    """A checkpoint of `model` with `changes` made to its payload (e.g. ``config=...``) and the
    sha256 recomputed, so that it passes the integrity check: what an attacker can write."""
    payload = torch.load(save_checkpoint(path, model), weights_only=True)
    payload.update(changes)
    payload["sha256"] = digest(payload)
    torch.save(payload, path)
    return path


def expanded(shape):
    """A tensor of `shape` that torch.save stores in 4 bytes: one zero, expanded."""
    return torch.zeros(()).expand(shape)


def peak_memory_of_loading(paths):
    """For each checkpoint in `paths`, loaded in turn by `drawzoo.load` in a fresh process: how
    far the process's peak resident memory (Linux's VmHWM: ``ru_maxrss`` would count the parent's)
    rose above where it was before the first (MB), and the outcome."""
    probe = textwrap.dedent("""
        import json, re, sys
        from pathlib import Path
        import drawzoo
        def peak_mb():
            return int(re.search(r"VmHWM:\\s*(\\d+) kB", Path("/proc/self/status").read_text())[1]) / 1024
        start = peak_mb()
        for path in sys.argv[1:]:
            try:
                drawzoo.load(checkpoint=path)
                outcome = "loaded"
            except drawzoo.CheckpointError as e:
                outcome = str(e)
            print(json.dumps([peak_mb() - start, outcome]))
    """)
    out = subprocess.run([sys.executable, "-c", probe, *map(str, paths)], capture_output=True, text=True,
                         timeout=120, check=True).stdout
    return [json.loads(line) for line in out.splitlines()]


@pytest.mark.skipif(not Path("/proc/self/status").exists(), reason="measures memory through Linux's /proc")
def test_crafted_checkpoints_are_refused_before_they_take_memory(tmp_path):
    tiny, vae = drawzoo.load("draw", **TINY), drawzoo.load("vae", hidden_dim=4, latent_dim=2)
    # a small file whose config promises a big model (~0.5 GB): main built it before finding the weights don't fit
    lying = forge(tmp_path / "lying.pt", tiny, config={**as_dict(tiny.config), "hidden_dim": 3000})
    # a small file whose weights fit a big config (~310 MB), each weight one number expanded
    with torch.device("meta"):
        shapes = {k: v.shape for k, v in drawzoo.load("vae", hidden_dim=50_000, latent_dim=2).state_dict().items()}
    inflating = forge(tmp_path / "inflating.pt", vae, config={**as_dict(vae.config), "hidden_dim": 50_000},
                      state_dict={k: expanded(shape) for k, shape in shapes.items()})
    assert max(lying.stat().st_size, inflating.stat().st_size) < 100_000
    (lying_mb, lying_outcome), (inflating_mb, inflating_outcome) = peak_memory_of_loading([lying, inflating])
    assert "lying.pt: weight 'reader.glimpse.weight' is (5, 16) torch.float32 in the checkpoint, (5, 3000)" \
        in lying_outcome
    assert "inflating.pt: its tensors would take 315,203,152 bytes, more than the file's" in inflating_outcome
    assert lying_mb < 100 and inflating_mb < 100


def test_a_compressed_archive_is_refused_before_it_is_inflated(tmp_path):
    stored = save_checkpoint(tmp_path / "stored.pt", drawzoo.load("vae", hidden_dim=4, latent_dim=2))
    packed = tmp_path / "packed.pt"  # the same records deflated: a zip bomb's shape
    with zipfile.ZipFile(stored) as archive, zipfile.ZipFile(packed, "w", zipfile.ZIP_DEFLATED) as out:
        for name in archive.namelist():
            out.writestr(name, archive.read(name))
    with pytest.raises(drawzoo.CheckpointError, match=r"packed.pt: .*/data.pkl is compressed, which torch.save "
                                                      r"never does: refused, not inflated"):
        drawzoo.load(checkpoint=packed)


def test_references_that_would_multiply_when_walked_are_refused(tmp_path):
    leaves = list(range(10))
    shared = [[[leaves] * 50] * 50] * 50  # 1.4 million items walked as a tree, a few KB pickled
    path = forge(tmp_path / "shared.pt", drawzoo.load("vae", hidden_dim=4, latent_dim=2), history=shared)
    with pytest.raises(drawzoo.CheckpointError, match=r"shared.pt: holds more items than a file of [\d,]+ bytes can"):
        drawzoo.load(checkpoint=path)


@pytest.mark.parametrize("change, message", [
    (lambda weights: dict(state_dict=[1, 2]), "not a drawzoo checkpoint"),
    (lambda weights: dict(config="big"), "not a drawzoo checkpoint"),
    (lambda weights: dict(state_dict={**weights, "encoder.1.weight": 3}), "not a drawzoo checkpoint"),
    (lambda weights: dict(state_dict={k: v for k, v in weights.items() if k != "encoder.1.weight"}),
     "checkpoint lacks weight 'encoder.1.weight' for its config"),
    (lambda weights: dict(state_dict={**weights, "extra": torch.zeros(3)}), "checkpoint has an extra weight 'extra'"),
    (lambda weights: dict(state_dict={**weights, "encoder.1.weight": weights["encoder.1.weight"].long()}),
     "weight 'encoder.1.weight' is (4, 784) torch.int64 in the checkpoint, (4, 784) torch.float32 in the model"),
], ids=["weights-not-a-dict", "config-not-a-dict", "weight-not-a-tensor", "weight-missing", "extra-weight",
        "integer-weight"])
def test_malformed_payloads_are_refused_naming_the_first_problem(tmp_path, change, message):
    model = drawzoo.load("vae", hidden_dim=4, latent_dim=2)
    path = forge(tmp_path / "bad.pt", model, **change(model.state_dict()))
    with pytest.raises(drawzoo.CheckpointError, match=re.escape(message)):
        drawzoo.load(checkpoint=path)


def test_the_torch_floor_excludes_releases_with_weights_only_bypasses():
    pyproject = tomllib.loads((Path(__file__).parents[1] / "pyproject.toml").read_text())
    (torch_floor,) = [r for r in map(Requirement, pyproject["project"]["dependencies"]) if r.name == "torch"]
    assert not torch_floor.specifier.contains("2.5.1")  # CVE-2025-32434, fixed in 2.6.0
    assert not torch_floor.specifier.contains("2.9.1")  # CVE-2026-24747, fixed in 2.10.0
    assert torch_floor.specifier.contains(version("torch"))

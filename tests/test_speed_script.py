"""`benchmarks/speed.py --quick` runs end to end and reports every figure it promises (on DRAW with
attention alone: each implementation and the fast path's compilation cost time)."""

import json
import subprocess
import sys
from pathlib import Path

SCRIPT = Path(__file__).resolve().parents[1] / "benchmarks" / "speed.py"


def test_quick_speed_run(tmp_path):
    out = tmp_path / "speed.json"
    proc = subprocess.run([sys.executable, str(SCRIPT), "--quick", "--only", "draw", "--out", str(out)], capture_output=True,
                          text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "fast path (SVI)" in proc.stdout and "(x" in proc.stdout and "fast path time ratio" in proc.stdout
    results = json.loads(out.read_text())
    assert results["peak_gflops"] > 0
    assert [r["label"] for r in results["training"]] == ["DRAW (attention)"]
    for r in results["training"]:
        assert r["flops_per_image"] > 0
        for impl in ("zoo", "train", "fast", "train-fast", "reference"):
            assert r[impl]["images_per_s"] > 0 and r[impl]["ratio"] > 0 and 0 < r[impl]["peak_share"] < 1
        assert r["zoo"]["peak_mb"] >= 0
        # the zoo's SVI loss (eager and fast) and the reference loss are the same figure for the same weights
        for impl in ("zoo", "fast"):
            assert abs(r[impl]["first_loss"] - r["reference"]["first_loss"]) < 0.05 * r["reference"]["first_loss"]
    for r in results["evaluation"]:
        assert r["K"] == 50 and r["ratio"] > 0 and r["fast_ratio"] > 0


def test_profile_prints_the_top_operations_eager_and_on_the_fast_path():
    proc = subprocess.run([sys.executable, str(SCRIPT), "--profile", "--quick", "--only", "draw"], capture_output=True,
                          text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    for label in ("zoo (SVI)", "fast path (SVI)"):
        assert f"DRAW (attention), {label}: one SVI step, self CPU" in proc.stdout
    assert "| aten::addmm |" in proc.stdout and "| inductor kernels (one compiled graph) |" in proc.stdout

"""`benchmarks/speed.py --quick` runs end to end and reports every figure it promises."""

import json
import subprocess
import sys
from pathlib import Path

SCRIPT = Path(__file__).resolve().parents[1] / "benchmarks" / "speed.py"


def test_quick_speed_run(tmp_path):
    out = tmp_path / "speed.json"
    proc = subprocess.run([sys.executable, str(SCRIPT), "--quick", "--out", str(out)], capture_output=True,
                          text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "SVI / reference" in proc.stdout and "train / reference" in proc.stdout and "time ratio" in proc.stdout
    results = json.loads(out.read_text())
    assert [r["label"] for r in results["training"]] == ["DRAW (attention)", "DRAW (no attention)", "VAE"]
    for r in results["training"]:
        assert r["zoo"]["images_per_s"] > 0 and r["reference"]["images_per_s"] > 0 and r["ratio"] > 0
        assert r["train"]["images_per_s"] > 0 and r["train_ratio"] > 0
        assert r["zoo"]["peak_mb"] >= 0
        # the zoo's SVI loss and the reference loss are the same figure for the same weights
        assert abs(r["zoo"]["first_loss"] - r["reference"]["first_loss"]) < 0.05 * r["reference"]["first_loss"]
    for r in results["evaluation"]:
        assert r["K"] == 50 and r["ratio"] > 0

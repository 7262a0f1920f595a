#!/usr/bin/env bash
# drawzoo's GPU check: one prepared script for about 10 minutes of one CUDA GPU.
#
#   DRAWZOO_DATA=/path/to/data bash benchmarks/gpu.sh [OUT_DIR]      # OUT_DIR [bench_out/gpu]
#
# 1. speed.py --device cuda on DRAW with and without attention (the paper's sizes): the reference,
#    eager SVI and drawzoo.train, and the fast path (torch.compile of the step functions), then
#    the fast path again with CUDA graphs (--compile-mode reduce-overhead);
# 2. the paper-config DRAW with attention (benchmarks/recipes/paper/draw_attention.toml) trained on
#    binarized MNIST for GPU_TRAIN_MINUTES (default 4) on the fast path, stopping at the limit with
#    a checkpoint (--max-minutes), then: epochs per minute, the projected time for the paper's 300
#    epochs, and the validation negative ELBO reached.
# Each part has its own time limit, so one that hangs or fails leaves the others their turn.
# benchmarks/README.md ("GPU") records what it printed, with the date and the GPU's name.
set -uo pipefail
cd "$(dirname "$0")/.."
out=${1:-bench_out/gpu}
minutes=${GPU_TRAIN_MINUTES:-4}
python=${PYTHON:-python3}
export PYTHONUNBUFFERED=1
mkdir -p "$out"

echo "== $(date -u '+%Y-%m-%d %H:%M UTC'): $(nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader 2>&1 | head -1)"
$python -c "import torch, pyro, drawzoo; print('torch', torch.__version__, '| pyro', pyro.__version__, '| drawzoo', drawzoo.__version__, '| cuda', torch.cuda.is_available() and torch.cuda.get_device_name())" || exit 1

echo "== speed.py --device cuda (eager and fast path)"
timeout 270 $python benchmarks/speed.py --device cuda --only draw,draw-no-attention --steps 20 \
    --out "$out/speed.json" || echo "speed.py: exit $?"

echo "== speed.py --device cuda --compile-mode reduce-overhead (CUDA graphs), DRAW with attention"
timeout 150 $python benchmarks/speed.py --device cuda --only draw --steps 20 --compile-mode reduce-overhead \
    --out "$out/speed_cudagraphs.json" || echo "speed.py (reduce-overhead): exit $?"

echo "== paper-config DRAW, $minutes min on the fast path"
rm -f "$out/paper.pt"
started=$(date +%s)
timeout $(( minutes * 60 + 90 )) $python -m drawzoo train --recipe benchmarks/recipes/paper/draw_attention.toml \
    --device cuda --compile --max-minutes "$minutes" --checkpoint "$out/paper.pt" --best "$out/paper.best.pt" \
    --quiet || echo "drawzoo train: exit $?"
echo "wall time $(( $(date +%s) - started )) s"
$python - "$out/paper.pt" <<'EOF'
import sys

from drawzoo.checkpoints import read_checkpoint

progress = read_checkpoint(sys.argv[1])["progress"]
history = [r for r in progress["history"] if r.get("seconds")]
seconds = sum(r["seconds"] for r in history)
epochs = len(history)
if not epochs:
    sys.exit(f"no whole epoch in {seconds:.0f} s (step {progress['step']})")
per_minute = epochs / (seconds / 60)
print(f"{epochs} epochs ({progress['step']} steps) in {seconds / 60:.1f} min of training (validation not counted): "
      f"{per_minute:.2f} epochs/min; 300 epochs would take {300 / per_minute / 60:.1f} h")
for r in history:
    print(f"  epoch {r['epoch']:g}: train {r['train_loss']:.2f}, valid {r['valid_loss']:.2f} nats/image "
          f"({r['seconds']:.1f} s)")
EOF

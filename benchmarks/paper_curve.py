"""The paper configuration's learning curves: validation -ELBO per epoch, a plot, and where the curve points.

    python benchmarks/paper_curve.py LABEL=RUN.pt [LABEL=RUN.pt ...] [--out docs/paper_curve.png] [--epochs 300]

Reads each run's history from its `drawzoo train` checkpoint (one record per completed epoch:
train and validation -ELBO in nats per image, seconds), prints it, fits
``L(e) = a + b * e ** -c`` to the validation curve (least squares in a and b, c on a grid from 0.25 to 2; from
epoch 3 on) to project epoch `--epochs`, and draws the curves with the published DRAW figures
(`PUBLISHED`) as dashed lines. A fit to a few epochs extrapolated to hundreds is a rough guide,
not a result: the script prints the projection of the last half of the curve beside the whole
one's, and their spread says how rough.
"""

from __future__ import annotations

import argparse
import sys

import numpy as np

from drawzoo.checkpoints import read_checkpoint
from drawzoo.cli import run_program
from drawzoo.files import check_outputs
from drawzoo.plots import curve_plot, save_picture

#: Test -ELBO of DRAW (with attention unless said), T=64, on binarized MNIST (../shared/reference/README.md)
PUBLISHED = {"DRAW paper, test": 80.97, "best reproduction, ~300 epochs, test": 81.9,
             "a reproduction, 100 epochs, test": 90.5, "DRAW paper, no attention, test": 87.40}


def history(path) -> list[dict]:
    """The completed epochs of a run's checkpoint (partial ones, stopped by a time limit, left out)."""
    return [r for r in read_checkpoint(path)["progress"]["history"]
            if float(r["epoch"]).is_integer() and r.get("valid_loss") is not None]


def fit(epochs: np.ndarray, losses: np.ndarray) -> tuple[float, float, float]:
    """``(a, b, c)`` of ``a + b * e ** -c`` closest to the points in least squares."""
    best = None
    for c in np.linspace(0.25, 2.0, 176):
        design = np.stack([np.ones_like(epochs), epochs ** -c], axis=1)
        (a, b), *_ = np.linalg.lstsq(design, losses, rcond=None)
        error = float(((design @ [a, b] - losses) ** 2).sum())
        if best is None or error < best[0]:
            best = (error, float(a), float(b), float(c))
    return best[1:]


def projection(records: list[dict], target: int, first: int = 3) -> str:
    e = np.array([r["epoch"] for r in records], dtype=float)
    v = np.array([r["valid_loss"] for r in records], dtype=float)
    keep = e >= first
    if keep.sum() < 4:
        return "too few epochs to fit"
    e, v = e[keep], v[keep]
    parts = []
    for name, sl in (("epochs %d-%d" % (e[0], e[-1]), slice(None)),
                     ("last half, epochs %d-%d" % (e[len(e) // 2], e[-1]), slice(len(e) // 2, None))):
        if len(e[sl]) >= 4:
            a, b, c = fit(e[sl], v[sl])
            parts.append(f"fit to {name}: {a + b * target ** -c:.1f} at epoch {target} (asymptote {a:.1f}, "
                         f"L = {a:.1f} + {b:.1f} e^-{c:.2f})")
    return "; ".join(parts)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("runs", nargs="+", metavar="LABEL=RUN.pt")
    p.add_argument("--out", default="docs/paper_curve.png")
    p.add_argument("--epochs", type=int, default=300, help="the epoch to project to [300]")
    p.add_argument("--title", default="DRAW, the paper's MNIST configuration (T=64), on 2 CPU cores")
    return run_program("paper_curve", plot_curves, p.parse_args(argv))


def plot_curves(args) -> int:
    check_outputs({"--out": args.out}, {spec: spec.rpartition("=")[2] for spec in args.runs})
    curves = {}
    for spec in args.runs:
        label, _, path = spec.rpartition("=")
        records = history(path)
        label = label or path
        curves[label] = [(r["epoch"], r["valid_loss"]) for r in records]
        seconds = [r["seconds"] for r in records]
        print(f"{label}: {len(records)} epochs, {np.median(seconds):.0f} s per epoch (median, training only: validation not counted)")
        print("  epoch  train -ELBO  valid -ELBO  seconds")
        for r in records:
            print(f"  {r['epoch']:5g}  {r['train_loss']:11.2f}  {r['valid_loss']:11.2f}  {r['seconds']:7.0f}")
        print(f"  projection: {projection(records, args.epochs)}")
    image = curve_plot(curves, references=PUBLISHED, title=args.title)
    save_picture(lambda f, format: image.save(f, format=format), args.out)
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""The paper configuration's learning curves: validation -ELBO per epoch, a plot, and where the curve points.

    python benchmarks/paper_curve.py LABEL=RUN [LABEL=RUN ...] [--out docs/paper_curve.png] [--epochs 300]

Reads each run's history from its `drawzoo train` checkpoint RUN.pt (one record per completed epoch:
train and validation -ELBO in nats per image, seconds), or, where RUN is a pretrained tag whose run
checkpoint is not kept, the validation -ELBO per epoch that its manifest entry records; prints it, fits
``L(e) = a + b * e ** -c`` to the validation curve (least squares in a and b, c on a grid from 0.25 to 2; from
epoch 3 on) to project epoch `--epochs`, and plots the curves with the published DRAW figures
(`PUBLISHED`) as dashed lines (`drawzoo.figures.plots.curve_plot`; ``--out``'s suffix picks PNG, SVG or PDF). A fit to a few epochs extrapolated to hundreds is a rough guide,
not a result: the script prints the projection of the last half of the curve beside the whole
one's, and their spread says how rough.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

from drawzoo import list_pretrained, pretrained
from drawzoo.figures import plots
from drawzoo.checkpoints import read_checkpoint
from drawzoo.cli import run_program
from drawzoo.files import check_outputs

#: Test -ELBO of DRAW (with attention unless said), T=64, on binarized MNIST (../shared/reference/README.md)
PUBLISHED = {"DRAW paper, test": 80.97, "best reproduction, ~300 epochs, test": 81.9,
             "a reproduction, 100 epochs, test": 90.5, "DRAW paper, no attention, test": 87.40}


def history(run: str) -> list[dict]:
    """The completed epochs of a run's checkpoint (partial ones, stopped by a time limit, left out);
    for a pretrained tag (not a file), its manifest's validation -ELBO of each epoch, without the
    train -ELBO and times (None)."""
    if not Path(run).exists() and run in list_pretrained():
        valid = pretrained.info(run).trained["valid_neg_elbo"]
        return [{"epoch": e, "train_loss": None, "valid_loss": v, "seconds": None} for e, v in enumerate(valid, 1)]
    return [r for r in read_checkpoint(run)["progress"]["history"]
            if float(r["epoch"]).is_integer() and r.get("valid_loss") is not None]


def _figure(value, spec: str) -> str:
    """`value` formatted by `spec`, or "-" where the run did not record it (None)."""
    return "-" if value is None else format(value, spec)


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
    p.add_argument("runs", nargs="+", metavar="LABEL=RUN", help="a run: its checkpoint, or a pretrained tag")
    p.add_argument("--out", default="docs/paper_curve.png", help="the plot: .png, .svg or .pdf [docs/paper_curve.png]")
    p.add_argument("--epochs", type=int, default=300, help="the epoch to project to [300]")
    p.add_argument("--title", default="DRAW, the paper's MNIST configuration (T=64), on 2 CPU cores")
    return run_program("paper_curve", plot_curves, p.parse_args(argv))


def plot_curves(args) -> int:
    """main() once its arguments are parsed."""
    runs = [spec.rpartition("=")[::2] for spec in args.runs]
    # before reading any run
    check_outputs({"--out": args.out}, {f"run {label or run}": run for label, run in runs if Path(run).exists()})
    plots.plot_format(args.out)
    plots.require_matplotlib("paper_curve.py's plot")
    curves = {}
    for label, run in runs:
        records = history(run)
        label = label or run
        curves[label] = [(r["epoch"], r["valid_loss"]) for r in records]
        seconds = [r["seconds"] for r in records if r["seconds"] is not None]
        timing = (f"{np.median(seconds):.0f} s per epoch (median, training only: validation not counted)" if seconds
                  else "validation -ELBO only (the pretrained tag's manifest)")
        print(f"{label}: {len(records)} epochs, {timing}")
        print("  epoch  train -ELBO  valid -ELBO  seconds")
        for r in records:
            print(f"  {r['epoch']:5g}  {_figure(r['train_loss'], '11.2f'):>11}  {r['valid_loss']:11.2f}  "
                  f"{_figure(r['seconds'], '7.0f'):>7}")
        print(f"  projection: {projection(records, args.epochs)}")
    plots.save_figure(plots.curve_plot(curves, references=PUBLISHED, title=args.title), args.out)
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

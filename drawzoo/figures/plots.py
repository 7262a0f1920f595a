"""Plots as matplotlib figures, to restyle, annotate and save as PNG, SVG or PDF: how much each step
tells (`kl_plot`: the KL of each step's latent site and its cumulative sum against the negative
ELBO, in nats per image, from `drawzoo.evaluate(..., per_step=True)`'s figures; ``drawzoo eval
--per-step`` and training's TensorBoard summaries draw it), and learning curves against published
figures (`curve_plot`: benchmarks/paper_curve.py).

matplotlib is the optional extra ``drawzoo[plots]``: this module imports without it, and a plot
asked for without it is a `DrawzooError` saying which extra to install (`require_matplotlib`).
The figures are `matplotlib.figure.Figure` objects drawn through Agg, never through pyplot: no
global figure list to leak into, no interactive backend; a figure is freed like any object.
`save_figure` writes one in the format its file's suffix names (`FORMATS`), atomically.
"""

from __future__ import annotations

import itertools
import math
from os import PathLike
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from ..errors import ConfigError, DrawzooError, InputError
from ..files import check_output, output_file

if TYPE_CHECKING:
    from matplotlib.figure import Figure

EXTRA = 'pip install "drawzoo[plots]"'  #: how to install matplotlib for drawzoo
FORMATS = {".png": "png", ".svg": "svg", ".pdf": "pdf"}  #: `save_figure`'s formats, by the file's suffix
DPI = 100  #: pixels per inch of the figures (a `kl_plot` is 900 x 390 pixels as PNG)

RED = "#ff0000"  #: the negative ELBO
BLUE = "#1f77b4"  #: the KL per step and its cumulative sum
GREY = "#969696"  #: the reconstruction gap, and `curve_plot`'s first reference
CURVE_COLOURS = (BLUE, RED, "#2ca02c", "#9467bd", "#ff7f0e")  #: `curve_plot`'s curves, in turn


def require_matplotlib(what: str = "drawzoo.figures.plots") -> None:
    """Check that matplotlib imports; commands call it before any work.

    Args:
        what: the thing that plots, named in the error.

    Raises:
        DrawzooError: in one line, matplotlib does not import: ``what`` needs it, and
            ``pip install "drawzoo[plots]"`` installs it.
    """
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        raise DrawzooError(f"{what} needs matplotlib, which is not installed: {EXTRA}") from None


def plot_format(path: str | PathLike) -> str:
    """The format `save_figure` writes ``path`` in, by its suffix.

    Args:
        path: a file name ending ``.png``, ``.svg`` or ``.pdf``, any case.

    Returns:
        ``"png"``, ``"svg"`` or ``"pdf"``.

    Raises:
        ConfigError: any other suffix (the accepted ones named).
    """
    suffix = Path(path).suffix
    if suffix.lower() not in FORMATS:
        raise ConfigError(f"cannot save a plot as {str(path)!r}: its suffix must be one of "
                          f"{', '.join(FORMATS)}, which name the format")
    return FORMATS[suffix.lower()]


def save_figure(figure: Figure, path: str | PathLike) -> None:
    """Write a figure through `drawzoo.files.output_file`: never over model weights or a file the
    run reads, and a reader never sees half a file. The same figure gives the same bytes (no
    dates, fixed SVG ids).

    Args:
        figure: the figure, e.g. from `kl_plot` or `curve_plot`.
        path: where to write it, as PNG, SVG or PDF, as its suffix says (`plot_format`).

    Raises:
        ConfigError: a suffix that names none of these formats.
    """
    import matplotlib

    check_output(path, "plot")  # before the suffix: a checkpoint named .pt is said to be one
    fmt = plot_format(path)
    metadata = {"png": {}, "svg": {"Date": None}, "pdf": {"CreationDate": None}}[fmt]
    with matplotlib.rc_context({"svg.hashsalt": "drawzoo"}), output_file(path, "plot") as f:
        figure.savefig(f, format=fmt, metadata=metadata)


def figure_to_array(figure: Figure) -> np.ndarray:
    """A figure rendered by Agg, as TensorBoard's ``add_image(..., dataformats="HWC")`` takes it.

    Args:
        figure: the figure.

    Returns:
        An RGB array ``[H, W, 3]`` of uint8.
    """
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    canvas = FigureCanvasAgg(figure)
    canvas.draw()
    return np.asarray(canvas.buffer_rgba())[..., :3].copy()


def _figure(what: str, width: float, height: float) -> Figure:
    """An empty figure `width` x `height` inches on an Agg canvas, with constrained layout."""
    require_matplotlib(what)
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    figure = Figure(figsize=(width, height), dpi=DPI, layout="constrained")
    FigureCanvasAgg(figure)
    return figure


def _integer_steps(axes) -> None:
    from matplotlib.ticker import MaxNLocator

    axes.xaxis.set_major_locator(MaxNLocator(nbins=8, integer=True, steps=[1, 2, 5, 10]))


def kl_plot(kl_per_step: list[float], reconstruction: float, *, title: str | None = None) -> Figure:
    """A figure (9 x 3.9 inches: 900 x 390 pixels as PNG) of how much each step tells, in nats per
    image: the KL of each step's latent site as bars (left axes), and their cumulative sum against
    the negative ELBO, ``reconstruction + sum(KL)``, dashed (right axes: the gap between them, in
    grey, is the reconstruction term ``-log p(x | z)``). Save it with `save_figure`.

    Args:
        kl_per_step: the KL of each step's latent site, nats per image
            (``drawzoo.evaluate(..., per_step=True)``'s ``"kl_per_step"``).
        reconstruction: the reconstruction term, nats per image (its ``"reconstruction"``).
        title: goes on top.

    Returns:
        The figure.

    Raises:
        InputError: no KL values, or values that are not finite.
        DrawzooError: matplotlib is not installed.
    """
    kl = [float(v) for v in kl_per_step]
    if not kl or not all(math.isfinite(v) for v in [*kl, reconstruction]):
        raise InputError(f"kl_plot needs finite KL values (got {len(kl)}: {kl}) and a finite reconstruction "
                         f"term (got {reconstruction})")
    figure = _figure("kl_plot", 9, 3.9)
    if title:
        figure.suptitle(title)
    bars, total = figure.subplots(1, 2)
    T, steps = len(kl), range(len(kl))
    cumulative = list(itertools.accumulate(kl))
    neg_elbo = cumulative[-1] + reconstruction

    bars.bar(steps, kl, width=0.8 if T <= 20 else 1.0, color=BLUE)  # many steps: bars that touch
    bars.set_title("KL(q(z_t | ...) || p(z_t)) per step")
    many = T > 20
    line, = total.plot(steps, cumulative, color=BLUE, linewidth=2, marker=None if many else "o",
                       label=f"KL, and its cumulative sum ({cumulative[-1]:.2f} nats)")
    elbo = total.axhline(neg_elbo, color=RED, linestyle="--", linewidth=2,
                         label=f"negative ELBO ({neg_elbo:.2f} nats)")
    x_gap = T - 1 + min(0.15, 0.02 * T)  # beside the last point: the reconstruction term
    gap, = total.plot([x_gap, x_gap], [cumulative[-1], neg_elbo], color=GREY, linewidth=3,
                      label=f"gap: reconstruction -log p(x | z) ({reconstruction:.2f} nats)")
    total.set_title("cumulative KL and the negative ELBO")
    for axes in (bars, total):
        axes.set_xlabel("step t (latent site z_t)")
        axes.set_ylabel("nats per image")
        axes.set_xlim(-0.6, T - 0.4)
        axes.grid(axis="y", color="#e8e8e8")
        axes.set_axisbelow(True)
        _integer_steps(axes)
    lowest, highest = min(0.0, neg_elbo, *cumulative), max(neg_elbo, *cumulative)
    total.set_ylim(lowest, highest + 0.08 * (highest - lowest))  # room above the dashed line
    figure.legend(handles=[line, elbo, gap], loc="outside lower center", ncols=3, frameon=False, fontsize="small")
    return figure


def curve_plot(curves: dict[str, list[tuple[float, float]]], *, references: dict[str, float] | None = None,
               title: str = "", ylabel: str = "validation -ELBO, nats per image") -> Figure:
    """A figure (9 x 4.8 inches: 900 x 480 pixels as PNG) of learning curves, epochs on the x axis
    from 0; the legend gives each curve's last value and each reference's. Save it with
    `save_figure`.

    Args:
        curves: label -> points ``(epoch, value)``, each drawn as a line (with dots, up to 60
            points).
        references: label -> value (e.g. published figures), each drawn as a dashed horizontal
            line.
        title: goes on top.
        ylabel: the y axis's label.

    Returns:
        The figure.

    Raises:
        InputError: no points, or points or references that are not finite.
        DrawzooError: matplotlib is not installed.
    """
    points = [p for curve in curves.values() for p in curve]
    values = [v for _, v in points] + list((references or {}).values())
    if not points or not all(math.isfinite(v) for p in points for v in p) or not all(map(math.isfinite, values)):
        raise InputError(f"curve_plot needs finite points, got {curves} and references {references}")
    figure = _figure("curve_plot", 9, 4.8)
    axes = figure.subplots()
    for k, (label, value) in enumerate((references or {}).items()):
        axes.axhline(value, color=GREY if k == 0 else CURVE_COLOURS[-1 - k % 3], linestyle="--", linewidth=1.5,
                     label=f"{label} ({value:g})")
    for colour, (label, curve) in zip(itertools.cycle(CURVE_COLOURS), curves.items()):
        epochs, losses = zip(*curve)
        axes.plot(epochs, losses, color=colour, linewidth=2, marker="o" if len(curve) <= 60 else None,
                  markersize=4, label=f"{label} (last {losses[-1]:.2f})")
    axes.set_title(title)
    axes.set_xlabel("epoch")
    axes.set_ylabel(ylabel)
    last = max(max(e for e, _ in points), 1)
    axes.set_xlim(0, last * 1.02)  # the last dots whole
    axes.grid(axis="y", color="#e8e8e8")
    axes.set_axisbelow(True)
    _integer_steps(axes)
    figure.legend(loc="outside lower center", ncols=2, frameon=False, fontsize="small")
    return figure

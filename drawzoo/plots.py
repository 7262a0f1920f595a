"""Plots drawn with Pillow (coordinates in pixels): how much each step tells, the KL of each step's
latent site and its cumulative sum against the negative ELBO, in nats per image (`kl_plot`,
`save_kl_plot`, from `drawzoo.evaluate(..., per_step=True)`'s figures: `drawzoo eval --per-step` and
training's ``kl_per_step`` summary draw it); and learning curves against published figures
(`curve_plot`: benchmarks/paper_curve.py).
"""

from __future__ import annotations

import io
import itertools
import math
from os import PathLike
from pathlib import Path

from PIL import Image, ImageDraw, ImageFont

from .errors import InputError
from .files import check_output, write_output

RED = (255, 0, 0)  #: the negative ELBO in the plots, and the write attention windows in `drawzoo.pictures`
BLUE, GREY, INK = (31, 119, 180), (150, 150, 150), (30, 30, 30)  #: the plots' other colours


def picture_format(path: str | PathLike) -> str:
    """The Pillow format that `path`'s suffix names (``.png``: PNG); `InputError` if none does."""
    suffix = Path(path).suffix.lower()
    found = Image.registered_extensions().get(suffix)
    if found is None:
        raise InputError(f"{path}: {suffix or 'no suffix'} is not a picture format; name the file .png (or .gif, "
                         ".jpg...)")
    return found


def save_picture(save, path: str | PathLike, what: str = "picture", format: str | None = None) -> bytes:
    """Write the picture that ``save(file, format)`` encodes (in `format`, else the one `path`'s
    suffix names) to `path`, as every picture drawzoo writes is written: through
    `drawzoo.files.write_output` (never over model weights or a file the run reads). Returns its bytes."""
    check_output(path, what)  # before the suffix: a checkpoint named .pt is said to be one
    buffer = io.BytesIO()
    save(buffer, format or picture_format(path))
    write_output(path, buffer.getvalue(), what)
    return buffer.getvalue()


def _nice_step(top: float, ticks: int = 5) -> float:
    """A tick spacing of 1, 2 or 5 times a power of ten giving about `ticks` ticks up to `top` > 0."""
    raw = top / ticks
    power = 10 ** math.floor(math.log10(raw))
    return next(m * power for m in (1, 2, 5, 10) if m * power >= raw)


class _Axes:
    """One panel of a plot: data x in `x_range` and y from `lowest` to `highest` (widened to whole
    ticks) mapped into the pixel `box` ``(left, top, right, bottom)``, drawn with its frame,
    ticks, tick labels and axis labels."""

    def __init__(self, image: Image.Image, box, x_range, lowest: float, highest: float, *, title: str, xlabel: str,
                 ylabel: str, x_ticks: list[int], font, small):
        self.draw = draw = ImageDraw.Draw(image)
        self.box, (self.x0, self.x1) = box, x_range
        step = _nice_step(max(highest - lowest, 1e-3), ticks=6)
        first, last = math.floor(lowest / step + 1e-9), math.ceil(highest / step - 1e-9)
        self.y_range = (first * step, max(last, first + 1) * step)
        left, top, right, bottom = box
        for k in range(first, max(last, first + 1) + 1):  # y ticks, labels and light grid lines
            y = self.y(k * step)
            draw.line([(left, y), (right, y)], fill=(232, 232, 232))
            draw.line([(left - 4, y), (left, y)], fill=INK)
            draw.text((left - 7, y), f"{k * step:g}", fill=INK, font=small, anchor="rm")
        for t in x_ticks:
            x = self.x(t)
            draw.line([(x, bottom), (x, bottom + 4)], fill=INK)
            draw.text((x, bottom + 7), str(t), fill=INK, font=small, anchor="ma")
        draw.rectangle(box, outline=INK)
        draw.text(((left + right) / 2, top - 8), title, fill=INK, font=font, anchor="md")
        draw.text(((left + right) / 2, bottom + 26), xlabel, fill=INK, font=small, anchor="ma")
        label = Image.new("L", (round(draw.textlength(ylabel, font=small)) + 2, 16), 0)
        ImageDraw.Draw(label).text((1, 8), ylabel, fill=255, font=small, anchor="lm")
        label = label.rotate(90, expand=True)
        image.paste(INK, (left - 58, round((top + bottom - label.height) / 2)), label)

    def x(self, value: float) -> float:
        left, _, right, _ = self.box
        return left + (value - self.x0) / (self.x1 - self.x0) * (right - left)

    def y(self, value: float) -> float:
        _, top, _, bottom = self.box
        lo, hi = self.y_range
        return bottom - (value - lo) / (hi - lo) * (bottom - top)


def kl_plot(kl_per_step: list[float], reconstruction: float, *, title: str | None = None) -> Image.Image:
    """A picture (RGB, 900 x 390 pixels) of how much each step tells, in nats per image, from
    `drawzoo.evaluate(..., per_step=True)`'s figures: the KL of each step's latent site as bars
    (left), and their cumulative sum against the negative ELBO, ``reconstruction + sum(KL)`` (right:
    the gap between them is the reconstruction term ``-log p(x | z)``). `title` goes on top."""
    kl = [float(v) for v in kl_per_step]
    if not kl or not all(math.isfinite(v) for v in [*kl, reconstruction]):
        raise InputError(f"kl_plot needs finite KL values (got {len(kl)}: {kl}) and a finite reconstruction "
                         f"term (got {reconstruction})")
    font, small = ImageFont.load_default(size=15), ImageFont.load_default(size=12)
    image = Image.new("RGB", (900, 390), "white")
    draw = ImageDraw.Draw(image)
    if title:
        draw.text((450, 8), title, fill=INK, font=font, anchor="ma")
    T = len(kl)
    every = _nice_step(T, ticks=8) if T > 10 else 1
    ticks = [t for t in range(T) if t % every == 0]
    cumulative = list(itertools.accumulate(kl))
    neg_elbo = cumulative[-1] + reconstruction
    common = dict(xlabel="step t (latent site z_t)", x_ticks=ticks, font=font, small=small)

    def span(values, room):  # from min(0, lowest) to a little above the highest value
        lo, hi = min(*values, 0.0), max(values)
        return lo, hi + room * (hi - lo)

    bars = _Axes(image, (80, 60, 420, 310), (-0.6, T - 0.4), *span(kl, 0.05),
                 title="KL(q(z_t | ...) || p(z_t)) per step", ylabel="nats per image", **common)
    half = (0.4 if T <= 20 else 0.5) * (bars.x(1) - bars.x(0))  # many steps: bars that touch
    for t, v in enumerate(kl):
        draw.rectangle([bars.x(t) - half, bars.y(max(v, 0)), bars.x(t) + half, bars.y(min(v, 0))], fill=BLUE)

    total = _Axes(image, (540, 60, 880, 310), (-0.6, T - 0.4), *span([*cumulative, neg_elbo], 0.08), title="cumulative KL and the negative ELBO",
                  ylabel="nats per image", **common)
    y_total = total.y(neg_elbo)
    for x in range(540, 880, 10):  # dashed line at the negative ELBO
        draw.line([(x, y_total), (min(x + 5, 880), y_total)], fill=RED, width=2)
    points = [(total.x(t), total.y(v)) for t, v in enumerate(cumulative)]
    if len(points) > 1:
        draw.line(points, fill=BLUE, width=3)
    for x, y in points if T <= 20 else ():
        draw.ellipse([x - 4, y - 4, x + 4, y + 4], fill=BLUE)
    x_last = min(points[-1][0] + 8, 876)  # the gap between them: the reconstruction term
    draw.line([(x_last, points[-1][1]), (x_last, y_total)], fill=GREY, width=3)
    legend = [(BLUE, f"KL, and its cumulative sum ({cumulative[-1]:.2f} nats)"),
              (RED, f"negative ELBO ({neg_elbo:.2f} nats)"),
              (GREY, f"gap: reconstruction -log p(x | z) ({neg_elbo - cumulative[-1]:.2f} nats)")]
    x = 80
    for colour, text in legend:
        draw.line([(x, 372), (x + 25, 372)], fill=colour, width=4)
        draw.text((x + 32, 372), text, fill=INK, font=small, anchor="lm")
        x += 32 + draw.textlength(text, font=small) + 40
    return image


def save_kl_plot(kl_per_step: list[float], reconstruction: float, path: str | PathLike, *,
                 title: str | None = None) -> None:
    """Save `kl_plot` as a PNG."""
    image = kl_plot(kl_per_step, reconstruction, title=title)
    save_picture(lambda f, format: image.save(f, format=format), path, "plot", format="PNG")


CURVE_COLOURS = (BLUE, RED, (44, 160, 44), (148, 103, 189), (255, 127, 14))


def curve_plot(curves: dict[str, list[tuple[float, float]]], *, references: dict[str, float] | None = None,
               title: str = "", ylabel: str = "validation -ELBO, nats per image") -> Image.Image:
    """A picture (RGB, 900 x 480 pixels) of learning curves: each of `curves` (label -> points
    ``(epoch, value)``) as a line with dots, each of `references` (label -> value) as a dashed
    horizontal line, epochs on the x axis; the y axis spans every point and reference."""
    points = [p for curve in curves.values() for p in curve]
    values = [v for _, v in points] + list((references or {}).values())
    if not points or not all(math.isfinite(v) for p in points for v in p) or not all(map(math.isfinite, values)):
        raise InputError(f"curve_plot needs finite points, got {curves} and references {references}")
    font, small = ImageFont.load_default(size=15), ImageFont.load_default(size=12)
    image = Image.new("RGB", (900, 480), "white")
    draw = ImageDraw.Draw(image)
    last = max(e for e, _ in points)
    every = _nice_step(max(last, 1), ticks=8)
    ticks = [round(k * every) for k in range(int(last // every) + 1)]
    lo, hi = min(values), max(values)
    axes = _Axes(image, (90, 40, 870, 380), (0, max(last, 1)), lo - 0.03 * (hi - lo), hi + 0.03 * (hi - lo),
                 title=title, xlabel="epoch", ylabel=ylabel, x_ticks=ticks, font=font, small=small)
    legend = []
    for k, (label, value) in enumerate((references or {}).items()):
        colour, y = GREY if k == 0 else CURVE_COLOURS[-1 - k % 3], axes.y(value)
        for x in range(90, 870, 12):
            draw.line([(x, y), (min(x + 6, 870), y)], fill=colour, width=2)
        legend.append((colour, f"{label} ({value:g})"))
    for colour, (label, curve) in zip(itertools.cycle(CURVE_COLOURS), curves.items()):
        xy = [(axes.x(e), axes.y(v)) for e, v in curve]
        if len(xy) > 1:
            draw.line(xy, fill=colour, width=3)
        for x, y in xy if len(xy) <= 60 else ():
            draw.ellipse([x - 3, y - 3, x + 3, y + 3], fill=colour)
        legend.append((colour, f"{label} (last {curve[-1][1]:.2f})"))
    for row, (colour, text) in enumerate(legend):
        y = 425 + 18 * (row // 2)
        x = 90 + 420 * (row % 2)
        draw.line([(x, y), (x + 25, y)], fill=colour, width=4)
        draw.text((x + 32, y), text, fill=INK, font=small, anchor="lm")
    return image

"""Pictures of what the zoo draws: image grids as PNG, inpainted images beside the originals,
DRAW's canvases through time as a GIF, all drawn with torchvision and Pillow. Plots (the KL per
step, learning curves) are matplotlib figures: `drawzoo.figures.plots`.

Grids are laid out by ``torchvision.utils.make_grid``; the GIF shows, on every canvas, DRAW's write
attention window as a red square (Gregor et al. 2015, fig. 6): its position and size are those of
the N x N grid of filter centres, its line width grows with the filters' standard deviation.
`animate_reconstruction` shows real images beside DRAW's canvases, with the read window in green
on the image and the write window in red on the canvas (the paper's video).

Coordinates are in pixels. Glimpses are 1-based (pixel column a is array index a - 1); the boxes
of `attention_boxes` are 0-based, with pixel a covering [a - 0.5, a + 0.5).
"""

from __future__ import annotations

import io
import math
from os import PathLike
from pathlib import Path

import torch
from PIL import Image
from torch import Tensor
from torchvision.utils import draw_bounding_boxes, make_grid, save_image

from ..attention import Glimpse
from ..data.masks import check_mask
from ..errors import InputError
from ..files import check_output, write_output

PADDING = 2  #: pixels around and between the images of a grid (torchvision's default)
MIN_HEIGHT = 84  #: the default GIF upscaling makes every image at least this many pixels tall
RED = (255, 0, 0)  #: colour of the write attention windows
GREEN = (0, 230, 0)  #: colour of the read attention windows
MISSING = (0.25, 0.45, 0.85)  #: colour of the unobserved pixels in `save_inpainting`'s rows of observed images


def picture_format(path: str | PathLike) -> str:
    """The Pillow format that ``path``'s suffix names (``.png``: PNG).

    Args:
        path: a file name.

    Returns:
        The format's name, as Pillow's ``save`` takes it.

    Raises:
        InputError: no format has that suffix.
    """
    suffix = Path(path).suffix.lower()
    found = Image.registered_extensions().get(suffix)
    if found is None:
        raise InputError(f"{path}: {suffix or 'no suffix'} is not a picture format; name the file .png (or .gif, "
                         ".jpg...)")
    return found


def save_picture(save, path: str | PathLike, what: str = "picture", format: str | None = None) -> bytes:
    """Write a picture to ``path`` as every picture drawzoo writes is written: through
    `drawzoo.files.write_output` (never over model weights or a file the run reads).

    Args:
        save: a function ``save(file, format)`` that encodes the picture into a binary file.
        path: where to write it.
        what: what the picture is, in error messages.
        format: the Pillow format; else the one ``path``'s suffix names (`picture_format`).

    Returns:
        The bytes written.
    """
    check_output(path, what)  # before the suffix: a checkpoint named .pt is said to be one
    buffer = io.BytesIO()
    save(buffer, format or picture_format(path))
    write_output(path, buffer.getvalue(), what)
    return buffer.getvalue()


def _check_images(x, name: str, layout: str) -> Tensor:
    """`x` as a float32 CPU tensor of the given layout (``[n, C, H, W]`` or ``[T+1, n, C, H, W]``).

    Raises `InputError` (a ValueError) unless it is a non-empty float tensor of that rank with
    1 (grey) or 3 (colour) channels and finite values in [0, 1].
    """
    rank = len(layout.split(","))
    if not isinstance(x, Tensor):
        raise InputError(f"{name} must be a torch.Tensor {layout}, got {type(x).__name__}")
    if x.dim() != rank:
        raise InputError(f"{name} must have {rank} dimensions {layout}, got shape {list(x.shape)}")
    if x.numel() == 0:
        raise InputError(f"{name} is empty (shape {list(x.shape)})")
    if x.shape[-3] not in (1, 3):
        raise InputError(f"{name} must have 1 (grey) or 3 (colour) channels {layout}, got {x.shape[-3]}")
    if not x.is_floating_point():
        raise InputError(f"{name} must hold floats in [0, 1], got dtype {x.dtype}")
    x = x.detach().to("cpu", torch.float32)
    if not bool(torch.isfinite(x).all()):
        raise InputError(f"{name} contains NaN or inf")
    lo, hi = torch.aminmax(x)
    if lo < 0 or hi > 1:
        raise InputError(f"{name} must have values in [0, 1], got {lo.item():.4g}..{hi.item():.4g}")
    return x


def _check_positive(**values) -> None:
    for name, value in values.items():
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise InputError(f"{name} must be a positive integer, got {value!r}")


def _default_nrow(n: int) -> int:
    """Images per row of a grid of `n`: about square."""
    return math.ceil(math.sqrt(n))


def save_grid(
    images: Tensor, path: str | PathLike, nrow: int | None = None, padding: int = PADDING
) -> None:
    """Save images as one PNG grid.

    Args:
        images: ``[n, C, H, W]`` in [0, 1] (C = 1 grey or 3 colour).
        path: where to write it.
        nrow: images per row (default about square).
        padding: black pixels around each image.

    Raises:
        InputError: images that are no float tensor ``[n, C, H, W]`` with 1 or 3 channels and finite
            values in [0, 1], or an ``nrow`` or ``padding`` out of range.
    """
    images = _check_images(images, "images", "[n, C, H, W]")
    nrow = _default_nrow(images.shape[0]) if nrow is None else nrow
    _check_positive(nrow=nrow)
    if isinstance(padding, bool) or not isinstance(padding, int) or padding < 0:
        raise InputError(f"padding must be a non-negative integer, got {padding!r}")
    _save_grid_image(images, path, nrow=nrow, padding=padding)


def _save_grid_image(images: Tensor, path, **grid) -> None:
    """torchvision's ``save_image`` of `images`, written through `save_picture`."""
    save_picture(lambda f, format: save_image(images, f, format=format, **grid), path)


def save_inpainting(original: Tensor, mask: Tensor, filled: Tensor, path: str | PathLike,
                    nrow: int | None = None) -> None:
    """Save inpainted images as one PNG: for each run of ``nrow`` images, three rows: the
    observed images (unobserved pixels in the colour `MISSING`), the filled-in images, the
    originals.

    Args:
        original: the images ``[n, C, H, W]`` in [0, 1].
        mask: bool, broadcastable to them, False where a pixel is unobserved (a pixel is shown
            unobserved where any of its channels is).
        filled: the filled-in images, ``[n, C, H, W]`` in [0, 1] (e.g. from
            `drawzoo.models.ZooModel.inpaint`).
        path: where to write it.
        nrow: images per run (default all of them, at most 16).

    Raises:
        InputError: images that are no float tensor ``[n, C, H, W]`` with 1 or 3 channels and finite
            values in [0, 1], ``original`` and ``filled`` that differ in shape, or a bad mask.
    """
    original = _check_images(original, "original", "[n, C, H, W]")
    filled = _check_images(filled, "filled", "[n, C, H, W]")
    if filled.shape != original.shape:
        raise InputError(f"filled {list(filled.shape)} and original {list(original.shape)} differ in shape")
    hidden = ~check_mask(mask, original.shape, device="cpu").all(1, keepdim=True)
    n = original.shape[0]
    nrow = min(n, 16) if nrow is None else nrow
    _check_positive(nrow=nrow)
    colour = torch.tensor(MISSING).view(1, 3, 1, 1)
    rows = [torch.where(hidden, colour, original.expand(-1, 3, -1, -1)), filled.expand(-1, 3, -1, -1),
            original.expand(-1, 3, -1, -1)]
    blank = torch.zeros(-n % nrow, *rows[0].shape[1:])  # the last run's empty places
    runs = [torch.cat([row, blank]).split(nrow) for row in rows]
    _save_grid_image(torch.cat([image for run in zip(*runs) for image in run]), path, nrow=nrow, padding=PADDING)


def attention_boxes(writes: Glimpse, N: int) -> Tensor:
    """Attention windows (read or write) as boxes.

    The window spans the centres of the N x N filters (`drawzoo.attention.gaussian.filterbank`):
    ``mu_1 = g - (N - 1) / 2 * delta`` to ``mu_N = g + (N - 1) / 2 * delta`` in 1-based pixels,
    minus 1 for 0-based; x from g_x, y from g_y. Boxes are not clipped to the image.

    Args:
        writes: the glimpses, fields ``[T, n]``.
        N: their grid size.

    Returns:
        ``[T, n, 4]`` = (x0, y0, x1, y1) in 0-based image pixels (float).
    """
    _check_positive(N=N)
    half = (N - 1) / 2 * writes.delta
    x, y = writes.g_x - 1, writes.g_y - 1
    return torch.stack([x - half, y - half, x + half, y + half], -1)


def _check_writes(writes: Glimpse, T: int, n: int, what: str = "writes") -> None:
    """InputError unless every field of the Glimpse `what` is a finite ``[T, n]`` tensor."""
    fields = dict(g_x=writes.g_x, g_y=writes.g_y, delta=writes.delta, sigma2=writes.sigma2)
    for name, value in fields.items():
        if not isinstance(value, Tensor) or tuple(value.shape) != (T, n):
            shape = list(value.shape) if isinstance(value, Tensor) else type(value).__name__
            raise InputError(f"{what}.{name} must be [T, n] = [{T}, {n}] like the canvases, got {shape}")
        if not bool(torch.isfinite(value).all()):
            raise InputError(f"{what}.{name} contains NaN or inf")
    if bool((writes.delta < 0).any()) or bool((writes.sigma2 < 0).any()):
        raise InputError(f"{what}.delta and {what}.sigma2 must be non-negative")


def _windows(glimpses: Glimpse, N: int) -> list[list[tuple[list[float], float]]]:
    """Per step, per image: the attention window ``(box, sigma)`` (`attention_boxes`) of a Glimpse
    with fields ``[T, n]`` and grid size `N`."""
    boxes, sigmas = attention_boxes(glimpses, N).tolist(), glimpses.sigma2.sqrt().tolist()
    return [list(zip(*step)) for step in zip(boxes, sigmas)]


def _cell_origins(n: int, nrow: int, H: int, W: int) -> list[tuple[int, int]]:
    """Top-left pixel (x, y) of each image in ``make_grid(..., nrow, padding=PADDING)``."""
    if n == 1:  # make_grid returns a single image as it is, without padding
        return [(0, 0)]
    cols = min(nrow, n)
    return [(PADDING + col * (W + PADDING), PADDING + row * (H + PADDING))
            for row, col in (divmod(k, cols) for k in range(n))]


def _grid_frame(images: Tensor, nrow: int, scale: int, reserved: int = 1) -> Image.Image:
    """``make_grid`` of images ``[n, C, H, W]`` as a palette image (256 - `reserved` adaptive
    colours, grey stays grey), upscaled `scale` times by pixel repetition."""
    grid = make_grid(images, nrow=nrow, padding=PADDING)  # [3, H', W'], as save_image rounds it
    pixels = grid.mul(255).add_(0.5).clamp_(0, 255).permute(1, 2, 0).to(torch.uint8).numpy()
    frame = Image.fromarray(pixels, "RGB")
    frame = frame.resize((frame.width * scale, frame.height * scale), Image.Resampling.NEAREST)
    return frame.quantize(colors=256 - reserved)  # leaves palette entries for the windows' colours


def _to_frame(x: float, scale: int) -> int:
    """The upscaled pixel holding 0-based image coordinate `x`."""
    return math.floor((x + 0.5) * scale)


def _outline(box: list[float], width: int, scale: int, H: int, W: int) -> Image.Image:
    """Mask of one image's upscaled cell ``[H * scale, W * scale]`` with the outline of `box`,
    drawn by `torchvision.utils.draw_bounding_boxes`.

    The line is `width` pixels wide and centred on the box edges; it is clipped to the cell.
    Coordinates far outside are pulled in to just outside the cell, which draws the same.
    """
    x0, y0, x1, y1 = (_to_frame(v, scale) for v in box)
    inner, outer = (width - 1) // 2, width // 2
    xy = [x0 - inner, y0 - inner, x1 + outer, y1 + outer]
    limits = [W * scale, H * scale] * 2
    xy = [min(max(v, -width - 1), limit + width) for v, limit in zip(xy, limits)]
    cell = torch.zeros(1, H * scale, W * scale, dtype=torch.uint8)
    drawn = draw_bounding_boxes(cell, torch.tensor([xy]), colors="white", width=width)
    return Image.fromarray(drawn[0].numpy() > 0)


def _line_width(sigma: float, scale: int, H: int, W: int) -> int:
    """Outline width in upscaled pixels: sigma * scale / 2, at least 1, at most 1/8 of an image."""
    cap = max(1, min(H, W) * scale // 8)
    return min(max(1, math.floor(sigma * scale / 2 + 0.5)), cap)


def _draw_windows(frame: Image.Image, windows: list, origins: list, scale: int, H: int, W: int,
                  colour: tuple[int, int, int] = RED) -> None:
    """Draw each image's attention window, ``(box, sigma)`` in image pixels, in `colour` (pure red)."""
    index = frame.palette.getcolor(colour, frame)
    for (x, y), (box, sigma) in zip(origins, windows):
        mask = _outline(box, _line_width(sigma, scale, H, W), scale, H, W)
        frame.paste(index, (x * scale, y * scale), mask)


def _save_gif(frames: list[Image.Image], path, duration_ms: int, final_pause_ms: int, loop: int | None) -> int:
    """Write `frames` as a GIF, each shown for `duration_ms`, the last for `final_pause_ms`; the
    number of frames in the file."""
    durations = [duration_ms] * (len(frames) - 1) + [final_pause_ms]
    data = save_picture(lambda f, format: frames[0].save(f, format=format, save_all=True, append_images=frames[1:],
                                                         duration=durations, loop=loop), path, "animation")
    with Image.open(io.BytesIO(data)) as gif:
        return getattr(gif, "n_frames", 1)


def _frame_layout(n: int, H: int, nrow: int | None, scale: int | None, duration_ms: int,
                  final_pause_ms: int) -> tuple[int, int]:
    """An animation's checked ``(nrow, scale)`` for `n` images of height `H`: about square, and
    upscaled to at least `MIN_HEIGHT` pixels, unless given; its timing checked too."""
    nrow = _default_nrow(n) if nrow is None else nrow
    scale = math.ceil(MIN_HEIGHT / H) if scale is None else scale
    _check_positive(nrow=nrow, scale=scale)
    if min(duration_ms, final_pause_ms) < 0:
        raise InputError(f"durations must be >= 0 ms, got {duration_ms} and {final_pause_ms}")
    return nrow, scale


def animate(
    canvases: Tensor,
    path: str | PathLike,
    *,
    writes: Glimpse | None = None,
    N: int | None = None,
    nrow: int | None = None,
    scale: int | None = None,
    duration_ms: int = 100,
    final_pause_ms: int = 1000,
    loop: int | None = 0,
) -> int:
    """Save canvases as a GIF: one frame per time step, each the grid of the n canvases.

    Frame 0 is the initial canvas, frame t the canvas after step t. With ``writes`` and ``N``,
    frame t >= 1 shows step t-1's write window on each image as a pure red square
    (`attention_boxes`), clipped to that image, its line about sigma * scale / 2 pixels wide.

    Args:
        canvases: ``[T+1, n, C, H, W]`` in [0, 1].
        path: where to write the GIF.
        writes: the write Glimpse, fields ``[T, n]``, as
            ``DRAW.generate(n, return_attention=True)`` returns it.
        N: the write grid size; given with ``writes``, or neither.
        nrow: images per row (default about square).
        scale: integer upscaling (default: images at least `MIN_HEIGHT` pixels tall).
        duration_ms: how long each frame shows.
        final_pause_ms: how long the last frame shows.
        loop: as Pillow's (0 = forever, None = play once).

    Returns:
        The number of frames in the file. Pillow merges a frame identical to the previous one
        into it, so the count is T+1 unless some steps changed nothing visible.

    Raises:
        InputError: images that are no float tensor ``[T+1, n, C, H, W]`` with 1 or 3 channels and finite
            values in [0, 1], ``writes`` without ``N`` or the reverse, or glimpses of another shape.
    """
    canvases = _check_images(canvases, "canvases", "[T+1, n, C, H, W]")
    steps, n, _, H, W = canvases.shape
    nrow, scale = _frame_layout(n, H, nrow, scale, duration_ms, final_pause_ms)
    if (writes is None) != (N is None):
        raise InputError("give both writes and N (the write grid size) to draw attention, or neither")
    windows = None  # per step, per image: (box, sigma)
    if writes is not None:
        _check_writes(writes, steps - 1, n)
        windows = _windows(writes, N)
    origins = _cell_origins(n, nrow, H, W)

    frames = []
    for t in range(steps):
        frame = _grid_frame(canvases[t], nrow, scale)
        if windows is not None and t > 0:
            _draw_windows(frame, windows[t - 1], origins, scale, H, W)
        frames.append(frame)
    return _save_gif(frames, path, duration_ms, final_pause_ms, loop)


def animate_reconstruction(
    inputs: Tensor,
    canvases: Tensor,
    path: str | PathLike,
    *,
    reads: Glimpse | None = None,
    read_size: int | None = None,
    writes: Glimpse | None = None,
    write_size: int | None = None,
    nrow: int | None = None,
    scale: int | None = None,
    duration_ms: int = 100,
    final_pause_ms: int = 1000,
    loop: int | None = 0,
) -> int:
    """Save DRAW reading and redrawing real images as a GIF (the paper's video): every input
    beside its canvases, one frame per time step.

    Frame 0 shows the inputs beside the blank canvases, frame t the canvases after step t-1 wrote,
    with step t-1's read window in green on the input and its write window in red on the canvas,
    drawn as `animate` draws them. Without glimpses (a model without attention) the frames have no
    windows.

    Args:
        inputs: the images ``[n, C, H, W]`` in [0, 1].
        canvases: ``[T+1, n, C, H, W]`` in [0, 1], as `DRAW.reconstruct` returns them.
        path: where to write the GIF.
        reads: the read Glimpse, fields ``[T, n]``.
        read_size: its grid size; given with ``reads``, or neither.
        writes: the write Glimpse, fields ``[T, n]``.
        write_size: its grid size; given with ``writes``, or neither.
        nrow: input/canvas pairs per row (default about square).
        scale: as `animate`'s.
        duration_ms: as `animate`'s.
        final_pause_ms: as `animate`'s.
        loop: as `animate`'s.

    Returns:
        The number of frames in the file.

    Raises:
        InputError: images that are no float tensor ``[n, C, H, W]`` with 1 or 3 channels and finite
            values in [0, 1], inputs unlike each canvas, or glimpses without their grid size.
    """
    inputs = _check_images(inputs, "inputs", "[n, C, H, W]")
    canvases = _check_images(canvases, "canvases", "[T+1, n, C, H, W]")
    steps, n, C, H, W = canvases.shape
    if inputs.shape != canvases.shape[1:]:
        raise InputError(f"inputs {list(inputs.shape)} must be [n, C, H, W] like each canvas, {list(canvases.shape[1:])}")
    nrow, scale = _frame_layout(n, H, nrow, scale, duration_ms, final_pause_ms)
    windows = []  # (glimpses per step per image, cells offset, colour)
    for glimpses, N, what, offset, colour in ((reads, read_size, "reads", 0, GREEN), (writes, write_size, "writes", 1, RED)):
        if (glimpses is None) != (N is None):
            raise InputError(f"give both {what} and its grid size to draw its windows, or neither")
        if glimpses is not None:
            _check_writes(glimpses, steps - 1, n, what)
            windows.append((_windows(glimpses, N), offset, colour))
    nrow, cells = 2 * min(nrow, n), _cell_origins(2 * n, 2 * min(nrow, n), H, W)
    frames = []
    for t in range(steps):
        pairs = torch.stack([inputs, canvases[t]], 1).flatten(0, 1)  # input 0, canvas 0, input 1, ...
        frame = _grid_frame(pairs, nrow, scale, reserved=2)
        for per_step, offset, colour in windows if t > 0 else ():
            _draw_windows(frame, per_step[t - 1], cells[offset::2], scale, H, W, colour)
        frames.append(frame)
    return _save_gif(frames, path, duration_ms, final_pause_ms, loop)

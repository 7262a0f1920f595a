"""The commands that draw pictures with a trained model (`drawzoo.figures.pictures` writes them): ``sample``
(a PNG grid), ``animate`` (a GIF of the canvases through time, or with --reconstruct of DRAW reading
and redrawing real images) and ``inpaint`` (a PNG of masked images filled in)."""

from __future__ import annotations

import torch

from ..data import masks
from ..errors import ConfigError, DrawzooError
from ..memory import FLOAT_BYTES, ROWS_PER_PASS, check_fits
from .options import MASK_HELP, data_options, data_path
from .trained import checked, checkpoint_command, from_checkpoint, some_images


def cmd_sample(args) -> int:
    from ..figures.pictures import save_grid

    model = from_checkpoint(args, checked(args, "n", "nrow", outputs={"--out": args.out}))
    images = generate(model, args.n, last=True)
    save_grid(images, args.out, nrow=args.nrow)
    print(f"wrote {args.n} samples of {args.checkpoint} to {args.out}")
    return 0


def cmd_animate(args) -> int:
    from ..figures.pictures import animate

    if not args.reconstruct and (args.data, args.split, args.data_root) != (None, None, None):
        raise ConfigError("animate: --data, --split and --data-root choose the images of --reconstruct: give it "
                          "too, or leave them out (samples need no data)")
    model = from_checkpoint(args, checked(args, "n", "nrow", "scale", outputs={"--out": args.out},
                                          inputs={"--data": data_path(args.data)}))
    if args.reconstruct:
        return _animate_reconstruction(args, model)
    attention = {}
    if getattr(model.config, "attention", False):
        canvases, writes = generate(model, args.n, return_attention=True)
        attention = dict(writes=writes, N=model.config.write_size)
    else:
        canvases = generate(model, args.n)
    if len(canvases) < 2:
        raise DrawzooError(f"animate: {args.checkpoint} holds a {model.zoo_name!r} model, which draws in one step: "
                           "no canvases through time to animate (drawzoo sample saves its samples)")
    frames = animate(canvases.cpu(), args.out, nrow=args.nrow, scale=args.scale, duration_ms=args.duration_ms,
                     **attention)
    print(f"wrote {frames} frames of {args.n} canvases to {args.out}")
    return 0


def generate(model, n: int, *, last: bool = False, return_attention: bool = False):
    """``model.generate(n, ...)`` on the CPU (the last canvases only if `last`), made in passes of at
    most `ROWS_PER_PASS` samples; first, --n whose canvases and picture cannot fit in memory is
    refused, the canvases per sample counted on one sample drawn in a fork of the RNG."""
    kwargs = dict(return_attention=True) if return_attention else {}
    steps = 1
    if not last:
        with torch.random.fork_rng(devices=[model.device] if model.device.type == "cuda" else []):
            one = model.generate(1, **kwargs)
        steps = len(one[0] if return_attention else one)
    C, H, W = model.image_shape
    per_sample = FLOAT_BYTES * steps * (C * H * W + 3 * (H + 2) * (W + 2))  # the canvases, and their grid in RGB
    check_fits(n * per_sample, "cpu", f"--n {n}: {n:,} samples{' through time' if steps > 1 else ''} and their picture")
    parts = []
    for size in [ROWS_PER_PASS] * (n // ROWS_PER_PASS) + [n % ROWS_PER_PASS] * bool(n % ROWS_PER_PASS):
        out = model.generate(size, **kwargs)
        canvases, writes = out if return_attention else (out, None)
        canvases = canvases[-1].cpu() if last else canvases.cpu()
        parts.append((canvases, None if writes is None else type(writes)(*(f.cpu() for f in writes))))
    canvases = torch.cat([c for c, _ in parts], dim=0 if last else 1)
    if not return_attention:
        return canvases
    writes = type(parts[0][1])(*(torch.cat(fields, dim=1) for fields in zip(*(w for _, w in parts))))
    return canvases, writes


def _animate_reconstruction(args, model) -> int:
    """`drawzoo animate --reconstruct`: DRAW reading and redrawing --n images of --data/--split."""
    from ..figures.pictures import animate_reconstruction

    if not callable(getattr(model, "reconstruct", None)):
        raise DrawzooError(f"animate --reconstruct: {args.checkpoint} holds a {model.zoo_name!r} model, which draws "
                           "in one step: no reconstruction through time to animate (drawzoo sample saves its samples)")
    name, split, x = some_images(args, model)
    canvases, reads, writes = model.reconstruct(x.to(model.device))
    attention = {}
    if reads is not None:
        attention = dict(reads=type(reads)(*(f.cpu() for f in reads)), read_size=model.config.read_size,
                         writes=type(writes)(*(f.cpu() for f in writes)), write_size=model.config.write_size)
    frames = animate_reconstruction(x, canvases.cpu(), args.out, nrow=args.nrow, scale=args.scale,
                                    duration_ms=args.duration_ms, **attention)
    print(f"wrote {frames} frames of {len(x)} {name}/{split} images and their reconstructions to {args.out}")
    return 0


def cmd_inpaint(args) -> int:
    from ..figures.pictures import save_inpainting

    device = checked(args, "n", "nrow", "num_samples", outputs={"--out": args.out},
                     inputs={"--data": data_path(args.data)})
    masks.check_name(args.mask)
    model = from_checkpoint(args, device)
    name, split, x = some_images(args, model)
    mask = masks.named_mask(args.mask, model.image_shape, len(x), seed=args.seed)
    filled = model.inpaint(x.to(device), mask, num_samples=args.num_samples, sample=args.sample)
    save_inpainting(x, mask, filled.cpu(), args.out, nrow=args.nrow)
    print(f"wrote {len(x)} images of {name}/{split} with mask {args.mask} filled in by {args.checkpoint} "
          f"(importance resampling, K={args.num_samples}) to {args.out}: rows observed, filled in, original")
    return 0


# -- their options ------------------------------------------------------------------------------


def add_sample_command(sub) -> None:
    p = checkpoint_command(sub, "sample", "save a grid of samples from a trained model as a PNG", cmd_sample)
    p.add_argument("--n", type=int, default=64, help="number of samples [64]")
    p.add_argument("--nrow", type=int, help="images per row [about square]")
    p.add_argument("--out", default="samples.png", help="PNG file to write [samples.png]")


def add_animate_command(sub) -> None:
    p = checkpoint_command(sub, "animate", "save a GIF of the canvases through time (T+1 frames), with the write "
                           "attention window drawn in red; with --reconstruct, of DRAW reading and redrawing real "
                           "images, the read window in green on each image", cmd_animate)
    p.add_argument("--n", type=int, default=16, help="number of samples, or of images with --reconstruct [16]")
    p.add_argument("--nrow", type=int, help="images (with --reconstruct: image/canvas pairs) per row [about square]")
    p.add_argument("--scale", type=int, help="integer upscaling [images at least 84 pixels tall]")
    p.add_argument("--duration-ms", type=int, default=100, help="milliseconds per frame [100]")
    p.add_argument("--out", default="draw.gif", help="GIF file to write [draw.gif]")
    p.add_argument("--reconstruct", action="store_true", help="reconstruct a seeded random subset of --n real images "
                   "of --data/--split instead of sampling: each beside its canvas, read window in green, write window "
                   "in red (no windows without attention)")
    data_options(p)


def add_inpaint_command(sub) -> None:
    p = checkpoint_command(sub, "inpaint", "fill in the missing pixels of test images from a trained model "
                           "(importance resampling) and save a PNG: rows observed, filled in, original", cmd_inpaint)
    data_options(p)
    p.add_argument("--num-samples", "-k", type=int, default=100, help="importance samples K per image [100]")
    p.add_argument("--mask", default="bottom", help=f"{MASK_HELP} [bottom]")
    p.add_argument("--n", type=int, default=16, help="number of images, a seeded random subset [16]")
    p.add_argument("--nrow", type=int, help="images per row [all, at most 16]")
    p.add_argument("--sample", action="store_true", help="binary draws of the missing pixels [their probabilities]")
    p.add_argument("--out", default="inpaint.png", help="PNG file to write [inpaint.png]")

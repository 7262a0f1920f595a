"""``drawzoo eval``: score a trained model (`drawzoo.evaluate`): negative ELBO and importance-sampled
NLL in nats per image and bits per dimension, with --mask the conditional NLL of the missing
pixels, with --per-step the KL of each step's latent site and its plot, with --active-units which
latent units the model uses."""

from __future__ import annotations

import itertools
import json

from .. import distributed
from ..data import masks
from ..data.batching import random_subset
from ..evaluation.scoring import ACTIVE_UNIT_THRESHOLD, evaluate
from ..figures import plots
from ..files import write_output
from .console import say
from .options import MASK_HELP, data_options, data_path
from .trained import checked, checkpoint_command, eval_data, from_checkpoint


def cmd_eval(args) -> int:
    per_step = args.per_step or args.plot is not None
    plot = (args.plot or "kl_per_step.png") if per_step else None
    device = checked(args, "num_samples", "batch_size", "limit", outputs={"--json": args.json, "--plot": plot},
                     inputs={"--data": data_path(args.data)})
    if per_step:
        plots.plot_format(plot)
        plots.require_matplotlib("the plot of --per-step (--plot)")
    if args.mask is not None:
        masks.check_name(args.mask)
    distributed.join(device)  # under torchrun, each process scores a share of the images
    model = from_checkpoint(args, device, seed=False)
    name, split, data = eval_data(args, model)
    data = random_subset(data, args.limit, seed=args.seed)
    result = evaluate(model, data, num_samples=args.num_samples, batch_size=args.batch_size, seed=args.seed,
                      progress=not args.quiet, compile=args.compile or None, per_step=per_step, mask=args.mask,
                      active_units=args.active_units)
    result.update(checkpoint=str(args.checkpoint), data=name, split=split)
    where = f"{args.checkpoint} on {name}/{split} ({result['num_images']} images)"
    conditional = ""
    if args.mask is not None:
        result["mask"] = args.mask
        conditional = (f"; conditional NLL of the missing pixels (mask {args.mask}, {result['missing_fraction']:.0%} "
                       f"of the pixels) {result['cond_nll']:.2f} nats = NLL {result['nll']:.2f} - NLL of the observed "
                       f"pixels {result['nll_observed']:.2f}")
    say(f"{where}: negative ELBO {result['neg_elbo']:.2f} nats ({result['neg_elbo_bits_per_dim']:.4f} bits/dim), "
        f"NLL {result['nll']:.2f} nats ({result['nll_bits_per_dim']:.4f} bits/dim, importance sampled, "
        f"K={args.num_samples}){conditional}; {result['images_per_s']:.1f} images/s")
    if per_step:
        _report_per_step(result, plot, title=f"{where}, K={args.num_samples}")
    if args.active_units:
        _report_active_units(result, args.num_samples)
    if args.json and distributed.is_main_process():
        write_output(args.json, json.dumps(result, indent=2) + "\n", "JSON")
    return 0


def _report_per_step(result: dict, plot: str, title: str) -> None:
    """Print `evaluate(..., per_step=True)`'s KL per step, one line each, and save its plot."""
    kl, estimates, sites = result["kl_per_step"], result["kl_estimate"], result["latent_sites"]
    one_way = len(set(estimates)) == 1
    say(f"KL(q(z_t | ...) || p(z_t)) per step, nats per image ({estimates[0] if one_way else 'per step'}):")
    width, site_width = len(str(len(kl) - 1)), max(map(len, sites))
    for t, (site, value, total) in enumerate(zip(sites, kl, itertools.accumulate(kl))):
        note = "" if one_way else f" ({estimates[t]})"
        say(f"  step {t:{width}d} {site:{site_width}s} {value:8.3f}   cumulative {total:8.3f}{note}")
    say(f"  reconstruction -log p(x | z) {result['reconstruction']:.2f}; negative ELBO (analytic KL) "
        f"{result['reconstruction'] + sum(kl):.2f}")
    if distributed.is_main_process():
        plots.save_figure(plots.kl_plot(kl, result["reconstruction"], title=title), plot)
    say(f"wrote the plot of the KL per step to {plot}")


def _report_active_units(result: dict, num_samples: int) -> None:
    """Print `evaluate(..., active_units=True)`'s active units, one line a latent site and their total."""
    sites, active, units = result["latent_sites"], result["active_units"], result["latent_units"]
    say(f"active units (Burda et al. 2016: the variance over the images of E_q[u | x] above {ACTIVE_UNIT_THRESHOLD}; "
        f"E_q from K={num_samples}):")
    width = max(map(len, sites + ["all"]))
    for site, a, u in zip(sites, active, units):
        say(f"  {site:{width}s} {a:5d} of {u}")
    if len(sites) > 1:
        say(f"  {'all':{width}s} {sum(active):5d} of {sum(units)}")


def add_eval_command(sub) -> None:
    p = checkpoint_command(sub, "eval", "score a trained model: negative ELBO and importance-sampled NLL, in nats "
                           "per image and bits per dimension", cmd_eval)
    data_options(p)
    p.add_argument("--num-samples", "-k", type=int, default=100, help="importance samples K per image [100]")
    p.add_argument("--mask", help=f"also the conditional NLL of the missing pixels given the others, "
                   f"-log p(x_miss | x_obs) = NLL - NLL of the observed pixels; {MASK_HELP} [none]")
    p.add_argument("--batch-size", type=int, help="images per vectorised pass [4096 // K]")
    p.add_argument("--limit", type=int, help="score a seeded random subset of this many images")
    p.add_argument("--json", help="also write the figures to this JSON file")
    p.add_argument("--per-step", action="store_true", help="also report how much each step tells: the mean "
                   "KL(q(z_t | ...) || p(z_t)) in nats of every latent site z_t (DRAW: one per glimpse; the VAE: "
                   "its one z), analytic where the pair is known, else Monte Carlo, and plot it (--plot)")
    p.add_argument("--plot", metavar="PATH", help="plot of --per-step's KL per step and its cumulative sum against "
                   "the negative ELBO, as PNG, SVG or PDF by PATH's suffix (implies --per-step; needs matplotlib: "
                   f"{plots.EXTRA}) [kl_per_step.png]")
    p.add_argument("--active-units", action="store_true", help="also report which latent units the model uses: "
                   "per latent site, how many units have a posterior mean E_q[u | x] that varies over the images "
                   f"(variance above {ACTIVE_UNIT_THRESHOLD}, Burda et al. 2016's active units; E_q from the K samples)")
    p.add_argument("--compile", action="store_true", help="the fast path: compile the model's step functions "
                   "with torch.compile (the same figures up to float rounding)")
    p.add_argument("--quiet", action="store_true", help="no progress bar")

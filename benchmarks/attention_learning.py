"""How fast attention DRAW learns on binarized MNIST, by attention set-up: the evidence behind the
quick preset of `nll_mnist.py` (benchmarks/README.md, "Making attention DRAW learn").

    python benchmarks/attention_learning.py            # 4 variants x 3 epochs, about 12 min on 2 CPU cores

Each variant is DRAW with T=6, LSTM 256, z 50, batch 100, trained for --epochs epochs of the 50k
training split; the table gives the validation negative ELBO (nats, 2,000 random valid images)
after each epoch.
"""

from __future__ import annotations

import argparse
import sys
import time

import torch

import drawzoo
from drawzoo.data.batching import random_subset
from drawzoo.cli import console_logging, run_program
from drawzoo.data import binarized_mnist

BASE = dict(T=6, hidden_dim=256, latent_dim=50)
VARIANTS = [  # (label, config, lr, naive attention initialisation)
    ("2x2 read, 5x5 write, nn.Linear's default init, lr 1e-3", dict(read_size=2, write_size=5), 1e-3, True),
    ("2x2 read, 5x5 write, covering init + write gain, lr 1e-3", dict(read_size=2, write_size=5), 1e-3, False),
    ("2x2 read, 5x5 write, covering init + write gain, lr 3e-3", dict(read_size=2, write_size=5), 3e-3, False),
    ("12x12 read, 12x12 write, covering init + write gain, lr 3e-3", dict(read_size=12, write_size=12), 3e-3, False),
]


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--data-root")
    return run_program("attention_learning", compare, parser.parse_args(argv))


def compare(args) -> int:
    train = binarized_mnist(args.data_root, "train")
    valid = random_subset(binarized_mnist(args.data_root, "valid"), 2000, seed=0)
    rows = []
    for label, config, lr, naive in VARIANTS:
        print(f"\n== {label} ==", flush=True)
        torch.manual_seed(0)
        model = drawzoo.load("draw", **BASE, **config)
        if naive:  # the attention maps as nn.Linear initialises them: a 2x2 read grid on the image border
            model.reader.glimpse.reset_parameters()
            model.writer.glimpse.reset_parameters()
        started = time.perf_counter()
        with console_logging():  # each epoch's figures
            history = drawzoo.train(model, train, valid, epochs=args.epochs, batch_size=100, lr=lr, seed=0)
        rows.append((label, [h["valid_loss"] for h in history], time.perf_counter() - started))
    head = " | ".join(f"epoch {e + 1}" for e in range(args.epochs))
    print(f"\nvalidation negative ELBO (nats), DRAW T=6, LSTM 256, z 50, {torch.get_num_threads()} threads\n")
    print(f"| variant | {head} | time |\n|---|" + "---:|" * (args.epochs + 1))
    for label, losses, seconds in rows:
        print(f"| {label} | " + " | ".join(f"{v:.1f}" for v in losses) + f" | {seconds / 60:.1f} min |")
    return 0


if __name__ == "__main__":
    sys.exit(main())

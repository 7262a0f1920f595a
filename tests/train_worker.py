"""A training process for the crash tests: `python tests/train_worker.py CHECKPOINT EPOCHS [--every-steps N]`.

Trains a fixed small DRAW on fixed data with a fixed seed, checkpointing every few steps, then
writes the final weights to CHECKPOINT + ".final" (as a checkpoint) when it finishes.
"""

import argparse

import torch

import drawzoo
from drawzoo.checkpoints import save_checkpoint


def data():
    g = torch.Generator().manual_seed(0)
    x = (torch.rand(240, 1, 12, 12, generator=g) < 0.3).float()
    x[:120, :, 3:9, 3:9] = 1.0
    return x


def model():
    torch.manual_seed(0)
    return drawzoo.load("draw", image_shape=(1, 12, 12), T=4, hidden_dim=256, latent_dim=8, write_size=3)


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("checkpoint")
    parser.add_argument("epochs", type=int)
    parser.add_argument("--every-steps", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(1)
    m = model()
    drawzoo.train(m, data(), epochs=args.epochs, batch_size=24, lr=1e-3, checkpoint=args.checkpoint,
                  every_steps=args.every_steps, progress=False)
    save_checkpoint(args.checkpoint + ".final", m)

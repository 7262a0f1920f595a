"""What a training run tells as it goes: its messages and its TensorBoard summaries.

Every piece of `drawzoo.train` writes its messages (each epoch's figures, notes on resuming,
skipped steps, an early stop) to one logger, `log` (``drawzoo.training``). `Report` writes each
epoch's line (rank 0), the first skipped step's, the line of an early stop and, inside
`Report.summaries`, the scalars and pictures of a ``log_dir``.
"""

from __future__ import annotations

import contextlib
import logging

import torch

from ..errors import DrawzooError
from ..figures.plots import require_matplotlib

log = logging.getLogger("drawzoo.training")


def require_tensorboard(kl_picture: bool = True) -> None:
    """`DrawzooError` unless TensorBoard (the optional extra ``drawzoo[tensorboard]``) is installed,
    and with `kl_picture` (summaries with validation) matplotlib too, which draws the KL per step
    (``drawzoo[plots]``, which ``drawzoo[tensorboard]`` pulls in)."""
    import importlib.util

    if importlib.util.find_spec("tensorboard") is None:
        raise DrawzooError("log_dir (TensorBoard summaries) needs TensorBoard: pip install 'drawzoo[tensorboard]'")
    if kl_picture:
        require_matplotlib("log_dir (TensorBoard summaries with validation: the picture of the KL per step)")


def _preview(model, n: int, seed: int) -> torch.Tensor:
    """Final images of `n` prior samples ``[n, C, H, W]``, without touching the global RNG."""
    with torch.random.fork_rng(devices=[model.device] if model.device.type == "cuda" else []):
        torch.manual_seed(seed)
        return model.generate(n)[-1].cpu()


class Report:
    """The messages and summaries of one `train` call on `model` with train config `config`;
    `main`: whether this process is rank 0 (the only one that logs)."""

    def __init__(self, model, config, main: bool):
        self.model, self.config, self.main = model, config, main
        self.writer = None  #: the SummaryWriter while `summaries` is entered with a log_dir
        self.skips_told = False  #: whether a skipped step was logged

    @contextlib.contextmanager
    def summaries(self, log_dir, step: int):
        """TensorBoard summaries to `log_dir` while inside (none if it is None), from optimizer
        step `step` on (later ones of an earlier run are purged)."""
        if log_dir is None:
            yield
            return
        from torch.utils.tensorboard import SummaryWriter

        self.writer = SummaryWriter(str(log_dir), purge_step=step or None)
        self.writer.add_custom_scalars({"kl_per_step": {"KL per step, valid (nats per image)": [
            "Multiline", [r"kl_per_step/t_\d+"]]}})
        try:
            yield
        finally:
            self.writer.close()

    def step(self, loss: float, step: int) -> None:
        """``loss/train_step``: the train `loss` (nats per image) of optimizer step `step`."""
        if self.writer is not None:
            self.writer.add_scalar("loss/train_step", loss, step)

    def epoch(self, record: dict, scores: dict | None, step: int) -> None:
        """An epoch's (or part's) history entry `record` at optimizer step `step`, with the
        validation `scores` (`evaluate`'s, None without validation): TensorBoard's ``loss/train``,
        ``loss/valid``, a grid of ``num_preview`` samples and the KL per step; one line logged."""
        if self.writer is not None:
            self.writer.add_scalar("loss/train", record["train_loss"], step)
            if record["valid_loss"] is not None:
                self.writer.add_scalar("loss/valid", record["valid_loss"], step)
            from torchvision.utils import make_grid
            preview = _preview(self.model, self.config.num_preview, self.config.seed)
            self.writer.add_image("samples", make_grid(preview, nrow=8), step)
            if scores is not None and "kl_per_step" in scores:
                self._kl_per_step(scores, record["epoch"], step)
            self.writer.flush()
        if self.main:
            valid_text = "" if record["valid_loss"] is None else f", valid {record['valid_loss']:.2f}"
            log.info("epoch %g: train %.2f%s nats/image (%.1f s)", record["epoch"], record["train_loss"], valid_text,
                     record["seconds"])

    def skipped(self, step: int) -> None:
        """Optimizer step `step` was skipped for a non-finite loss or gradient: logged (WARNING),
        the first only, by every process."""
        if not self.skips_told:
            log.warning("non-finite loss or gradient at step %d: update skipped", step)
            self.skips_told = True

    def stopped(self, line: str) -> None:
        """The run stopped early (`drawzoo.training.stopping.StopRequests.stopped`): its `line`
        logged (WARNING, rank 0)."""
        if self.main:
            log.warning(line)

    def _kl_per_step(self, scores: dict, epoch: float, step: int) -> None:
        """The validation KL per step to TensorBoard: one scalar per step, and the plot."""
        from ..figures.plots import figure_to_array, kl_plot

        for t, kl in enumerate(scores["kl_per_step"]):
            self.writer.add_scalar(f"kl_per_step/t_{t:02d}", kl, step)
        plot = kl_plot(scores["kl_per_step"], scores["reconstruction"],
                       title=f"validation, epoch {epoch:g} ({scores['num_images']} images)")
        # rendered here rather than by add_figure, which imports pyplot (a GUI backend, its global figures)
        self.writer.add_image("kl_per_step", figure_to_array(plot), step, dataformats="HWC")

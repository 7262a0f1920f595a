"""Stopping training early without losing a step: at a time limit, on SIGTERM or SIGINT, or as a
callback asks.

`StopRequests` is what `drawzoo.train` asks after each optimizer step: has the time limit passed,
has a signal come, has a callback asked (`drawzoo.training.callbacks.Run.stop`)? While it is
entered in the main thread, the first SIGINT (Ctrl-C) or SIGTERM (a scheduler's preemption notice)
is only noted: training stops after the step in progress, writes its checkpoint and raises
`Interrupted`. A second SIGINT raises `Interrupted` at once, wherever training is (checkpoints are
written atomically: the last one stays intact); a second SIGTERM changes nothing (schedulers and
launchers such as torchrun send it to every process, sometimes twice). A signal that was ignored
(``SIG_IGN``, e.g. ``trap '' INT``) stays ignored. On leaving, the handlers that were there before
are restored. Under torchrun, every process stops at the same step when any of them is asked to
(`StopRequests.anywhere`, and the flag each step's gradient all-reduce carries). After the
checkpoint, `StopRequests.stopped` ends the run, and returns what to log to the loop, which
reports it. (A run that diverges stops with an error instead: `drawzoo.training.divergence`.)
"""

from __future__ import annotations

import signal
import threading
import time

SIGNALS = (signal.SIGINT, signal.SIGTERM)


class Interrupted(KeyboardInterrupt):
    """Training stopped by a signal (`signum`: SIGINT or SIGTERM); the message says at which step
    and where the checkpoint is. A KeyboardInterrupt, so that ``except Exception`` does not catch it."""

    def __init__(self, message: str, signum: int):
        super().__init__(message)
        self.signum = signum

    def __str__(self):
        return self.args[0]


def signal_name(signum: int) -> str:
    return signal.Signals(signum).name


class StopRequests:
    """Whether training should stop: `signum` (the first signal received, 0 if none), the time
    limit of `max_minutes` (wall clock, from `started`, a `time.monotonic()` reading), or `reason`
    (the first a callback asked with, `ask`; None if none).

    `checkpoint` (a path or None) is named by the `Interrupted` of a second SIGINT.
    """

    def __init__(self, max_minutes: float | None, started: float, checkpoint=None):
        self.max_minutes = max_minutes
        self.deadline = None if max_minutes is None else started + 60 * max_minutes
        self.checkpoint = checkpoint
        self.signum = 0
        self.reason = None
        self.previous = {}

    def time_up(self) -> bool:
        return self.deadline is not None and time.monotonic() >= self.deadline

    def ask(self, reason: str) -> None:
        """A callback asks to stop, for `reason` (the first reason asked is kept)."""
        self.reason = self.reason or reason

    def requested(self) -> bool:
        return bool(self.signum) or self.time_up() or self.reason is not None

    def anywhere(self, group) -> bool:
        """Whether any process of `group` (a `drawzoo.distributed.Group`) is asked to stop."""
        return bool(group.sum(float(self.requested()))[0])

    def asked_anywhere(self, group) -> bool:
        """Whether a callback of any process of `group` asked to stop (`ask`)."""
        return bool(group.sum(float(self.reason is not None))[0])

    def stopped(self, history: list[dict], step: int, group, where: str) -> tuple[list[dict], str]:
        """End the run that stopped at optimizer `step` (its checkpoint, `where`, just written) as
        any process of `group` was asked: raise `Interrupted` for a signal; else `history` with its
        last entry marked ``"stopped": reason`` -- the reason a callback asked with (the first
        process's that asked), else ``"max_minutes"`` --, and the line to log (WARNING)."""
        asked = group.gather((self.signum, self.reason))  # also makes every process wait for the write
        signum = max(s for s, _ in asked)
        reason = next((r for _, r in asked if r is not None), None)
        at = f"at step {step} (epoch {history[-1]['epoch']:g}): {where}"
        if self.checkpoint is not None:
            at += ", resume from it to continue"
        if signum:
            raise Interrupted(f"stopped by {signal_name(signum)} {at}", signum)
        if reason is None:
            reason, line = "max_minutes", f"stopped at the time limit (max_minutes={self.max_minutes:g}) {at}"
        else:
            line = f"stopped as a callback asked ({reason}) {at}"
        return history[:-1] + [{**history[-1], "stopped": reason}], line

    def _handle(self, signum, frame) -> None:
        if self.signum and signum == signal.SIGINT:
            kept = "nothing saved" if self.checkpoint is None else f"the last checkpoint at {self.checkpoint} is intact"
            raise Interrupted(f"stopped at once by a second SIGINT; {kept}", signum)
        self.signum = self.signum or signum

    def __enter__(self) -> StopRequests:
        if threading.current_thread() is threading.main_thread():
            for signum in SIGNALS:
                previous = signal.getsignal(signum)
                if previous not in (None, signal.SIG_IGN):  # None: set outside Python, could not be restored
                    self.previous[signum] = previous
                    signal.signal(signum, self._handle)
        return self

    def __exit__(self, *exc) -> None:
        for signum, previous in self.previous.items():
            signal.signal(signum, previous)
        self.previous = {}

"""What the ``drawzoo`` command prints for people: drawzoo's log messages (`console_logging`) and
its own lines, from one process only under torchrun (`say`)."""

from __future__ import annotations

import contextlib
import logging
import sys

from tqdm.auto import tqdm

from .. import distributed


class _Console(logging.Handler):
    """drawzoo's log messages for people: information on stdout, warnings on stderr, written
    around the progress bars."""

    def emit(self, record: logging.LogRecord) -> None:
        try:
            if record.levelno >= logging.WARNING:
                tqdm.write(f"drawzoo: warning: {self.format(record)}", file=sys.stderr)
            else:
                tqdm.write(self.format(record), file=sys.stdout)
        except Exception:
            self.handleError(record)


@contextlib.contextmanager
def console_logging(verbose: bool = True):
    """While inside, show the messages of the ``drawzoo`` loggers on the console: each epoch's
    figures and other information if `verbose`, warnings always."""
    logger, handler = logging.getLogger("drawzoo"), _Console()
    level = logger.level
    logger.addHandler(handler)
    logger.setLevel(logging.INFO if verbose else logging.WARNING)
    try:
        yield
    finally:
        logger.removeHandler(handler)
        logger.setLevel(level)


def say(*args) -> None:
    """Print from one process only (rank 0 under torchrun)."""
    if distributed.is_main_process():
        print(*args, flush=True)

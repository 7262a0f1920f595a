"""What the ``drawzoo`` command prints for people: drawzoo's log messages (`console_logging`), its
own lines, from one process only under torchrun (`say`), and how a program ends (`run_program`:
the ``drawzoo`` command and every benchmark script)."""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import sys

from tqdm.auto import tqdm

from .. import distributed
from ..errors import DrawzooError, first_line
from ..training.stopping import Interrupted

#: What an out-of-memory RuntimeError says (torch's CPU allocator, CUDA, MPS).
OUT_OF_MEMORY = ("can't allocate memory", "out of memory", "not enough memory")


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


def error_message(e: BaseException) -> str:
    """A user's mistake as one line: drawzoo's own message, or an OSError's reason and file
    (``not a directory: /etc/passwd/x``) rather than ``[Errno 20] ...``."""
    if isinstance(e, OSError) and not isinstance(e, DrawzooError) and e.strerror:
        where = "" if e.filename is None else f": {e.filename}"
        return f"{e.strerror[0].lower()}{e.strerror[1:]}{where}"
    return str(e)


def out_of_memory(e: BaseException) -> bool:
    """Whether `e` is an allocation that failed (torch's or Python's)."""
    return isinstance(e, MemoryError) or (isinstance(e, RuntimeError) and any(
        words in str(e).lower() for words in OUT_OF_MEMORY))


def run_program(prog: str, body, *args) -> int:
    """``body(*args)``'s exit status, as a command-line program named `prog` ends: a user's mistake
    (`drawzoo.errors`, ValueError, TypeError, OSError) or an allocation that fails is one line on
    stderr, ``prog: error: ...``, exit status 2; a signal that stopped training (`Interrupted`) or
    Ctrl-C exits 128 + the signal's number (130 for SIGINT), after what the body saved on its way
    out; a reader that closed the pipe (``prog | head -1``) ends it quietly, as Unix tools do (141)."""
    try:
        status = body(*args)
        sys.stdout.flush()  # a pipe closed early fails here, not at exit
        return status
    except BrokenPipeError:
        with contextlib.suppress(OSError):  # no "Exception ignored" when Python flushes stdout at exit
            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 128 + signal.SIGPIPE if hasattr(signal, "SIGPIPE") else 1
    except (DrawzooError, ValueError, TypeError, OSError) as e:
        print(f"{prog}: error: {error_message(e)}", file=sys.stderr)
        return 2
    except (RuntimeError, MemoryError) as e:
        if not out_of_memory(e):
            raise
        print(f"{prog}: error: out of memory: {first_line(e) if str(e) else 'an allocation failed'}", file=sys.stderr)
        return 2
    except Interrupted as e:  # training stopped by a signal, its checkpoint written
        if distributed.is_main_process():
            print(f"{prog}: {e}", file=sys.stderr)
        return 128 + e.signum
    except KeyboardInterrupt:
        print(f"{prog}: interrupted", file=sys.stderr)
        return 128 + signal.SIGINT

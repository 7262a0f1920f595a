"""`benchmarks/threads.py`: bad input is one line, and a timing process that fails ends the script
(and its partner, which would wait at the barrier for ever) instead of hanging it."""

import multiprocessing
import sys
import time

import pytest

from tests.conftest import load_script


@pytest.mark.parametrize("argv,message", [
    (["--steps", "0"], "--steps must be >= 1, got 0"),
    (["--recipes", "no/such.toml"], "--recipes: no such recipe file: no/such.toml"),
])
def test_bad_input_is_one_line(argv, message, capsys):
    with pytest.raises(SystemExit) as e:
        load_script("threads").main(argv)
    assert e.value.code == 2 and capsys.readouterr().err.strip().endswith(f"error: {message}")


def test_a_failed_timing_process_ends_its_partner_and_the_script():
    threads = load_script("threads")
    spawn = multiprocessing.get_context("spawn")
    partner = spawn.Process(target=time.sleep, args=(600,))  # as one waiting at the barrier
    started = time.monotonic()
    with pytest.raises(SystemExit, match=r"tiny: a timing process failed \(exit 3;"):
        threads.run_all([spawn.Process(target=sys.exit, args=(3,)), partner], spawn.Queue(), "tiny")
    assert not partner.is_alive() and time.monotonic() - started < 120

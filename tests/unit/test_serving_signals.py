"""A worker signals its parent to reload everywhere only when that parent is ``gatehouse serve --workers``;
a repeated SIGTERM keeps ``drain_delay``, a repeated SIGINT skips it."""

import os
import signal
import time

from app.assembly.drain import Drain
from app.serving.signals import SUPERVISOR_PID, drain_first, under_supervisor


def test_only_a_worker_of_gatehouse_serve_signals_its_parent(monkeypatch):
    monkeypatch.delenv(SUPERVISOR_PID, raising=False)
    assert not under_supervisor()  # e.g. uvicorn run by hand from a shell: never SIGHUP the shell
    monkeypatch.setenv(SUPERVISOR_PID, str(os.getppid() + 1))
    assert not under_supervisor()  # inherited by a grandchild: not our parent
    monkeypatch.setenv(SUPERVISOR_PID, str(os.getppid()))
    assert under_supervisor()


def test_a_repeated_sigterm_keeps_the_drain_delay_and_a_repeated_sigint_skips_it():
    stops = []
    handler = drain_first(lambda signum, _frame: stops.append(signum), Drain(), 0.3)
    handler(signal.SIGTERM, None)
    handler(signal.SIGTERM, None)  # the supervisor's, after the process group's
    assert stops == []  # still listening for drain_delay
    deadline = time.monotonic() + 10
    while not stops and time.monotonic() < deadline:
        time.sleep(0.02)
    assert stops == [signal.SIGTERM]  # the delayed stop, once

    stops.clear()
    handler = drain_first(lambda signum, _frame: stops.append(signum), Drain(), 30)
    handler(signal.SIGTERM, None)
    handler(signal.SIGINT, None)  # Ctrl-C while draining: stop now
    assert stops == [signal.SIGINT]

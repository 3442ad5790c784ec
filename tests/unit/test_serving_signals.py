"""A worker signals its parent to reload everywhere only when that parent is ``gatehouse serve --workers``."""

import os

from app.serving.signals import SUPERVISOR_PID, under_supervisor


def test_only_a_worker_of_gatehouse_serve_signals_its_parent(monkeypatch):
    monkeypatch.delenv(SUPERVISOR_PID, raising=False)
    assert not under_supervisor()  # e.g. uvicorn run by hand from a shell: never SIGHUP the shell
    monkeypatch.setenv(SUPERVISOR_PID, str(os.getppid() + 1))
    assert not under_supervisor()  # inherited by a grandchild: not our parent
    monkeypatch.setenv(SUPERVISOR_PID, str(os.getppid()))
    assert under_supervisor()

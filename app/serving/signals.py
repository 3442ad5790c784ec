"""Shutdown and reload signals for Gatehouse's processes.

A shutdown signal first marks the app as draining (``/readyz`` answers 503) and,
with ``drain_delay``, keeps the listener open that long, so a load balancer or a
Kubernetes Service stops sending new connections before they would be refused.
Then uvicorn's own handler runs: stop accepting, let in-flight exchanges finish
for ``shutdown_grace``, run the lifespan shutdown.

With ``--workers N`` (either server) uvicorn's supervisor restarts every worker,
one at a time, on SIGHUP (``app.serving.workers``); each new worker reads the config
file anew. A ``POST /reload``
answered by one worker sends that SIGHUP to the supervisor, so every worker
reloads, not just the one that answered.
"""

from __future__ import annotations

import os
import signal
import threading
from collections.abc import Callable
from types import FrameType
from typing import Any

from app.assembly.drain import Drain

Handler = Callable[[int, FrameType | None], Any]


def drain_first(handle_exit: Handler, drain: Drain, delay: float) -> Handler:
    """``handle_exit`` behind a drain: the first signal starts draining and calls it ``delay`` seconds later.

    A second SIGINT calls it at once (Ctrl-C twice still stops at once); the delayed call then does
    nothing. A second SIGTERM during the delay changes nothing: with ``--workers`` a worker gets one
    from its supervisor, and another from whoever signalled the whole process group (systemd's
    default ``KillMode=control-group``, ``timeout``), which would have cut the delay short.
    """
    forwarded = threading.Event()

    def forward(signum: int, frame: FrameType | None) -> None:
        if not forwarded.is_set():
            forwarded.set()
            handle_exit(signum, frame)

    def handler(signum: int, frame: FrameType | None) -> None:
        first = not drain.draining
        drain.start(f"signal {signal.Signals(signum).name}")
        if first and delay > 0:
            timer = threading.Timer(delay, forward, (signum, frame))
            timer.daemon = True
            timer.start()
        elif forwarded.is_set():
            handle_exit(signum, frame)  # a repeated signal: uvicorn's force exit
        elif first or signum != signal.SIGTERM:
            forward(signum, frame)
        # else a repeated SIGTERM within the delay: the timer stops the server when the delay is over

    return handler


def drain_worker_on_signals(drain: Drain, delay: float) -> None:
    """In a ``--workers`` process under uvicorn: put the drain in front of the handlers uvicorn's server installed.

    Call it while uvicorn loads the app: its ``Server.serve`` installs its handlers before that, and puts
    the originals back when it stops. (A hypercorn worker runs ``hypercorn_server.run``, which installs
    its own, as in one process.)
    """
    for signum in (signal.SIGINT, signal.SIGTERM):
        previous = signal.getsignal(signum)
        if callable(previous):
            signal.signal(signum, drain_first(previous, drain, delay))


# Set by ``gatehouse serve --workers N`` to its own pid, for its workers to find it.
SUPERVISOR_PID = "GATEHOUSE_SUPERVISOR_PID"


def under_supervisor() -> bool:
    """Is this process a worker of ``gatehouse serve --workers N`` (and not, say, of a shell that ran uvicorn)?"""
    return os.environ.get(SUPERVISOR_PID) == str(os.getppid())


def reload_all_workers() -> None:
    """From a ``--workers`` process: ask the supervisor (our parent) to restart every worker with the new config."""
    os.kill(os.getppid(), signal.SIGHUP)

"""``gatehouse serve --workers N``: one supervisor, uvicorn's, whichever server the workers run.

The supervisor is uvicorn's ``Multiprocess`` (0.54). The parent binds the port once
and starts N spawned workers that serve on that socket. It pings each worker over a
pipe (a thread in the worker answers with its server's ``started`` flag), replaces a
worker that died or stopped answering, replaces every worker one at a time on SIGHUP
(each new one answers "started" before its predecessor gets SIGTERM, so each reads
the config file anew and nothing is refused), and on SIGTERM or SIGINT sends SIGTERM
to every worker and waits for them: each drains as a single ``gatehouse serve`` does.
A worker that fails before it serves exits with status 3 (uvicorn's
``STARTUP_FAILURE``), which stops the supervisor, since a new one would fail the same
way; ``supervise`` then exits 3 too.

uvicorn's ``Multiprocess`` runs uvicorn's ``Server`` in every worker and has no
setting for another: it builds its workers from the ``Process`` class of its own
module. ``WorkerProcess`` is installed there (hypercorn is patched the same way, in
``app.serving.hypercorn_server``): with ``SupervisedConfig(http_server="hypercorn")``
its server is ``HypercornWorker``, which runs ``hypercorn_server.run`` on the
inherited socket; with anything else it is uvicorn's, as before.
hypercorn's own multi-process runner (0.18) was not taken: on SIGHUP it stops every
worker at once, a worker that dies ends the whole server, and SIGTERM skips the drain.
"""

from __future__ import annotations

import logging
import os
import pickle
import socket
import sys
from multiprocessing.connection import wait
from typing import Any

import uvicorn
from uvicorn.config import STARTUP_FAILURE
from uvicorn.importer import import_from_string
from uvicorn.supervisors import multiprocess

from app.config.settings import load_settings

log = logging.getLogger("gatehouse")


class SupervisedConfig(uvicorn.Config):
    """uvicorn's config for the supervisor and its workers, with the server the workers run.

    ``app`` is the import string of the workers' app factory: under uvicorn uvicorn calls
    it with no argument (``app.main:worker_app``); under hypercorn ``HypercornWorker``
    calls it with the settings it serves with (``app.main:supervised_app``).
    """

    def __init__(self, app: str, *, http_server: str = "uvicorn", **options: Any) -> None:
        super().__init__(app, **options)
        self.http_server = http_server


class HypercornWorker(uvicorn.Server):
    """One ``--workers`` process under hypercorn, serving as a single ``gatehouse serve`` does.

    A ``uvicorn.Server`` only for what the supervisor's worker reads of it: ``run(sockets)``
    and ``started``, true once hypercorn listens on the inherited socket.
    """

    def run(self, sockets: list[socket.socket] | None = None) -> None:
        from hypercorn.utils import LifespanFailureError

        from app.serving import hypercorn_server  # hypercorn only in the processes that serve with it

        try:
            settings = load_settings()  # anew: a worker started by a reload reads the new file
            app = import_from_string(str(self.config.app))(settings)
            config = hypercorn_server.hypercorn_config(settings, host=self.config.host, port=self.config.port)
            hypercorn_server.run(
                app,
                config,
                app.state.drain,
                app.state.reloader,
                settings.drain_delay,
                sockets=sockets,
                on_serving=self.serving,
            )
        except Exception as exc:
            if self.started:
                raise
            # A lifespan failure's message carries the app's traceback already; ours would add nothing.
            own_trace = not isinstance(exc, LifespanFailureError)
            log.error("worker [%d] could not start: %s", os.getpid(), exc, exc_info=own_trace)
            sys.exit(STARTUP_FAILURE)

    def serving(self) -> None:
        self.started = True


class WorkerProcess(multiprocess.Process):
    """uvicorn's worker process, whose server is ``HypercornWorker`` when the config says hypercorn."""

    def _healthcheck(self, timeout: float) -> bool | None:
        """The worker's ``started`` flag, or None if it does not answer in time or exits first.

        uvicorn's (0.54) waits on the pipe alone, and the supervisor's end of the child's pipe
        stays open, so a worker that exits after the ping went out leaves the supervisor
        waiting the whole ``timeout_worker_healthcheck`` (60 s here, for slow starts), deaf to
        signals and to its other workers. Waiting on the process's sentinel too ends it at once.
        """
        try:
            self.parent_conn.send(b"ping")
            wait([self.parent_conn, self.process.sentinel], timeout)
            if self.parent_conn.poll():
                started: bool = self.parent_conn.recv()
                return started
            return None
        except (OSError, EOFError, pickle.UnpicklingError):
            return None

    @property
    def server(self) -> uvicorn.Server:
        if self._server is None and getattr(self.config, "http_server", "uvicorn") == "hypercorn":
            self._server = HypercornWorker(self.config)
        return super().server


# Where ``Multiprocess`` looks its worker class up (the module docstring says why).
multiprocess.Process = WorkerProcess  # type: ignore[misc]


def supervise(config: SupervisedConfig) -> None:
    """Serve with ``config.workers`` workers until SIGTERM or SIGINT; exit 3 if a worker could not start."""
    supervisor = multiprocess.Multiprocess(config, sockets=[config.bind_socket()])
    supervisor.run()
    if any(process.exitcode == STARTUP_FAILURE for process in supervisor.processes):
        raise SystemExit(STARTUP_FAILURE)

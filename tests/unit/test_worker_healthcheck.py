"""The ``--workers`` supervisor's ping of a worker ends when the worker exits, not when the ping times out.

uvicorn's supervisor pings each worker over a pipe every half second and waits up to
``timeout_worker_healthcheck`` (60 s here, so a worker importing the app on a busy host
is not given up on) for the answer. A worker that exits after the ping is sent never
answers, and the supervisor then sat deaf for the whole timeout: no other worker
watched, SIGTERM not handled, a failed start reported a minute late.
"""

from __future__ import annotations

import time

from app.serving.workers import SupervisedConfig, WorkerProcess


class ExitsWithoutAnswering(WorkerProcess):
    """A worker that never answers a ping and exits after ``LIFETIME`` seconds."""

    LIFETIME = 1.0

    def target(self, sockets: object = None) -> None:  # noqa: ARG002 # runs in the spawned child
        time.sleep(self.LIFETIME)


def test_a_ping_to_a_worker_that_exits_ends_when_it_exits() -> None:
    config = SupervisedConfig("app.main:worker_app", workers=1, log_config=None)
    worker = ExitsWithoutAnswering(config, [])
    worker.start()
    try:
        started = time.monotonic()
        answered = worker.is_alive(timeout=30)  # the ping goes out while it still runs
        waited = time.monotonic() - started
    finally:
        worker.kill()
        worker.join()
    assert answered is False
    assert waited < 10, f"the supervisor waited {waited:.1f}s on a worker that had exited"

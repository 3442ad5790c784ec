import logging

from app.config.routes import CircuitBreakerSettings, HealthCheck, PassiveHealthSettings, Resilience
from app.config.upstream import parse_upstream
from app.errors import CircuitOpen, NoHealthyTarget
from app.resilience.targets import TargetPool


class Clock:
    def __init__(self):
        self.now = 100.0

    def __call__(self):
        return self.now


def make_pool(n=3, clock=None, **resilience):
    resilience.setdefault(
        "passive_health", PassiveHealthSettings(max_failures=2, window=10, ejection=5, max_ejection=60)
    )
    targets = tuple(parse_upstream(f"http://127.0.0.1:{9000 + i}") for i in range(n))
    return TargetPool("api", targets, (1,) * n, Resilience(**resilience), clock or Clock())


def test_choose_prefers_targets_not_yet_tried():
    pool = make_pool()
    first = pool.choose()
    second = pool.choose([first])
    third = pool.choose([first, second])
    assert len({first, second, third}) == 3
    assert pool.choose([first, second, third]) is not None  # all tried: any available one


def test_failing_target_is_ejected_while_others_remain(caplog):
    pool = make_pool()
    bad = pool.targets[0]
    with caplog.at_level(logging.WARNING, "gatehouse.resilience"):
        pool.record_failure(bad, "refused")
        pool.record_failure(bad, "refused")
    assert bad.passive.ejected(pool.clock())
    assert "ejected http://127.0.0.1:9000" in caplog.text
    assert all(pool.choose() is not bad for _ in range(6))


def test_ejected_target_returns_after_the_cool_down():
    clock = Clock()
    pool = make_pool(clock=clock)
    bad = pool.targets[0]
    pool.record_failure(bad, "x")
    pool.record_failure(bad, "x")
    clock.now += 5
    assert bad in {pool.choose() for _ in range(3)}


def test_last_healthy_target_is_never_ejected_but_the_route_is_degraded(caplog):
    pool = make_pool(n=1)
    (only,) = pool.targets
    with caplog.at_level(logging.ERROR, "gatehouse.resilience"):
        for _ in range(6):
            pool.record_failure(only, "status 503")
    assert not only.passive.ejected(pool.clock())
    assert pool.choose() is only
    assert pool.degraded() == "the last healthy target is failing"
    assert caplog.text.count("last healthy target") == 1  # said once, not per request
    pool.record_success(only)
    assert pool.degraded() is None


def test_open_breakers_everywhere_mean_503_with_retry_after():
    clock = Clock()
    pool = make_pool(n=2, clock=clock, circuit_breaker=CircuitBreakerSettings(failure_threshold=1, reset_timeout=7.5))
    for target in pool.targets:
        pool.record_failure(target, "x")
    assert pool.choose() is None
    error = pool.unavailable()
    assert isinstance(error, CircuitOpen) and error.status == 503
    assert error.headers == [(b"retry-after", b"8")]
    assert pool.degraded() == "every circuit breaker is open"
    clock.now += 7.5
    assert pool.choose() is not None  # half-open trial


def test_with_health_checks_targets_start_unused_until_they_pass():
    pool = make_pool(n=2, health_check=HealthCheck())
    assert pool.choose() is None
    assert isinstance(pool.unavailable(), NoHealthyTarget)
    assert pool.degraded() == "no healthy target"
    pool.targets[1].active.record(True)
    assert {pool.choose() for _ in range(4)} == {pool.targets[1]}


def test_snapshot_reports_every_target():
    pool = make_pool(n=2, circuit_breaker=CircuitBreakerSettings())
    pool.record_failure(pool.targets[0], "x")
    pool.record_failure(pool.targets[0], "x")
    snap = pool.snapshot({"http://127.0.0.1:9001": 2})
    first, second = snap["targets"]
    assert first["state"] == "ejected" and first["ejected_for"] == 5.0 and first["ejections"] == 1
    assert second["state"] == "healthy" and second["breaker"] == "closed"
    assert second["connections_in_use"] == 2 and second["in_flight"] == 0

from app.resilience.health import ActiveHealth, PassiveHealth


def test_failures_within_the_window_trigger_ejection():
    health = PassiveHealth(max_failures=3, window=10, ejection=30, max_ejection=300)
    assert not health.record_failure(0)
    assert not health.record_failure(1)
    assert health.record_failure(2)


def test_failures_spread_beyond_the_window_do_not():
    health = PassiveHealth(3, window=10, ejection=30, max_ejection=300)
    assert not health.record_failure(0)
    assert not health.record_failure(6)
    assert not health.record_failure(12)  # the failure at 0 has aged out


def test_cool_down_doubles_on_repeat_ejection_up_to_the_maximum():
    health = PassiveHealth(1, 10, ejection=30, max_ejection=100)
    assert health.eject(0) == 30
    assert health.ejected(29) and not health.ejected(30)
    assert health.eject(31) == 60
    assert health.eject(92) == 100
    assert health.ejections == 3


def test_a_target_that_behaves_long_enough_starts_over():
    health = PassiveHealth(1, 10, ejection=30, max_ejection=100)
    health.eject(0)
    health.eject(31)  # back at 91
    assert health.eject(91 + 100) == 30


def test_zero_max_failures_never_ejects():
    health = PassiveHealth(0, 10, 30, 300)
    assert not any(health.record_failure(t) for t in range(10))


def test_active_health_starts_unknown_and_first_pass_makes_it_healthy():
    health = ActiveHealth(healthy_threshold=2, unhealthy_threshold=3)
    assert health.state == "unknown"
    assert health.record(True)
    assert health.state == "healthy"


def test_active_health_needs_thresholds_in_a_row_to_change():
    health = ActiveHealth(healthy_threshold=2, unhealthy_threshold=3)
    health.record(True)
    health.record(False)
    health.record(False)
    health.record(True)  # breaks the run
    health.record(False)
    health.record(False)
    assert health.state == "healthy"
    assert health.record(False)
    assert health.state == "unhealthy"
    assert not health.record(True)
    assert health.record(True)
    assert health.state == "healthy"

"""The metrics' webhook hooks and low-cardinality labels, without sockets."""

from __future__ import annotations

import anyio
from prometheus_client.parser import text_string_to_metric_families

from app.observability.metrics import BoundValue, Metrics


def samples(metrics: Metrics) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    out = {}
    body, _ = metrics.exposition()
    for family in text_string_to_metric_families(body.decode()):
        for sample in family.samples:
            out[sample.name, tuple(sorted(sample.labels.items()))] = sample.value
    return out


class FakeStore:
    async def count_due(self) -> int:
        return 7

    async def oldest_due_age(self) -> float | None:
        return 12.5


class FakeWebhooks:
    store = FakeStore()


def test_webhook_hooks_count_intake_and_deliveries_by_endpoint_and_outcome():
    metrics = Metrics()
    metrics.webhook_received("billing", "accepted")
    metrics.webhook_received("billing", "accepted")
    metrics.webhook_received("billing", "rejected")
    metrics.webhook_attempted("billing", "dead")
    got = samples(metrics)
    assert got["gatehouse_webhook_intake_total", (("endpoint", "billing"), ("outcome", "accepted"))] == 2
    assert got["gatehouse_webhook_intake_total", (("endpoint", "billing"), ("outcome", "rejected"))] == 1
    assert got["gatehouse_webhook_delivery_attempts_total", (("endpoint", "billing"), ("outcome", "dead"))] == 1
    # The old name counts the same for one release (deprecated in its help text and the README).
    assert got["gatehouse_webhook_deliveries_total", (("endpoint", "billing"), ("outcome", "dead"))] == 1


def test_webhook_queue_gauges_read_the_lifespan_states_webhooks_and_vanish_without_them():
    metrics = Metrics()
    anyio.run(metrics.refresh, {"settings": None})  # webhooks not merged / not configured
    assert not any(name.startswith("gatehouse_webhook_") and "queue" in name for name, _ in samples(metrics))
    anyio.run(metrics.refresh, {"webhooks": None})
    assert ("gatehouse_webhook_queue_depth", ()) not in samples(metrics)
    anyio.run(metrics.refresh, {"webhooks": FakeWebhooks()})
    got = samples(metrics)
    assert got["gatehouse_webhook_queue_depth", ()] == 7
    assert got["gatehouse_webhook_oldest_due_seconds", ()] == 12.5


def test_unknown_methods_and_odd_statuses_fold_into_bounded_labels():
    metrics = Metrics()
    route = metrics.for_route("r")
    for method in ("BREW", "PROPFIND", "GET"):
        route.request(method, 200, 0.01)
    route.request("GET", 999, 0.01)
    got = samples(metrics)
    assert got["gatehouse_requests_total", (("method", "OTHER"), ("route", "r"), ("status_class", "2xx"))] == 2
    assert got["gatehouse_requests_total", (("method", "GET"), ("route", "r"), ("status_class", "5xx"))] == 1
    assert got["gatehouse_request_duration_seconds_count", (("route", "r"),)] == 4


def test_bound_values_count_as_the_librarys_own_methods():
    """``BoundValue`` and ``BoundHistogram`` reach into prometheus-client's children; this pins them to its methods."""
    ours, theirs = Metrics(), Metrics()
    # Both bounds, either side of them, zero, past the last finite bound, and a long stream's hour.
    amounts = [0.0, 0.005, 0.0050001, 0.3, 1.0, 2.5, 119.9, 120.0, 121.0, 3600.0, 9999.0]
    route = ours.for_route("r")
    in_flight = BoundValue(ours.in_flight)
    for amount in amounts:
        route.duration.observe(amount)
        route.upstream_duration.observe(amount)
        route.request("GET", 200, amount)
        route.request("BREW", 503, amount)
        in_flight.inc(1)
    in_flight.inc(-1)
    theirs.for_route("r")  # the route's other children (retries, errors...), at zero
    children = theirs.duration.labels("r"), theirs.upstream_duration.labels("r")
    for amount in amounts:
        for child in children:
            child.observe(amount)
        for _ in range(2):  # each request() observes the whole-request duration too
            theirs.duration.labels("r").observe(amount)
        theirs.requests.labels("r", "GET", "2xx").inc()
        theirs.requests.labels("r", "OTHER", "5xx").inc()
        theirs.in_flight.inc()
    theirs.in_flight.dec()
    mine, expected = samples(ours), samples(theirs)

    def counted(found: dict[tuple[str, tuple[tuple[str, str], ...]], float]) -> dict[object, float]:
        return {k: v for k, v in found.items() if k[0].startswith("gatehouse_") and not k[0].endswith("_created")}

    assert counted(mine) == counted(expected)
    assert mine[("gatehouse_requests_in_flight", ())] == len(amounts) - 1


def test_unlocked_adds_land_in_the_value_and_other_kinds_keep_their_own_inc():
    from prometheus_client.values import MutexValue

    from app.observability.metrics import unlocked_add

    value = MutexValue("counter", "m", "m", (), (), "help")
    add = unlocked_add(value)
    add(1)
    add(2.5)
    assert value.get() == 3.5

    class FileBacked:  # multiprocess mode's values are another class, with an inc of their own
        def inc(self, amount: float) -> None: ...

    other = FileBacked()
    assert unlocked_add(other) == other.inc

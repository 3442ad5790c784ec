"""Event types: where each scheme's type comes from, and which targets take it."""

import pytest

from app.config.webhooks import DeliveryTarget, EventTypeSource, WebhookEndpoint
from app.webhooks.event_types import event_type, takes

GITHUB = {"scheme": "github", "secrets": ["s"]}


def source(scheme: dict, **extra) -> EventTypeSource | None:
    endpoint = WebhookEndpoint(
        name="e", path="/h", verify=scheme, deliver_to=[{"name": "t", "url": "http://t/"}], **extra
    )
    return endpoint.event_type_source


@pytest.mark.parametrize(
    ("scheme", "headers", "body", "expected"),
    [
        (GITHUB, [(b"x-github-event", b"push")], b"{}", "push"),
        ({"scheme": "stripe", "secrets": ["whsec_x"]}, [], b'{"type": "invoice.paid"}', "invoice.paid"),
        ({"scheme": "standard", "secrets": ["whsec_dGVzdA=="]}, [], b'{"type": "user.created"}', "user.created"),
        (
            {"scheme": "slack", "secrets": ["s"]},
            [],
            b'{"type": "event_callback", "event": {"type": "app_mention"}}',
            "app_mention",
        ),
        ({"scheme": "stripe", "secrets": ["whsec_x"]}, [], b"not json", None),
        ({"scheme": "stripe", "secrets": ["whsec_x"]}, [], b'{"type": 7}', None),
        (GITHUB, [], b"{}", None),
    ],
)
def test_each_scheme_reads_its_providers_event_type(scheme, headers, body, expected):
    assert event_type(source(scheme), headers, body) == expected


def test_hmac_and_none_have_no_type_unless_told_where_it_is():
    hmac = {"scheme": "hmac", "secrets": ["s"], "header": "x-sig"}
    assert source(hmac, dedupe=False) is None
    pointer = source(hmac, dedupe=False, event_type={"json_pointer": "/meta/a~1b/0"})
    assert event_type(pointer, [], b'{"meta": {"a/b": ["first", "second"]}}') == "first"
    header = source({"scheme": "none"}, dedupe=False, event_type={"header": "X-Kind"})
    assert event_type(header, [(b"x-kind", b"order.shipped")], b"") == "order.shipped"


def test_event_types_on_a_scheme_without_a_type_fails_at_start_up():
    with pytest.raises(ValueError, match="event_types needs the event's type"):
        WebhookEndpoint(
            name="e",
            path="/h",
            verify={"scheme": "none"},
            dedupe=False,
            deliver_to=[{"name": "t", "url": "http://t/", "event_types": ["a"]}],
        )


def test_targets_take_matching_types_and_untyped_events_only_without_a_filter():
    everything = DeliveryTarget(name="a", url="http://t/")
    invoices = DeliveryTarget(name="b", url="http://t/", event_types=["invoice.*", "charge.succeeded"])
    assert takes(everything, None) and takes(everything, "x")
    assert takes(invoices, "invoice.paid") and takes(invoices, "charge.succeeded")
    assert not takes(invoices, "charge.failed") and not takes(invoices, None)

import pytest
from pydantic import SecretStr, TypeAdapter, ValidationError

from app.config.webhooks import (
    DEFAULT_SCHEDULE,
    GitHubVerify,
    HmacVerify,
    StandardVerify,
    WebhookEndpoint,
    WebhookEndpoints,
)

TARGET = {"name": "orders", "url": "http://orders.internal:8080/hooks/github"}


def endpoint(**overrides):
    values = {
        "name": "github",
        "path": "/hooks/github",
        "verify": {"scheme": "github", "secrets": ["s3cret-value"]},
        "deliver_to": [TARGET],
    }
    values.update(overrides)
    return WebhookEndpoint.model_validate(values)


def test_endpoint_defaults():
    ep = endpoint()
    assert isinstance(ep.verify, GitHubVerify)
    assert ep.retry.schedule == list(DEFAULT_SCHEDULE)
    assert ep.retry.jitter == 0.2
    assert ep.retry.max_attempts == len(DEFAULT_SCHEDULE) + 1
    assert ep.max_body_bytes == 1024 * 1024
    assert ep.dedupe.enabled and ep.dedupe.header is None
    assert ep.deliver_to[0].timeout == 10.0


def test_verify_is_discriminated_on_scheme():
    ep = endpoint(verify={"scheme": "hmac", "secrets": ["k"], "header": "X-Sig", "algorithm": "sha512"}, dedupe=False)
    assert isinstance(ep.verify, HmacVerify)
    assert ep.verify.header == "x-sig"
    with pytest.raises(ValidationError, match="scheme"):
        endpoint(verify={"scheme": "carrier-pigeon", "secrets": ["k"]})
    with pytest.raises(ValidationError, match="header"):
        endpoint(verify={"scheme": "hmac", "secrets": ["k"]}, dedupe=False)


def test_secrets_never_print():
    ep = endpoint(verify={"scheme": "github", "secrets": ["s3cret-value", "older-secret"]})
    assert isinstance(ep.verify.secrets[0], SecretStr)
    for text in (repr(ep), str(ep), ep.model_dump_json()):
        assert "s3cret-value" not in text and "older-secret" not in text


def test_secrets_must_be_given_and_non_empty():
    with pytest.raises(ValidationError):
        endpoint(verify={"scheme": "github", "secrets": []})
    with pytest.raises(ValidationError, match="empty"):
        endpoint(verify={"scheme": "github", "secrets": [""]})


def test_standard_secret_must_be_base64():
    ep = endpoint(verify={"scheme": "standard", "secrets": ["whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"]})
    assert isinstance(ep.verify, StandardVerify)
    with pytest.raises(ValidationError, match=r"secrets\[1\]: must be 'whsec_' followed by base64"):
        endpoint(verify={"scheme": "standard", "secrets": ["whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw", "whsec_%%%"]})


def test_none_scheme_takes_no_secrets():
    with pytest.raises(ValidationError):
        endpoint(verify={"scheme": "none", "secrets": ["k"]}, dedupe=False)
    assert endpoint(verify={"scheme": "none"}, dedupe=False).verify.scheme == "none"


def test_dedupe_accepts_a_bool_shorthand_and_a_header():
    assert endpoint(dedupe=False).dedupe.enabled is False
    assert endpoint(dedupe={"header": "X-Request-Id"}).dedupe.header == "x-request-id"


def test_dedupe_without_an_event_id_source_fails_at_start_up():
    with pytest.raises(ValidationError, match="scheme 'none' has no event id"):
        endpoint(verify={"scheme": "none"})
    ep = endpoint(verify={"scheme": "none"}, dedupe={"header": "idempotency-key"})
    assert ep.dedupe.header == "idempotency-key"


@pytest.mark.parametrize("path", ["hooks", "/", "/hooks/", "/a//b", "/a?b", "/a/../b", "/a%2Fb"])
def test_bad_paths_are_rejected(path):
    with pytest.raises(ValidationError, match="path"):
        endpoint(path=path)


def test_targets_need_unique_names_and_http_urls():
    with pytest.raises(ValidationError, match="repeated: orders"):
        endpoint(deliver_to=[TARGET, TARGET])
    with pytest.raises(ValidationError, match="http"):
        endpoint(deliver_to=[{"name": "x", "url": "ftp://host/file"}])
    with pytest.raises(ValidationError):
        endpoint(deliver_to=[])
    with pytest.raises(ValidationError, match="CR, LF"):
        endpoint(deliver_to=[{**TARGET, "headers": {"x-a": "1\r\nx-b: 2"}}])


def test_target_raw_headers_are_lower_case_bytes():
    ep = endpoint(deliver_to=[{**TARGET, "headers": {"Authorization": "Bearer t"}}])
    assert ep.deliver_to[0].raw_headers == [(b"authorization", b"Bearer t")]


def test_retry_policy_bounds():
    assert endpoint(retry={"schedule": []}).retry.max_attempts == 1
    with pytest.raises(ValidationError):
        endpoint(retry={"jitter": 1.0})
    with pytest.raises(ValidationError):
        endpoint(retry={"schedule": [5, -1]})


def test_endpoint_list_needs_unique_names_and_paths():
    adapter = TypeAdapter(WebhookEndpoints)
    one = endpoint().model_dump()
    one["verify"] = {"scheme": "github", "secrets": ["k"]}
    other = {**one, "name": "other", "path": "/hooks/other"}
    assert len(adapter.validate_python([one, other])) == 2
    with pytest.raises(ValidationError, match="names must be unique"):
        adapter.validate_python([one, {**other, "name": "github"}])
    with pytest.raises(ValidationError, match="paths must be unique"):
        adapter.validate_python([one, {**other, "path": "/hooks/github"}])


def test_unknown_fields_are_rejected():
    with pytest.raises(ValidationError, match="extra"):
        endpoint(retries=3)

import base64
import hashlib
import hmac
import json

import pytest
from pydantic import TypeAdapter

from app.config.webhooks import Dedupe, VerifyConfig
from app.webhooks.signatures import (
    BadSignature,
    FutureTimestamp,
    MalformedHeader,
    MissingHeader,
    SignatureError,
    StaleTimestamp,
    build_verifier,
    provider_event_id,
)

VERIFY = TypeAdapter(VerifyConfig)

# Published vectors: Standard Webhooks spec, GitHub docs, Slack docs.
STD_SECRET = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
STD_ID = "msg_p5jXN8AQM9LWM0D4loKWxJek"
STD_TS = 1614265330
STD_BODY = b'{"test": 2432232314}'
STD_SIG = "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE="

GH_SECRET = "It's a Secret to Everybody"
GH_BODY = b"Hello, World!"
GH_SIG = "sha256=757107ea0eb2509fc211221cce984b8a37570b6d7586c22c46f4379c8b043e17"

SLACK_SECRET = "8f742231b10e8888abcd99yyyzzz85a5"
SLACK_TS = 1531420618
SLACK_BODY = (
    b"token=xyzz0WbapA4vBCDEFasx0q6G&team_id=T1DC2JH3J&team_domain=testteamnow&channel_id=G8PSS9T3V"
    b"&channel_name=foobar&user_id=U2CERLKJA&user_name=roadrunner&command=%2Fwebhook-collect&text="
    b"&response_url=https%3A%2F%2Fhooks.slack.com%2Fcommands%2FT1DC2JH3J%2F397700885554"
    b"%2F96rGlfmibIGlgcZRskXaIFfN&trigger_id=398738663015.47445629121.803a0bc887a14d10d2c447fce8b6703c"
)
SLACK_SIG = "v0=a2114d57b48eac39b9ad189dd8316235a7b4a8d21a10bd27519666489c69b503"

STRIPE_SECRET = "whsec_test_3fa85f64b2c7"
NOW = 1_700_000_000


def verifier(**config):
    return build_verifier(VERIFY.validate_python(config))


def hdrs(**values: str) -> list[tuple[bytes, bytes]]:
    return [(name.replace("_", "-").lower().encode(), value.encode()) for name, value in values.items()]


def raw(*pairs: tuple[str, str]) -> list[tuple[bytes, bytes]]:
    return [(name.encode(), value.encode()) for name, value in pairs]


def std_sign(secret: str, msg_id: str, ts: int, body: bytes) -> str:
    key = base64.b64decode(secret.removeprefix("whsec_"))
    digest = hmac.new(key, f"{msg_id}.{ts}.".encode() + body, hashlib.sha256).digest()
    return "v1," + base64.b64encode(digest).decode()


def stripe_sign(secret: str, ts: int, body: bytes) -> str:
    return hmac.new(secret.encode(), f"{ts}.".encode() + body, hashlib.sha256).hexdigest()


def slack_sign(secret: str, ts: int, body: bytes) -> str:
    return "v0=" + hmac.new(secret.encode(), f"v0:{ts}:".encode() + body, hashlib.sha256).hexdigest()


# --- Standard Webhooks -------------------------------------------------------


def std_headers(sig=STD_SIG, ts=STD_TS, msg_id=STD_ID, family="webhook"):
    return raw((f"{family}-id", msg_id), (f"{family}-timestamp", str(ts)), (f"{family}-signature", sig))


def test_standard_published_vector_verifies_at_its_timestamp():
    verifier(scheme="standard", secrets=[STD_SECRET]).verify(std_headers(), STD_BODY, now=STD_TS)


def test_standard_accepts_svix_header_names():
    verifier(scheme="standard", secrets=[STD_SECRET]).verify(std_headers(family="svix"), STD_BODY, now=STD_TS)


def test_standard_accepts_mixed_case_header_names():
    headers = raw(("Webhook-Id", STD_ID), ("Webhook-Timestamp", str(STD_TS)), ("Webhook-Signature", STD_SIG))
    verifier(scheme="standard", secrets=[STD_SECRET]).verify(headers, STD_BODY, now=STD_TS)


def test_standard_secret_without_prefix_is_the_same_key():
    bare = STD_SECRET.removeprefix("whsec_")
    verifier(scheme="standard", secrets=[bare]).verify(std_headers(), STD_BODY, now=STD_TS)


def test_standard_tampered_body_is_bad_signature():
    with pytest.raises(BadSignature):
        verifier(scheme="standard", secrets=[STD_SECRET]).verify(std_headers(), b'{"test": 2432232315}', now=STD_TS)


def test_standard_other_message_id_is_bad_signature():
    with pytest.raises(BadSignature):
        verifier(scheme="standard", secrets=[STD_SECRET]).verify(std_headers(msg_id="msg_other"), STD_BODY, now=STD_TS)


def test_standard_timestamp_within_tolerance_verifies():
    v = verifier(scheme="standard", secrets=[STD_SECRET])
    v.verify(std_headers(), STD_BODY, now=STD_TS + 300)
    v.verify(std_headers(), STD_BODY, now=STD_TS - 300)


def test_standard_stale_timestamp_is_rejected_before_signature():
    with pytest.raises(StaleTimestamp, match="301 s old"):
        verifier(scheme="standard", secrets=[STD_SECRET]).verify(std_headers(), STD_BODY, now=STD_TS + 301)


def test_standard_future_timestamp_is_rejected():
    with pytest.raises(FutureTimestamp, match="ahead"):
        verifier(scheme="standard", secrets=[STD_SECRET]).verify(std_headers(), STD_BODY, now=STD_TS - 301)


def test_standard_tolerance_is_configurable():
    v = verifier(scheme="standard", secrets=[STD_SECRET], tolerance_seconds=10)
    with pytest.raises(StaleTimestamp):
        v.verify(std_headers(), STD_BODY, now=STD_TS + 11)


def test_standard_rotated_secrets_any_may_match():
    new = "whsec_" + base64.b64encode(b"a brand new key of 24 b!").decode()
    v = verifier(scheme="standard", secrets=[new, STD_SECRET])
    v.verify(std_headers(), STD_BODY, now=STD_TS)
    v.verify(std_headers(sig=std_sign(new, STD_ID, STD_TS, STD_BODY)), STD_BODY, now=STD_TS)
    with pytest.raises(BadSignature):
        verifier(scheme="standard", secrets=[new]).verify(std_headers(), STD_BODY, now=STD_TS)


def test_standard_several_signatures_any_may_match():
    bogus = "v1," + base64.b64encode(b"x" * 32).decode()
    sig = f"{bogus} v1a,c29tZXRoaW5nIGVsc2U= {STD_SIG}"
    verifier(scheme="standard", secrets=[STD_SECRET]).verify(std_headers(sig=sig), STD_BODY, now=STD_TS)


def test_standard_only_wrong_signatures_is_bad_signature():
    bogus = "v1," + base64.b64encode(b"x" * 32).decode()
    with pytest.raises(BadSignature):
        verifier(scheme="standard", secrets=[STD_SECRET]).verify(
            std_headers(sig=f"{bogus} {bogus}"), STD_BODY, now=STD_TS
        )


@pytest.mark.parametrize("missing", ["webhook-id", "webhook-timestamp", "webhook-signature"])
def test_standard_missing_header_names_it(missing):
    headers = [pair for pair in std_headers() if pair[0] != missing.encode()]
    with pytest.raises(MissingHeader, match=missing):
        verifier(scheme="standard", secrets=[STD_SECRET]).verify(headers, STD_BODY, now=STD_TS)


@pytest.mark.parametrize(
    ("ts", "sig"),
    [
        ("yesterday", STD_SIG),
        ("-1614265330", STD_SIG),
        ("1614265330.5", STD_SIG),
        (str(STD_TS), "g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE="),
        (str(STD_TS), "v1a,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE="),
        (str(STD_TS), "v1,not*base64!"),
        (str(STD_TS), "v1,"),
    ],
)
def test_standard_malformed_headers(ts, sig):
    with pytest.raises(MalformedHeader):
        verifier(scheme="standard", secrets=[STD_SECRET]).verify(std_headers(sig=sig, ts=ts), STD_BODY, now=STD_TS)


def test_repeated_signature_header_is_malformed():
    headers = [*std_headers(), (b"webhook-signature", STD_SIG.encode())]
    with pytest.raises(MalformedHeader, match="repeated"):
        verifier(scheme="standard", secrets=[STD_SECRET]).verify(headers, STD_BODY, now=STD_TS)


# --- GitHub -----------------------------------------------------------------


def test_github_published_vector_verifies():
    verifier(scheme="github", secrets=[GH_SECRET]).verify(raw(("x-hub-signature-256", GH_SIG)), GH_BODY, now=NOW)


def test_github_upper_case_hex_verifies():
    verifier(scheme="github", secrets=[GH_SECRET]).verify(
        raw(("X-Hub-Signature-256", "sha256=" + GH_SIG[7:].upper())), GH_BODY, now=NOW
    )


def test_github_tampered_body_is_bad_signature():
    with pytest.raises(BadSignature):
        verifier(scheme="github", secrets=[GH_SECRET]).verify(
            raw(("x-hub-signature-256", GH_SIG)), b"Hello, World?", now=NOW
        )


def test_github_rotated_secrets_any_may_match():
    headers = raw(("x-hub-signature-256", GH_SIG))
    verifier(scheme="github", secrets=["the new one", GH_SECRET]).verify(headers, GH_BODY, now=NOW)
    with pytest.raises(BadSignature):
        verifier(scheme="github", secrets=["the new one"]).verify(headers, GH_BODY, now=NOW)


def test_github_missing_header():
    with pytest.raises(MissingHeader, match="x-hub-signature-256"):
        verifier(scheme="github", secrets=[GH_SECRET]).verify(raw(("x-hub-signature", "sha1=abc")), GH_BODY, now=NOW)


@pytest.mark.parametrize(
    "sig",
    [
        GH_SIG[7:],
        "sha1=" + GH_SIG[7:],
        "sha256=" + GH_SIG[7:-2],
        "sha256=" + GH_SIG[7:-1] + "g",
        "sha256=" + " ".join(GH_SIG[7:][i : i + 2] for i in range(0, 64, 2)),
        "sha256=",
    ],
)
def test_github_malformed_header(sig):
    with pytest.raises(MalformedHeader):
        verifier(scheme="github", secrets=[GH_SECRET]).verify(raw(("x-hub-signature-256", sig)), GH_BODY, now=NOW)


# --- Stripe -----------------------------------------------------------------

STRIPE_BODY = b'{"id": "evt_1NG8Du2eZvKYlo2CUI79vXWy", "object": "event", "type": "charge.succeeded"}'


def stripe_headers(value: str):
    return raw(("stripe-signature", value))


def test_stripe_signature_verifies():
    sig = stripe_sign(STRIPE_SECRET, NOW, STRIPE_BODY)
    verifier(scheme="stripe", secrets=[STRIPE_SECRET]).verify(
        stripe_headers(f"t={NOW},v1={sig}"), STRIPE_BODY, now=NOW + 10
    )


def test_stripe_whole_whsec_string_is_the_key():
    decoded = base64.b64decode(STRIPE_SECRET.removeprefix("whsec_") + "==")
    sig = hmac.new(decoded, f"{NOW}.".encode() + STRIPE_BODY, hashlib.sha256).hexdigest()
    with pytest.raises(BadSignature):
        verifier(scheme="stripe", secrets=[STRIPE_SECRET]).verify(
            stripe_headers(f"t={NOW},v1={sig}"), STRIPE_BODY, now=NOW
        )


def test_stripe_several_v1_signatures_and_v0_any_may_match():
    good = stripe_sign(STRIPE_SECRET, NOW, STRIPE_BODY)
    value = f"t={NOW},v1={'0' * 64},v0={'1' * 64},v1={good}"
    verifier(scheme="stripe", secrets=[STRIPE_SECRET]).verify(stripe_headers(value), STRIPE_BODY, now=NOW)


def test_stripe_v0_alone_does_not_verify():
    sig = stripe_sign(STRIPE_SECRET, NOW, STRIPE_BODY)
    with pytest.raises(MalformedHeader, match="v1"):
        verifier(scheme="stripe", secrets=[STRIPE_SECRET]).verify(
            stripe_headers(f"t={NOW},v0={sig}"), STRIPE_BODY, now=NOW
        )


def test_stripe_tampered_body_is_bad_signature():
    sig = stripe_sign(STRIPE_SECRET, NOW, STRIPE_BODY)
    with pytest.raises(BadSignature):
        verifier(scheme="stripe", secrets=[STRIPE_SECRET]).verify(
            stripe_headers(f"t={NOW},v1={sig}"), STRIPE_BODY + b" ", now=NOW
        )


def test_stripe_changed_timestamp_is_bad_signature():
    sig = stripe_sign(STRIPE_SECRET, NOW, STRIPE_BODY)
    with pytest.raises(BadSignature):
        verifier(scheme="stripe", secrets=[STRIPE_SECRET]).verify(
            stripe_headers(f"t={NOW + 1},v1={sig}"), STRIPE_BODY, now=NOW
        )


def test_stripe_stale_and_future_timestamps():
    v = verifier(scheme="stripe", secrets=[STRIPE_SECRET])
    sig = stripe_sign(STRIPE_SECRET, NOW, STRIPE_BODY)
    v.verify(stripe_headers(f"t={NOW},v1={sig}"), STRIPE_BODY, now=NOW + 300)
    with pytest.raises(StaleTimestamp):
        v.verify(stripe_headers(f"t={NOW},v1={sig}"), STRIPE_BODY, now=NOW + 301)
    with pytest.raises(FutureTimestamp):
        v.verify(stripe_headers(f"t={NOW},v1={sig}"), STRIPE_BODY, now=NOW - 301)


def test_stripe_rotated_secrets_any_may_match():
    old, new = "whsec_old_one", "whsec_new_one"
    v = verifier(scheme="stripe", secrets=[new, old])
    for secret in (old, new):
        sig = stripe_sign(secret, NOW, STRIPE_BODY)
        v.verify(stripe_headers(f"t={NOW},v1={sig}"), STRIPE_BODY, now=NOW)


def test_stripe_missing_header():
    with pytest.raises(MissingHeader, match="stripe-signature"):
        verifier(scheme="stripe", secrets=[STRIPE_SECRET]).verify([], STRIPE_BODY, now=NOW)


@pytest.mark.parametrize(
    "value",
    [
        "v1=" + "a" * 64,
        f"t={NOW}",
        f"t={NOW},t={NOW},v1={'a' * 64}",
        f"t=soon,v1={'a' * 64}",
        f"t={NOW},v1=xyz",
        f"t={NOW};v1={'a' * 64}",
        "garbage",
    ],
)
def test_stripe_malformed_header(value):
    with pytest.raises(MalformedHeader):
        verifier(scheme="stripe", secrets=[STRIPE_SECRET]).verify(stripe_headers(value), STRIPE_BODY, now=NOW)


# --- Slack ------------------------------------------------------------------


def slack_headers(sig=SLACK_SIG, ts=SLACK_TS):
    return raw(("x-slack-signature", sig), ("x-slack-request-timestamp", str(ts)))


def test_slack_published_vector_verifies_at_its_timestamp():
    verifier(scheme="slack", secrets=[SLACK_SECRET]).verify(slack_headers(), SLACK_BODY, now=SLACK_TS)


def test_slack_tampered_body_is_bad_signature():
    with pytest.raises(BadSignature):
        verifier(scheme="slack", secrets=[SLACK_SECRET]).verify(
            slack_headers(), SLACK_BODY.replace(b"foobar", b"foobaz"), now=SLACK_TS
        )


def test_slack_stale_and_future_timestamps():
    v = verifier(scheme="slack", secrets=[SLACK_SECRET])
    with pytest.raises(StaleTimestamp):
        v.verify(slack_headers(), SLACK_BODY, now=SLACK_TS + 301)
    with pytest.raises(FutureTimestamp):
        v.verify(slack_headers(), SLACK_BODY, now=SLACK_TS - 301)


def test_slack_rotated_secrets_any_may_match():
    v = verifier(scheme="slack", secrets=["rotated-in", SLACK_SECRET])
    v.verify(slack_headers(), SLACK_BODY, now=SLACK_TS)
    v.verify(slack_headers(sig=slack_sign("rotated-in", NOW, b"{}"), ts=NOW), b"{}", now=NOW)


@pytest.mark.parametrize("missing", ["x-slack-signature", "x-slack-request-timestamp"])
def test_slack_missing_header(missing):
    headers = [pair for pair in slack_headers() if pair[0] != missing.encode()]
    with pytest.raises(MissingHeader, match=missing):
        verifier(scheme="slack", secrets=[SLACK_SECRET]).verify(headers, SLACK_BODY, now=SLACK_TS)


@pytest.mark.parametrize(
    ("sig", "ts"),
    [
        ("v1=" + SLACK_SIG[3:], str(SLACK_TS)),
        (SLACK_SIG[3:], str(SLACK_TS)),
        (SLACK_SIG[:-4], str(SLACK_TS)),
        (SLACK_SIG, "1531420618.0"),
        (SLACK_SIG, "now"),
    ],
)
def test_slack_malformed_header(sig, ts):
    with pytest.raises(MalformedHeader):
        verifier(scheme="slack", secrets=[SLACK_SECRET]).verify(slack_headers(sig, ts), SLACK_BODY, now=SLACK_TS)


# --- Generic HMAC and none ----------------------------------------------------


@pytest.mark.parametrize("algorithm", ["sha1", "sha256", "sha512"])
@pytest.mark.parametrize("encoding", ["hex", "base64"])
@pytest.mark.parametrize("prefix", ["", "sha=", "hmac "])
def test_hmac_every_algorithm_encoding_and_prefix_verifies(algorithm, encoding, prefix):
    digest = hmac.new(b"s3cret", b"payload", algorithm).digest()
    encoded = digest.hex() if encoding == "hex" else base64.b64encode(digest).decode()
    v = verifier(
        scheme="hmac",
        secrets=["s3cret"],
        header="X-Signature",
        algorithm=algorithm,
        encoding=encoding,
        prefix=prefix,
    )
    v.verify(raw(("x-signature", prefix + encoded)), b"payload", now=NOW)
    with pytest.raises(BadSignature):
        v.verify(raw(("x-signature", prefix + encoded)), b"payload!", now=NOW)


def test_hmac_rotated_secrets_any_may_match():
    v = verifier(scheme="hmac", secrets=["new", "old"], header="x-sig")
    for secret in (b"old", b"new"):
        v.verify(raw(("x-sig", hmac.new(secret, b"x", "sha256").hexdigest())), b"x", now=NOW)
    with pytest.raises(BadSignature):
        v.verify(raw(("x-sig", hmac.new(b"older", b"x", "sha256").hexdigest())), b"x", now=NOW)


def test_hmac_missing_and_malformed_header():
    v = verifier(scheme="hmac", secrets=["k"], header="x-sig", prefix="sha256=")
    good = hmac.new(b"k", b"x", "sha256").hexdigest()
    with pytest.raises(MissingHeader, match="x-sig"):
        v.verify([], b"x", now=NOW)
    with pytest.raises(MalformedHeader, match="prefix"):
        v.verify(raw(("x-sig", good)), b"x", now=NOW)
    with pytest.raises(MalformedHeader, match="sha256"):
        v.verify(raw(("x-sig", "sha256=" + good[:-2])), b"x", now=NOW)
    with pytest.raises(MalformedHeader):
        v.verify(raw(("x-sig", "sha256=" + hmac.new(b"k", b"x", "sha1").hexdigest())), b"x", now=NOW)


def test_none_scheme_accepts_anything():
    verifier(scheme="none").verify([], b"anything", now=NOW)


# --- Errors never reveal secrets ---------------------------------------------


def test_errors_say_which_check_failed():
    assert {cls.check for cls in (MissingHeader, MalformedHeader, StaleTimestamp, FutureTimestamp, BadSignature)} == {
        "missing-header",
        "malformed-header",
        "stale-timestamp",
        "future-timestamp",
        "bad-signature",
    }
    assert all(issubclass(cls, SignatureError) for cls in (MissingHeader, BadSignature))


def test_bad_signature_message_and_verifier_repr_hide_secrets():
    v = verifier(scheme="github", secrets=["first-secret", "second-secret"])
    with pytest.raises(BadSignature) as caught:
        v.verify(raw(("x-hub-signature-256", GH_SIG)), GH_BODY, now=NOW)
    assert "secret" not in str(caught.value)
    assert "first" not in repr(v) and "second" not in repr(v)
    std = verifier(scheme="standard", secrets=[STD_SECRET])
    assert "MfKQ9r8G" not in repr(std)
    assert "1\\xf2" not in repr(std)


# --- Provider event ids --------------------------------------------------------

ON = Dedupe()


def config(**values):
    return VERIFY.validate_python(values)


def test_event_id_from_standard_and_svix_headers():
    std = config(scheme="standard", secrets=[STD_SECRET])
    assert provider_event_id(std, ON, std_headers(), STD_BODY) == STD_ID
    assert provider_event_id(std, ON, std_headers(family="svix"), STD_BODY) == STD_ID


def test_event_id_from_github_delivery_header():
    gh = config(scheme="github", secrets=["k"])
    headers = raw(("X-GitHub-Delivery", "72d3162e-cc78-11e3-81ab-4c9367dc0958"))
    assert provider_event_id(gh, ON, headers, b"{}") == "72d3162e-cc78-11e3-81ab-4c9367dc0958"
    assert provider_event_id(gh, ON, [], b"{}") is None


def test_event_id_from_stripe_body_id():
    stripe = config(scheme="stripe", secrets=["k"])
    assert provider_event_id(stripe, ON, [], STRIPE_BODY) == "evt_1NG8Du2eZvKYlo2CUI79vXWy"
    assert provider_event_id(stripe, ON, [], b"not json") is None
    assert provider_event_id(stripe, ON, [], b'["id"]') is None
    assert provider_event_id(stripe, ON, [], b'{"id": 12}') is None


def test_event_id_from_slack_body_event_id():
    slack = config(scheme="slack", secrets=["k"])
    body = json.dumps({"type": "event_callback", "event_id": "Ev08MFMKH6"}).encode()
    assert provider_event_id(slack, ON, [], body) == "Ev08MFMKH6"
    assert provider_event_id(slack, ON, [], b'{"type": "url_verification", "challenge": "x"}') is None
    assert provider_event_id(slack, ON, [], SLACK_BODY) is None


def test_configured_header_overrides_scheme_source():
    gh = config(scheme="github", secrets=["k"])
    headers = raw(("x-github-delivery", "gh-1"), ("x-request-id", "req-9"))
    assert provider_event_id(gh, Dedupe(header="X-Request-Id"), headers, b"") == "req-9"
    hmac_config = config(scheme="hmac", secrets=["k"], header="x-sig")
    assert provider_event_id(hmac_config, Dedupe(header="x-request-id"), headers, b"") == "req-9"
    assert provider_event_id(hmac_config, ON, headers, b"") is None


def test_disabled_dedupe_has_no_event_id():
    gh = config(scheme="github", secrets=["k"])
    assert provider_event_id(gh, Dedupe(enabled=False), raw(("x-github-delivery", "gh-1")), b"") is None


def test_overlong_event_id_is_hashed_so_it_still_dedupes():
    gh = config(scheme="github", secrets=["k"])
    long_id = "x" * 500
    result = provider_event_id(gh, ON, raw(("x-github-delivery", long_id)), b"")
    assert result == "sha256:" + hashlib.sha256(long_id.encode()).hexdigest()
    assert len(result) < 200

"""Webhook signature verification and provider event ids. Pure: no I/O, no FastAPI.

``build_verifier(config)`` turns a ``verify`` setting into a ``Verifier`` once at
start-up (keys decoded, header names lower-cased); ``Verifier.verify(headers,
body, now=...)`` returns or raises a ``SignatureError`` naming the check that
failed, never the secret::

    SignatureError
    ├── MissingHeader      a required header is absent
    ├── MalformedHeader    a header is present but cannot be parsed
    ├── StaleTimestamp     signed longer ago than the tolerance
    ├── FutureTimestamp    signed further ahead than the tolerance
    └── BadSignature       no signature matches any configured secret

Headers are raw ASGI pairs, ``(lower-case name, value)`` in bytes. Every secret
is compared with every offered signature in constant time, without stopping at
the first match, so neither timing nor errors tell which secret matched.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import json
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import ClassVar, Protocol

from pydantic import SecretStr

from app.config.webhooks import (
    Dedupe,
    GitHubVerify,
    HmacVerify,
    NoVerify,
    SlackVerify,
    StandardVerify,
    StripeVerify,
    VerifyConfig,
    decode_standard_secret,
)
from app.wire import header_values

RawHeaders = Sequence[tuple[bytes, bytes]]
MAX_EVENT_ID_LENGTH = 200
_HEX = re.compile(r"(?:[0-9a-fA-F]{2})+")


class SignatureError(Exception):
    """The request is not an authentic, fresh webhook; ``check`` says which test failed."""

    check: ClassVar[str] = "signature"


class MissingHeader(SignatureError):
    check = "missing-header"


class MalformedHeader(SignatureError):
    check = "malformed-header"


class StaleTimestamp(SignatureError):
    check = "stale-timestamp"


class FutureTimestamp(SignatureError):
    check = "future-timestamp"


class BadSignature(SignatureError):
    check = "bad-signature"


class Verifier(Protocol):
    def verify(self, headers: RawHeaders, body: bytes, *, now: float) -> None:
        """Return if the request is authentic and fresh at ``now`` (Unix seconds), else raise."""


def header(headers: RawHeaders, name: str) -> str | None:
    """The value of header ``name`` (lower-case), or None; a repeated header is malformed."""
    values = header_values(headers, name.encode("latin-1"))
    if not values:
        return None
    if len(values) > 1:
        raise MalformedHeader(f"header {name} is repeated")
    return values[0].decode("latin-1").strip()


def _require(headers: RawHeaders, name: str) -> str:
    value = header(headers, name)
    if value is None or value == "":
        raise MissingHeader(f"missing header {name}")
    return value


def _check_timestamp(raw: str, header_name: str, tolerance: int, now: float) -> bytes:
    """The timestamp as sent (signatures cover the raw string), if fresh at ``now``."""
    if not raw.isascii() or not raw.isdigit() or len(raw) > 12:
        raise MalformedHeader(f"header {header_name}: timestamp is not Unix seconds")
    timestamp = int(raw)
    if now - timestamp > tolerance:
        raise StaleTimestamp(f"timestamp is {int(now - timestamp)} s old, tolerance {tolerance} s")
    if timestamp - now > tolerance:
        raise FutureTimestamp(f"timestamp is {int(timestamp - now)} s ahead, tolerance {tolerance} s")
    return raw.encode("ascii")


def _any_match(keys: Sequence[bytes], digestmod: str, message: bytes, candidates: Sequence[bytes]) -> bool:
    matched = False
    for key in keys:
        expected = hmac.new(key, message, digestmod).digest()
        for candidate in candidates:
            matched |= hmac.compare_digest(expected, candidate)
    return matched


def _unhex(value: str) -> bytes | None:
    # Strict: bytes.fromhex alone would also accept spaces between digit pairs.
    return bytes.fromhex(value) if _HEX.fullmatch(value) else None


def _unbase64(value: str) -> bytes | None:
    try:
        return base64.b64decode(value, validate=True)
    except (binascii.Error, ValueError):
        return None


@dataclass(frozen=True)
class StandardWebhooksVerifier:
    """Standard Webhooks v1: ``{id}.{timestamp}.{body}``, base64 HMAC-SHA256, ``v1,<sig>`` list."""

    keys: tuple[bytes, ...] = field(repr=False)
    tolerance: int = 300

    def verify(self, headers: RawHeaders, body: bytes, *, now: float) -> None:
        family = "webhook"
        if header(headers, "webhook-signature") is None and header(headers, "svix-signature") is not None:
            family = "svix"
        msg_id = _require(headers, f"{family}-id")
        raw_timestamp = _require(headers, f"{family}-timestamp")
        raw_signatures = _require(headers, f"{family}-signature")
        timestamp = _check_timestamp(raw_timestamp, f"{family}-timestamp", self.tolerance, now)
        candidates: list[bytes] = []
        for entry in raw_signatures.split():
            version, _, encoded = entry.partition(",")
            if version == "v1" and (decoded := _unbase64(encoded)) is not None and len(decoded) == 32:
                candidates.append(decoded)
        if not candidates:
            raise MalformedHeader(f"header {family}-signature: no v1,<base64> signature")
        message = b"%s.%s.%s" % (msg_id.encode("latin-1"), timestamp, body)
        if not _any_match(self.keys, "sha256", message, candidates):
            raise BadSignature("no signature matches")


@dataclass(frozen=True)
class GitHubVerifier:
    """GitHub: ``X-Hub-Signature-256: sha256=<hex HMAC-SHA256 of the body>``."""

    keys: tuple[bytes, ...] = field(repr=False)

    def verify(self, headers: RawHeaders, body: bytes, *, now: float) -> None:  # noqa: ARG002
        raw = _require(headers, "x-hub-signature-256")
        prefix, _, encoded = raw.partition("=")
        digest = _unhex(encoded)
        if prefix != "sha256" or digest is None or len(digest) != 32:
            raise MalformedHeader("header x-hub-signature-256: expected sha256=<64 hex digits>")
        if not _any_match(self.keys, "sha256", body, [digest]):
            raise BadSignature("no signature matches")


@dataclass(frozen=True)
class StripeVerifier:
    """Stripe: ``Stripe-Signature: t=<ts>,v1=<hex>[,v1=<hex>]`` over ``{t}.{body}``."""

    keys: tuple[bytes, ...] = field(repr=False)
    tolerance: int = 300

    def verify(self, headers: RawHeaders, body: bytes, *, now: float) -> None:
        raw = _require(headers, "stripe-signature")
        timestamps: list[str] = []
        candidates: list[bytes] = []
        for item in raw.split(","):
            key, sep, value = item.strip().partition("=")
            if not sep:
                raise MalformedHeader("header stripe-signature: expected key=value pairs")
            if key == "t":
                timestamps.append(value)
            elif key == "v1" and (digest := _unhex(value)) is not None and len(digest) == 32:
                candidates.append(digest)
        if len(timestamps) != 1:
            raise MalformedHeader("header stripe-signature: expected exactly one t=<timestamp>")
        if not candidates:
            raise MalformedHeader("header stripe-signature: no v1=<hex> signature")
        timestamp = _check_timestamp(timestamps[0], "stripe-signature", self.tolerance, now)
        if not _any_match(self.keys, "sha256", b"%s.%s" % (timestamp, body), candidates):
            raise BadSignature("no signature matches")


@dataclass(frozen=True)
class SlackVerifier:
    """Slack: ``X-Slack-Signature: v0=<hex>`` over ``v0:{X-Slack-Request-Timestamp}:{body}``."""

    keys: tuple[bytes, ...] = field(repr=False)
    tolerance: int = 300

    def verify(self, headers: RawHeaders, body: bytes, *, now: float) -> None:
        raw_timestamp = _require(headers, "x-slack-request-timestamp")
        raw = _require(headers, "x-slack-signature")
        version, _, encoded = raw.partition("=")
        digest = _unhex(encoded)
        if version != "v0" or digest is None or len(digest) != 32:
            raise MalformedHeader("header x-slack-signature: expected v0=<64 hex digits>")
        timestamp = _check_timestamp(raw_timestamp, "x-slack-request-timestamp", self.tolerance, now)
        if not _any_match(self.keys, "sha256", b"v0:%s:%s" % (timestamp, body), [digest]):
            raise BadSignature("no signature matches")


@dataclass(frozen=True)
class HmacVerifier:
    """One header holding ``prefix + hex|base64(HMAC(secret, body))``."""

    keys: tuple[bytes, ...] = field(repr=False)
    header: str
    algorithm: str = "sha256"
    encoding: str = "hex"
    prefix: str = ""

    def verify(self, headers: RawHeaders, body: bytes, *, now: float) -> None:  # noqa: ARG002
        raw = _require(headers, self.header)
        if not raw.startswith(self.prefix):
            raise MalformedHeader(f"header {self.header}: expected prefix {self.prefix!r}")
        encoded = raw[len(self.prefix) :]
        digest = _unhex(encoded) if self.encoding == "hex" else _unbase64(encoded)
        if digest is None or len(digest) != hashlib.new(self.algorithm).digest_size:
            raise MalformedHeader(f"header {self.header}: expected a {self.encoding} {self.algorithm} digest")
        if not _any_match(self.keys, self.algorithm, body, [digest]):
            raise BadSignature("no signature matches")


@dataclass(frozen=True)
class NoVerifier:
    def verify(self, headers: RawHeaders, body: bytes, *, now: float) -> None:  # noqa: ARG002
        return None


def build_verifier(config: VerifyConfig) -> Verifier:
    """The verifier for one endpoint's ``verify`` setting; build it once at start-up."""
    match config:
        case StandardVerify():
            keys = tuple(decode_standard_secret(s.get_secret_value()) for s in config.secrets)
            return StandardWebhooksVerifier(keys, config.tolerance_seconds)
        case GitHubVerify():
            return GitHubVerifier(_utf8_keys(config.secrets))
        case StripeVerify():
            return StripeVerifier(_utf8_keys(config.secrets), config.tolerance_seconds)
        case SlackVerify():
            return SlackVerifier(_utf8_keys(config.secrets), config.tolerance_seconds)
        case HmacVerify():
            keys = _utf8_keys(config.secrets)
            return HmacVerifier(keys, config.header, config.algorithm, config.encoding, config.prefix)
        case NoVerify():
            return NoVerifier()


def _utf8_keys(secrets: Sequence[SecretStr]) -> tuple[bytes, ...]:
    return tuple(s.get_secret_value().encode() for s in secrets)


def provider_event_id(config: VerifyConfig, dedupe: Dedupe, headers: RawHeaders, body: bytes) -> str | None:
    """The provider's id for this event (for dedupe), or None when it has none or dedupe is off.

    A configured ``dedupe.header`` wins; otherwise the scheme's own source. Ids
    longer than ``MAX_EVENT_ID_LENGTH`` are replaced by their SHA-256, so they
    still dedupe but fit the store's column.
    """
    if not dedupe.enabled:
        return None
    if dedupe.header is not None:
        found = header(headers, dedupe.header)
    else:
        match config:
            case StandardVerify():
                found = header(headers, "webhook-id") or header(headers, "svix-id")
            case GitHubVerify():
                found = header(headers, "x-github-delivery")
            case StripeVerify():
                found = _json_string_field(body, "id")
            case SlackVerify():
                found = _json_string_field(body, "event_id")
            case _:
                found = None
    if not found:
        return None
    if len(found) > MAX_EVENT_ID_LENGTH:
        return "sha256:" + hashlib.sha256(found.encode("utf-8", "surrogateescape")).hexdigest()
    return found


def _json_string_field(body: bytes, name: str) -> str | None:
    try:
        document = json.loads(body)
    except (ValueError, UnicodeDecodeError):
        return None
    value = document.get(name) if isinstance(document, dict) else None
    return value if isinstance(value, str) else None

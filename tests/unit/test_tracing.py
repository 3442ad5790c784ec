"""Tracing set-up: off costs nothing; on builds a tracer only with the SDK."""

from __future__ import annotations

from app.observability.tracing import Tracer, build_tracer


def test_tracing_none_builds_no_tracer_and_console_builds_one():
    assert build_tracer("none") is None
    assert isinstance(build_tracer("console"), Tracer)

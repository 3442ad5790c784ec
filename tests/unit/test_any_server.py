"""``ServerAdoption``'s pure parts: uvicorn's proxy-header middleware taken out of any chain, or a refusal."""

from __future__ import annotations

from types import SimpleNamespace

from uvicorn.middleware.message_logger import MessageLoggerMiddleware
from uvicorn.middleware.proxy_headers import ProxyHeadersMiddleware

from app.assembly.drain import Drain
from app.config.settings import Settings
from app.serving import any_server
from app.serving.any_server import CANNOT_DISABLE, ServerAdoption, reaches, without_proxy_headers


async def inner(scope, receive, send):  # pragma: no cover - never called
    pass


def test_proxy_headers_are_taken_out_wherever_they_sit_above_the_app():
    adoption = ServerAdoption(inner, Drain())
    chain = ProxyHeadersMiddleware(MessageLoggerMiddleware(ProxyHeadersMiddleware(adoption)))  # type: ignore[arg-type]
    assert not reaches(chain, adoption)
    stripped = without_proxy_headers(chain, adoption)
    assert isinstance(stripped, MessageLoggerMiddleware) and stripped.app is adoption
    assert reaches(stripped, adoption)


class Opaque:
    """A wrapper that does not expose what it wraps."""

    def __init__(self, app):
        self._wrapped = app


def test_start_up_is_refused_naming_the_flag_when_the_proxy_headers_cannot_be_removed(monkeypatch):
    adoption = ServerAdoption(inner, Drain())
    config = SimpleNamespace(proxy_headers=True, forwarded_allow_ips="127.0.0.1")
    config.loaded_app = ProxyHeadersMiddleware(Opaque(ProxyHeadersMiddleware(adoption)))  # type: ignore[arg-type]
    monkeypatch.setattr(any_server, "running_uvicorn_server", lambda: SimpleNamespace(config=config))
    refusal = adoption.adopt(Settings())
    assert refusal == CANNOT_DISABLE
    assert "--no-proxy-headers" in refusal


def test_under_another_server_nothing_is_changed(monkeypatch):
    monkeypatch.setattr(any_server, "running_uvicorn_server", lambda: None)
    assert ServerAdoption(inner, Drain()).adopt(Settings()) is None

"""``ServerAdoption``'s pure parts: uvicorn's proxy-header middleware taken out of any chain, or a refusal."""

from __future__ import annotations

from types import SimpleNamespace

from uvicorn.middleware.message_logger import MessageLoggerMiddleware
from uvicorn.middleware.proxy_headers import ProxyHeadersMiddleware

from app.assembly.drain import Drain
from app.config.settings import Settings
from app.serving import any_server
from app.serving.any_server import (
    CANNOT_DISABLE,
    ServerAdoption,
    reaches,
    use_gatehouse_protocols,
    without_proxy_headers,
)
from app.serving.http_protocol import GatehouseHttpProtocol


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


def test_either_stock_uvicorn_http_protocol_is_replaced_by_gatehouses():
    # any_server names uvicorn's protocol modules instead of importing them (h11 loads only if uvicorn chose it).
    from uvicorn.protocols.http.h11_impl import H11Protocol
    from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

    for stock in (H11Protocol, HttpToolsProtocol):
        config = SimpleNamespace(http_protocol_class=stock, ws_protocol_class=None)
        use_gatehouse_protocols(config)  # type: ignore[arg-type]
        assert config.http_protocol_class is GatehouseHttpProtocol


def test_a_custom_http_protocol_is_left_alone():
    class Custom:
        pass

    config = SimpleNamespace(http_protocol_class=Custom, ws_protocol_class=None)
    use_gatehouse_protocols(config)  # type: ignore[arg-type]
    assert config.http_protocol_class is Custom

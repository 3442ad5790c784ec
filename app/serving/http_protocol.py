"""The one HTTP/1.1 protocol class Gatehouse serves with under uvicorn.

uvicorn takes a protocol class as its ``http`` option. Several concerns need to
hook the connection below ASGI (what the request target was on the wire, slow
clients, response writes, WebSocket upgrades). Each lives in its own module as a
mixin over ``HttpToolsProtocol``; this module lists them in one place, in the
order they wrap each other, so there is one class and one place to read it.
"""

from __future__ import annotations

from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

from app.serving.coalescing import WriteCoalescing
from app.serving.cycle import OwnCycle
from app.serving.limits import ConnectionLimits
from app.serving.targets import RequestTargetMixin
from app.serving.tls_protocol import ClientCertificateMixin
from app.serving.upgrade import UnsupportedUpgrade


class GatehouseHttpProtocol(
    WriteCoalescing,
    ConnectionLimits,
    ClientCertificateMixin,
    UnsupportedUpgrade,
    RequestTargetMixin,
    OwnCycle,
    HttpToolsProtocol,
):
    """uvicorn's httptools protocol, with Gatehouse's connection-level mixins:

    - ``WriteCoalescing`` (``app.serving.coalescing``): writes of one loop turn in one syscall; outermost,
      so every other mixin writes through it.
    - ``ConnectionLimits`` (``app.serving.limits``): header timeout, keep-alive timeout, connection cap.
    - ``ClientCertificateMixin`` (``app.serving.tls_protocol``): the TLS client certificate in the scope.
    - ``UnsupportedUpgrade`` (``app.serving.upgrade``): ``Upgrade`` to anything but WebSocket.
    - ``RequestTargetMixin`` (``app.serving.targets``): keeps a target that is not origin-form
      (absolute-form) for the gateway.
    - ``OwnCycle`` (``app.serving.cycle``): each request's cycle writes a common response head with two
      checks in all, not two per field; innermost, as it replaces uvicorn's ``on_headers_complete``.
    """

"""Serving: the HTTP servers Gatehouse runs under, and what it needs from them.

``uvicorn_server`` holds the uvicorn options and the server that drains on a
shutdown signal and reloads on SIGHUP; ``signals`` the drain and reload signal
handling; ``http_protocol`` the one protocol class with its connection-level
mixins (``limits``: slow and surplus clients; ``cycle``: uvicorn's request-response
cycle with a cheaper response head; ``coalescing``: one write per event-loop turn),
``websocket_protocol`` (imported at the first upgrade: ``websocket_upgrade``) and ``tls``/``tls_protocol``
the WebSocket and TLS parts; ``ops_listener`` the
separate ops listener (``ops_listen``); ``workers`` the ``--workers``
supervisor, uvicorn's, whichever server the workers run. ``app.cli`` picks
and starts a server from here; ``app.main`` builds the app with what it needs
from here.

May import: ``app.config``, ``app.errors``, ``app.wire``, ``app.observability``, ``app.outbound``,
``app.proxy``, ``app.resilience``, ``app.edge``, ``app.webhooks``, ``app.assembly``.
"""

"""Serving: the HTTP servers Gatehouse runs under, and what it needs from them.

``uvicorn_server`` holds the uvicorn options, the server that drains on a
shutdown signal and reloads on SIGHUP, and the per-worker app factory.
``app.cli`` picks and starts a server from here.

May import: ``app.config``, ``app.errors``, ``app.wire``, ``app.observability``, ``app.outbound``,
``app.proxy``, ``app.resilience``, ``app.edge``, ``app.webhooks``, ``app.assembly``, ``app.main``.
"""
